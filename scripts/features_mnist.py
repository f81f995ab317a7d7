"""The --features study on MNIST (issue #16): the weak model's head on precomputed features
against the weak CNN on the same pairs, 3 seeds each; writes docs/results/features-mnist.json.

    python scripts/features_mnist.py [--out runs/features-mnist] [--seeds 0,1,2]

Features: the raw 784 pixels (`relcomp embed --with pixels`), and the 128-d embeddings of a
Siamese CNN trained on the same 50k pairs (seed 0; `relcomp embed --with RUN`). Every run sees 150k
pairs of the 50k train pair set (pair seed 42). Finished runs in --out are reused.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from relcomp import TrainConfig
from relcomp.data.sources import MnistSource
from relcomp.embedding import write_embeddings
from relcomp.engine import train
from relcomp.evaluate import evaluate_run, write_evaluation
from relcomp.lab.common import machine_info
from relcomp.run import run_files
from relcomp.utils import resolve_precision, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def run(cfg: TrainConfig, out: Path) -> dict:
    files = run_files(out)
    if not files.eval.exists():
        summary = train(cfg, out, resume=files.config.exists())
        write_evaluation(out, evaluate_run(out))
        (out / "train_time.json").write_text(json.dumps({"train_time_s": summary["train_time_s"]}))
    ev = json.loads(files.eval.read_text())
    t = json.loads((out / "train_time.json").read_text())["train_time_s"]
    return {"cls": ev["classification_accuracy"], "rel": ev["relational_accuracy"], "train_time_s": t}


def cell(rows: list[dict]) -> dict:
    out = {}
    for k in ("cls", "rel", "train_time_s"):
        vals = [r[k] for r in rows]
        out[k] = {"values": vals, "mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/features-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results" / "features-mnist.json"))
    args = ap.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    base = {"samples": 150_000, "progress": False}
    siamese = out / "siamese-cnn-s0"
    siamese_run = run(TrainConfig(model="siamese", seed=0, **base, data=MnistSource(pairs="50k")), siamese)
    features = {"pixels": out / "pixels.npy", "siamese-embeddings": out / "siamese-s0.npy"}
    cost_file = out / "embedding_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
    for name, embedder in (("pixels", "pixels"), ("siamese-embeddings", str(siamese))):
        if not features[name].exists() or name not in cost:
            cost[name] = write_embeddings(embedder, features[name])
    write_json_atomic(cost_file, cost)
    arms = {"weak CNN (images)": lambda s: TrainConfig(model="weak", seed=s, **base, data=MnistSource(pairs="50k"))}
    for name, path in features.items():
        arms[f"weak MLP on {name}"] = (lambda p: lambda s: TrainConfig(
            model="weak", seed=s, **base, data=MnistSource(pairs="50k", features=str(p))))(path.resolve())
    results = {}
    for arm, make in arms.items():
        slug = arm.replace(" ", "-").replace("(", "").replace(")", "")
        results[arm] = cell([run(make(s), out / f"{slug}-s{s}") for s in seeds])
        print(f"{arm:<34} cls {results[arm]['cls']['mean']:.4f} ± {results[arm]['cls']['std']:.4f}  "
              f"rel {results[arm]['rel']['mean']:.4f}  values {results[arm]['cls']['values']}", flush=True)
    write_json_atomic(Path(args.results), {
        "study": "features-mnist", "command": "python scripts/features_mnist.py", "seeds": seeds,
        "budget": "50k train pairs (pair seed 42), 150k pairs seen per run, defaults otherwise",
        "split": "MNIST test: 10,000 images (classification), 20,000 pairs (relational)",
        "machine": {**machine_info(), "precision": resolve_precision("auto", torch.device("cpu"))},
        "date": time.strftime("%Y-%m-%d"),
        "siamese_run_for_features": {"seed": 0, "rel": siamese_run["rel"], "train_time_s": siamese_run["train_time_s"]},
        "embedding_cost": {k: {kk: v[kk] for kk in ("items", "dim", "seconds", "items_per_s")} for k, v in cost.items()},
        "arms": results})


if __name__ == "__main__":
    main()
