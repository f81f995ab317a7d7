"""The commands that use a trained run: ``eval``, ``fewshot``, ``predict``, ``compare``, ``rank``,
``export``, ``suggest`` and ``embed``."""
from __future__ import annotations

import json

from ..embedding import write_embeddings
from ..errors import ConfigError
from ..evaluate import evaluate_run, write_evaluation
from ..export import FORMATS, description_path, export_run, max_difference
from ..fewshot import METHODS, fewshot_eval, write_fewshot
from ..inference import compare_interval, predict, rank
from ..run import run_files
from ..suggest import STRATEGIES, suggest
from .common import (
    add_data_dir,
    add_device,
    count_arg,
    int_list,
)
from .parser import subcommand
from .train import print_eval


def add_fewshot_parser(sub) -> None:
    fs = subcommand(sub, "fewshot", None,
              "Classify with k labelled train images per class, drawn at random --draws times; print mean, std, min, "
              "max of the test accuracy over draws. The paper's method (--method linear) freezes the backbone and "
              "trains a fresh Linear(128, K) head; see --method for the alternatives.")
    fs.add_argument("run_dir", metavar="RUN_DIR")
    fs.add_argument("--shots", type=int_list(0), default=[1, 3],
                    help="comma-separated k values (0 allowed with --method cutpoints: no labels, known K)")
    fs.add_argument("--method", choices=METHODS, default=None,
                    help="linear: a Linear(128, K) head on the frozen backbone (the paper; the default). names: no "
                    "head, the model's own classes named by the shots, one to one (a weak run on --unlabeled clusters "
                    "with few or no comparisons: 1 label per class names its groups). anchors: no "
                    "head, compare each image with k labelled anchors per class through the relation head. cutpoints "
                    "(the ranker's default): K-1 thresholds on the score; k = 0 by 1-D k-means or equal quantiles")
    fs.add_argument("--draws", type=int, default=10, help="random draws of the k images per class")
    fs.add_argument("--seed", type=int, default=0, help="seed of the draws")
    add_device(fs)
    fs.add_argument("--json", action="store_true", help="print one JSON object")
    fs.add_argument("--labels", default=None, help="runs on your own data: an item,label file (default: the run's "
                    "--labels); the shots are drawn from it and each draw is tested on the other labelled items")


