"""``relcomp reproduce --profile ties-quick``: ties in your own comparisons file against MNIST's
own ``ge`` path.

Two arms train the weak model on the three-way ``ge`` relation (A < B, A > B, tie), per seed:

- ``mnist``: ``relcomp train weak --relation ge --pairs N`` (MNIST's pair set, MNIST's val pairs);
- ``user CSV``: the MNIST train images as an ``.npy`` and N / (1 - val fraction) random pairs of
  them, drawn the same way, written as a comparisons file with outcomes ``>``, ``<`` and ``=``,
  trained as a user's data (``--images train.npy --comparisons ge.csv --relation ge``), so that
  both arms train on N pairs.

Both are scored on the same MNIST ``ge`` test pairs (three-way accuracy) and test images.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import TrainConfig, pair_loss
from ...data.mnist import load_mnist
from ...data.pairs import make_pairs
from ...data.sources import MnistSource, UserSource
from ...data.splits import to_tensor
from ...metrics import item_outputs, score_outputs
from ...run import load_run_model
from ...utils import atomic_path, parse_count, resolve_device, resolve_precision
from ..common import fmt, md_table, pct, provenance_line, study_head, write_study
from ..harness import Harness

ARMS = {"mnist": "MNIST ge path (--pairs N --relation ge)", "user": "your comparisons CSV with ties (--images, --comparisons)"}
OUTCOME = {0: "<", 1: ">", 2: "="}


def write_user_files(out: Path, images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[Path, Path]:
    """The train images as ``train.npy`` and ``n`` random ``ge`` pairs of them as ``ge.csv``."""
    npy, path = out / "data" / "train.npy", out / "data" / "ge.csv"
    npy.parent.mkdir(parents=True, exist_ok=True)
    if not npy.exists():
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, images)
    if not path.exists():
        p = make_pairs(labels, n, seed, "ge")
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "outcome"])
            w.writerows((int(a), int(b), OUTCOME[int(z)]) for a, b, z in zip(p.i, p.j, p.z))
    return npy, path


@torch.no_grad()
def mnist_ge_test(folder: Path, device: str, data_dir: str | None) -> dict[str, float]:
    """Three-way accuracy on MNIST's ge test pairs and classification on its test images."""
    dev = resolve_device(device)
    model, cfg = load_run_model(folder, dev)
    test = MnistSource(data_dir=data_dir).test_split("ge")
    _, out = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    m = score_outputs(model, pair_loss(cfg), out, torch.from_numpy(test.labels).to(dev), test.pairs)
    return {"rel_acc": m["rel_acc"], "cls_acc": m["cls_acc"]}


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "ties"`` profile; write results.json, report.md and report.html into ``out``."""
    t0, out = time.perf_counter(), h.out
    n, val_fraction = parse_count(str(prof["pairs"])), float(prof.get("val_fraction", 0.1))
    d = prof.get("data", {})
    mnist = load_mnist(data_dir)
    k = d.get("train_subset") or len(mnist.train.labels)
    npy, comps = write_user_files(out, mnist.train.images[:k], mnist.train.labels[:k],
                                  round(n / (1 - val_fraction)), seed=int(prof.get("pair_seed", 7)))
    sources = {"mnist": MnistSource(pairs=str(n), train_subset=d.get("train_subset"), val_subset=d.get("val_subset"),
                                    val_pairs=d.get("val_pairs", 20_000), data_dir=data_dir),
               "user": UserSource(images=str(npy), comparisons=str(comps), val_fraction=val_fraction)}
    cells: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in prof["seeds"]:
        for arm, source in sources.items():
            cfg = TrainConfig(model="weak", relation="ge", loss=prof.get("loss", "auto"), samples=parse_count(str(prof["samples"])), seed=seed,
                              eval_every=parse_count(str(prof.get("eval_every", prof["samples"]))), device=h.device,
                              data=source)
            folder, _ = h.train(cfg, f"{arm}-s{seed}")
            cells[arm].append(mnist_ge_test(folder, h.device, data_dir))
    res = {**study_head("ties", prof, ("seeds", "pairs", "samples"), val_fraction=val_fraction, data=d),
           "cells": {arm: {"test_rel_acc": pct([c["rel_acc"] for c in cs]), "test_cls_acc": pct([c["cls_acc"] for c in cs])}
                     for arm, cs in cells.items()},
           "n_runs": len(h.train_times), "train_time_s_total": h.train_time_total,
           "wall_time_s": round(time.perf_counter() - t0, 1), "figures": {}}
    return write_study(res, out, "relcomp ties", markdown)


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s, c = res["settings"], res["cells"]
    intro = (f"{provenance_line(res)}; weak model, `--relation ge`, {parse_count(str(s['pairs'])):,} training pairs per arm (about 10% of "
             f"them ties), {parse_count(str(s['samples'])):,} pairs seen; scored on MNIST's 20,000 `ge` test pairs "
             f"(three-way accuracy) and 10,000 test images. {res['n_runs']} runs, {res['train_time_s_total']:.0f} s "
             "of training.")
    table = md_table(["arm", "three-way test accuracy (%)", "test classification (%)"],
                     [[ARMS[a], fmt(x["test_rel_acc"]), fmt(x["test_cls_acc"])] for a, x in c.items()])
    gap = c["mnist"]["test_rel_acc"]["mean"] - c["user"]["test_rel_acc"]["mean"]
    verdict = (f"- MNIST path minus your CSV: {gap:+.2f} points of three-way accuracy (target within 1: "
               f"{'met' if abs(gap) <= 1 else 'missed'}).")
    return "\n".join([intro, "", *table, "", verdict])


def figures(res: dict, fig_dir) -> dict[str, str]:
    """This study draws no figure."""
    return {}
