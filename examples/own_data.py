"""Train on your own images and comparisons, then use the model (README: "Your own data").
Usage: python examples/own_data.py IMAGES COMPARISONS.csv LABELS.csv RUN_DIR"""
import sys

import relcomp

images, comparisons, labels, run = sys.argv[1:5]
data = relcomp.UserSource(images=images, comparisons=comparisons, labels=labels)
cfg = relcomp.TrainConfig(model="weak", num_classes=10, samples=20_000, data=data)
relcomp.train(cfg, run)                                   # validates the files first
print(relcomp.evaluate_run(run))                          # held-out comparisons, labelled items
print(relcomp.predict(run, [images])[:3])                 # class + probabilities per image
print(relcomp.rank(run, images)["csv"])                   # ranking.csv + ranking.png
print(relcomp.export_run(run, "onnx"))                    # runs without relcomp