def add_eval_parser(sub) -> None:
    ev = subcommand(sub, "eval", None,
              "Evaluate a run's best checkpoint on its test split (MNIST: 20k test pairs and 10k test images; your "
              "own data: the held-out comparisons and labelled items); writes eval.json and confusion.png into the "
              "run folder.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--labels", default=None, metavar="FILE",
                    help="runs on your own data: a CSV/Parquet (item, label) of some items, to report classification "
                         "accuracy, the confusion matrix and Spearman against (default: the run's own --labels, if "
                         "any). Labels are never trained on; an item that was also compared was seen through its "
                         "comparisons")
    add_device(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object")


def add_use_parsers(sub) -> None:
    pr = subcommand(sub, "predict", None,
              "Print the predicted class and the class probabilities of each image, converted to the run's image "
              "size and channels. IMAGES are image files, folders or .npy arrays; for a run trained on --features, "
              "features files (every item is predicted).")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", metavar="IMAGES")
    pr.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_device(pr)
    cp = subcommand(sub, "compare", None,
              "Print the model's probability that image A's label is greater than image B's, and a --level interval "
              "of it from --samples MC-dropout draws: the model's dropout layers stay on, so each draw is the "
              "prediction of a slightly different network, and the spread says how much the trained weights pin "
              "this pair down. Models without dropout (the MLP on --features) get no interval.")
    cp.add_argument("run_dir", metavar="RUN_DIR")
    cp.add_argument("a", metavar="A")
    cp.add_argument("b", metavar="B")
    cp.add_argument("--features", default=None, help="runs trained on features: A and B are item names in this file")
    cp.add_argument("--samples", type=int, default=100, help="MC-dropout draws for the interval (0: none)")
    cp.add_argument("--level", type=float, default=0.9, help="coverage of the interval")
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    add_device(cp)
    rk = subcommand(sub, "rank", None,
              "Score every image of FOLDER (a ranker: its own score; other models: the mean P(image > reference) over "
              "up to --references images of the folder, a Borda count) and write ranking.csv (greatest first) and "
              "ranking.png (a contact sheet in rank order). For a run trained on --features, FOLDER is a features "
              "file (no contact sheet).")
    rk.add_argument("run_dir", metavar="RUN_DIR")
    rk.add_argument("folder", metavar="FOLDER")
    rk.add_argument("--out", default=None, help="output folder (default: RUN_DIR/rank-<folder name>)")
    rk.add_argument("--references", type=int, default=512, help="reference images for the score (sampled by --seed)")
    rk.add_argument("--seed", type=int, default=0, help="seed of the reference sample")
    rk.add_argument("--top", type=int, default=10, help="lines of the ranking to print at each end")
    rk.add_argument("--sheet-max", type=int, default=256, metavar="N",
                    help="images on the contact sheet; with more items, N evenly spaced in rank (captions keep the "
                         "true ranks; ranking.csv has every item)")
    rk.add_argument("--labels", default=None, help="CSV/Parquet (item, label) of some ranked items: report Spearman "
                    "rho, Kendall tau and NDCG of the ranking against them")
    add_device(rk)
    ex = subcommand(sub, "export", None,
              "Write the run's best model so it can be used without relcomp, and check that the exported model's "
              "outputs match the PyTorch model's. weak/supervised: x -> class logits (B, K); siamese: (a, b) -> "
              "logit of P(A > B); ranker: x -> score (B,). Inputs: float32 (B, C, H, W) in [0, 1].")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", choices=list(FORMATS), default="onnx", help="file format")
    ex.add_argument("--out", default=None, help="output file (default: RUN_DIR/export/model.<ext>)")


def add_suggest_parser(sub) -> None:
    p = subcommand(sub, "suggest", None,
             "Score --candidates random pairs of the run's items that nobody judged yet (never an item with itself, "
             "never a pair already judged, in either order) with one pass of the run's model, and write the best --n "
             "as a CSV (a, b, score) named as the run's comparisons name items: file names, .npy row indices, or MNIST "
             "train-split indices. Judge them (add an outcome column), append them to the comparisons file, and train "
             "again, e.g. with --init-from RUN_DIR.\n\nStrategies:\n"
             "  auto         (default) clusters for a model that names classes (weak); otherwise random before 500 "
             "judged comparisons, then uncertainty\n"
             "  clusters     check the order of the model's classes with sure members of each (their nearest neighbours "
             "in the images share their class), every pair of "
             "classes until more answers agree with the order than contradict it (by 3 for classes adjacent in it, "
             "2 for two apart, 1 for the rest), 71 questions for 10 classes from nothing; then boundary. The loop for few comparisons: train weak --unlabeled "
             "clusters, suggest, judge, train again\n"
             "  uncertainty  the pairs whose order the model is least sure of (a weak model's likely ties score low; a "
             "ranker's or Siamese model's closest pairs are often ties: train those with --relation ge)\n"
             "  boundary     uncertain pairs in adjacent classes (or neighbours in a ranker's order)\n"
             "  random       uniform: the baseline")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=int, required=True, help="pairs to suggest")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto", help="how to choose")
    p.add_argument("--candidates", type=count_arg, default=None, help="random unjudged pairs to score (default: 20 x N, "
                   "at least 50k)")
    p.add_argument("--max-per-item", type=int, default=2, help="no item in more than this many suggested pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidates")
    p.add_argument("--out", default=None, help="output CSV (default: RUN_DIR/suggested.csv)")
    add_device(p)


def add_embed_parser(sub) -> None:
    p = subcommand(sub, "embed", None,
             "Embed every image of --images (default: MNIST's 70,000, in the order train, val, test, named "
             "train/<i>, val/<i>, test/<i>) and write the vectors to --out: .npy (rows), .npz (names, vectors) or "
             ".parquet (item, vector). --with pixels: the raw pixels in [0, 1]; a run folder: its backbone's 128-d "
             "embedding; hf:ID or hf:FOLDER: a frozen Hugging Face vision model (cached).")
    p.add_argument("--with", dest="embedder", required=True, metavar="EMBEDDER", help="pixels, RUN_DIR or hf:MODEL")
    p.add_argument("--images", default=None, help="a folder or .npy of images (default: MNIST)")
    p.add_argument("--out", required=True, help="output file (.npy, .npz or .parquet)")
    add_data_dir(p)
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_eval(args) -> int:
    r = evaluate_run(args.run_dir, device=args.device, labels=args.labels)
    write_evaluation(args.run_dir, r)
    if args.json:
        print(json.dumps(r))
    else:
        print_eval(r)
        print(f"wrote {run_files(args.run_dir).eval}")
    return 0


