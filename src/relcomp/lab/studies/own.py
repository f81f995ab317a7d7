"""``relcomp reproduce --profile own-quick``: your own data, as a user brings it.

MNIST train images written as PNG files in a folder, a comparisons CSV of random pairs (``a``,
``b``, ``outcome`` by file name; pairs of equal digits left out, as in the paper's ``gt`` sets) and
a labels CSV for a few of the items, then ``relcomp train weak --images DIR --comparisons F.csv
--labels L.csv`` per seed and per arm (the default budget, and a smaller one with the unlabeled
term off, as the README once reported). Scores: the held-out comparisons (relational accuracy),
the labelled items (classification with zero labels used in training; Spearman's rho and
Kendall's tau of the item scores against the digits).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...config import TrainConfig
from ...data.mnist import load_mnist
from ...data.sources import UserSource
from ...utils import atomic_path, parse_count
from ..common import (
    fmt,
    md_table,
    pct,
    provenance_line,
    study_head,
    write_study,
)
from ..harness import Harness


def write_own_data(root: Path, images: np.ndarray, labels: np.ndarray, n_comparisons: int, n_labelled: int,
                   seed: int) -> dict[str, Path]:
    """The image folder, comparisons CSV and labels CSV of a user (written once; reused)."""
    folder, comps, labs = root / "images", root / "comparisons.csv", root / "labels.csv"
    names = [f"img{k:05d}.png" for k in range(len(images))]
    if not comps.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name, img in zip(names, images):
            Image.fromarray(img).save(folder / name)
        rng = np.random.default_rng(seed)
        rows = []
        while len(rows) < n_comparisons:
            a, b = (int(x) for x in rng.integers(0, len(images), 2))
            if labels[a] != labels[b]:
                rows.append((names[a], names[b], int(labels[a] > labels[b])))
        with atomic_path(labs) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("item", "label"), *((names[k], int(labels[k])) for k in range(n_labelled))])
        with atomic_path(comps) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("a", "b", "outcome"), *rows])
    return {"images": folder, "comparisons": comps, "labels": labs}


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "own"`` profile; write results.json, report.md and report.html into ``out``."""
    t0, out = time.perf_counter(), h.out
    train_split = load_mnist(data_dir).train
    n = int(prof["images"])
    files = write_own_data(out / "data", train_split.images[:n], train_split.labels[:n], parse_count(str(prof["comparisons"])),
                           int(prof["labelled"]), seed=int(prof.get("pair_seed", 0)))
    source = UserSource(images=str(files["images"]), comparisons=str(files["comparisons"]), labels=str(files["labels"]))
    cells = {}
    for arm, settings in prof["arms"].items():
        evs = []
        for seed in prof["seeds"]:
            samples = settings.get("samples")
            cfg = TrainConfig(model="weak", seed=seed, device=h.device, data=source,
                              samples=parse_count(str(samples)) if samples else None,
                              unlabeled=settings.get("unlabeled", "auto"))
            r = h.run(cfg, f"{arm}-s{seed}")
            evs.append(r.eval)
        cells[arm] = {"samples": r.summary["samples"], "test_rel_acc": pct([e["relational_accuracy"] for e in evs]),
                      "cls_acc": pct([e["classification_accuracy"] for e in evs]),
                      "spearman": pct([e["spearman_rho"] for e in evs], scale=1),
                      "kendall": pct([e["kendall_tau"] for e in evs], scale=1)}
    res = {**study_head("own", prof, ("seeds", "images", "comparisons", "labelled", "arms")), "cells": cells,
           "n_runs": len(h.train_times),
           "n_held_out": evs[-1]["n_test_pairs"], "n_labelled_scored": evs[-1]["n_test_images"],
           "train_time_s_total": h.train_time_total, "wall_time_s": round(time.perf_counter() - t0, 1)}
    return write_study(res, out, "relcomp on your own data", markdown)


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s, c = res["settings"], res["cells"]
    intro = (f"{provenance_line(res)}; {s['images']:,} MNIST train images written as PNG files, "
             f"{parse_count(str(s['comparisons'])):,} random comparisons by file name (equal digits left out), "
             f"labels for {s['labelled']} items; `relcomp train weak --images DIR --comparisons F.csv --labels L.csv`. "
             f"Held out by relcomp: {res['n_held_out']:,} comparisons; scored: the {res['n_labelled_scored']} labelled "
             f"items (never used in training). {res['n_runs']} runs, {res['train_time_s_total']:.0f} s of training.")
    rows = [[f"{arm}: {v.get('note', '')}", f"{c[arm]['samples']:,}", fmt(c[arm]["test_rel_acc"]), fmt(c[arm]["cls_acc"]),
             f"{c[arm]['spearman']['mean']:.3f} ± {c[arm]['spearman']['std']:.3f}",
             f"{c[arm]['kendall']['mean']:.3f} ± {c[arm]['kendall']['std']:.3f}"] for arm, v in s["arms"].items()]
    table = md_table(["arm", "pairs seen", "held-out relational (%)", "classes = labels (%)", "Spearman rho",
                      "Kendall tau"], rows)
    return "\n".join([intro, "", *table])


def figures(res: dict, fig_dir) -> dict[str, str]:
    """This study draws no figure."""
    return {}