def cmd_fewshot(args) -> int:
    r = fewshot_eval(args.run_dir, shots=args.shots, draws=args.draws, seed=args.seed, device=args.device,
                     labels=args.labels, method=args.method)
    write_fewshot(args.run_dir, r)
    if args.json:
        print(json.dumps({**r, "shots": {k: {kk: vv for kk, vv in v.items() if kk != "confusion_matrix"}
                                         for k, v in r["shots"].items()}}))
        return 0
    print(f"few-shot test accuracy of the {r['model']} model of {args.run_dir} ({r['method']}), {r['draws']} draws:")
    for s in r["shots"].values():
        label = f"{s['k']}-shot" + (f" ({s['fit']})" if s["fit"] else "")
        print(f"  {label}: mean {s['mean']:.4f}  std {s['std']:.4f}  min {s['min']:.4f}  max {s['max']:.4f}")
    return 0


def cmd_predict(args) -> int:
    for r in predict(args.run_dir, args.images, device=args.device):
        if args.json:
            print(json.dumps(r))
        else:
            probs = " ".join(f"{p:.3f}" for p in r["probabilities"])
            print(f"{r['item']}\tclass {r['class']}\tp(class) {r['probabilities'][r['class']]:.3f}\t[{probs}]")
    return 0


def cmd_compare(args) -> int:
    if args.samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {args.samples}")
    r = compare_interval(args.run_dir, args.a, args.b, device=args.device, features=args.features,
                         samples=args.samples, level=args.level)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, **r}))
        return 0
    if r["interval"]:
        lo, hi = r["interval"]
        note = f"  ({r['level']:.0%} interval {lo:.4f} to {hi:.4f}, {r['samples']} MC-dropout draws)"
    else:
        note = "" if not args.samples else "  (no interval: this model has no dropout)"
    print(f"P({args.a} > {args.b}) = {r['p']:.4f}{note}")
    return 0


def cmd_rank(args) -> int:
    r = rank(args.run_dir, args.folder, out=args.out, references=args.references, seed=args.seed, device=args.device,
             labels=args.labels, sheet_max=args.sheet_max)
    ranking = list(enumerate(r["ranking"], 1))
    if len(ranking) > 2 * args.top:
        ranking = ranking[:args.top] + [(None, None)] + ranking[-args.top:]
    for k, item in ranking:
        print("     ..." if k is None else f"{k:>8}  {item[1]:.4f}  {item[0]}")
    sheet = ""
    if r["png"]:
        part = f" ({r['sheet_items']:,} of them, evenly spaced in rank; --sheet-max)" if r["sheet_items"] < r["n"] else ""
        sheet = f", contact sheet {r['png']}{part}"
    print(f"ranked {r['n']:,} items: {r['csv']}{sheet}")
    if r["metrics"]:
        m = r["metrics"]
        print(f"against {m['n_labelled']:,} labelled items: Spearman rho {m['spearman_rho']:.4f}, Kendall tau "
              f"{m['kendall_tau']:.4f}, NDCG {m['ndcg']:.4f} (@100: {m['ndcg@100']:.4f})")
    return 0


def cmd_export(args) -> int:
    path = export_run(args.run_dir, args.format, args.out)
    diff = max_difference(args.run_dir, path, args.format)
    check = "not checked (onnxruntime not installed)" if diff is None else f"max |difference| vs PyTorch {diff:.2e}"
    print(f"exported {path} ({args.format}); inputs and outputs described in {description_path(path)}; {check}")
    return 0


def cmd_suggest(args) -> int:
    r = suggest(args.run_dir, args.n, args.strategy, args.candidates, args.out, args.seed, args.max_per_item,
                args.device)
    how = r["strategy"] + (f": {r['order_questions']:,} on the order of the classes" if r["strategy"] == "clusters" else "")
    print(f"wrote {r['n']:,} pairs to judge ({how}; {r['items']:,} items) to {r['csv']}")
    return 0


def cmd_embed(args) -> int:
    r = write_embeddings(args.embedder, args.out, args.images, args.data_dir, args.device, not args.quiet)
    print(f"wrote {r['items']:,} vectors of D = {r['dim']} to {r['out']} ({r['seconds']:.1f}s, "
          f"{r['items_per_s']:.1f} items/s)")
    return 0
