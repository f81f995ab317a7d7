"""``relcomp reproduce --profile bt-quick``: relcomp's ranking beside a Bradley-Terry fit by
``choix`` on the same comparisons.

Per seed, random pairs among the first ``compared`` MNIST train images (equal labels left out,
as in the paper's ``gt`` sets) are judged by an oracle from the hidden labels. The first
``items`` train images are the item set, so the images after ``compared`` are never compared.
relcomp trains the weak model on the comparisons (the unlabeled term on the images no pair
touches) and scores every item by its mean P(item > reference); ``choix.ilsr_pairwise`` fits one
Bradley-Terry strength per item id from the same comparisons. Both rankings are scored against
the hidden labels (Kendall's tau-b, Spearman's rho, NDCG): on the compared items, where both can
rank, and on the never-compared ones, which only a model of the images can place.
"""
from __future__ import annotations

import csv
import time
from typing import Any

import numpy as np

from ...config import TrainConfig
from ...data.mnist import load_mnist
from ...data.sources import MnistSource
from ...errors import ConfigError
from ...inference import Predictor
from ...metrics import ranking_metrics
from ...utils import atomic_path, parse_count
from ..common import fmt, md_table, pct, provenance_line, study_head, write_study
from ..harness import Harness

METRICS = ("kendall_tau", "spearman_rho", "ndcg")


def judged_pairs(labels: np.ndarray, compared: int, n: int, seed: int) -> np.ndarray:
    """(n, 2) rows of (winner, loser) among the first ``compared`` items, equal labels skipped."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int]] = []
    while len(rows) < n:
        a, b = (int(x) for x in rng.integers(0, compared, 2))
        if a != b and labels[a] != labels[b]:
            rows.append((a, b) if labels[a] > labels[b] else (b, a))
    return np.array(rows)


def bradley_terry(n_items: int, pairs: np.ndarray) -> np.ndarray:
    """choix's Bradley-Terry strengths (iterative Luce spectral ranking, a little regularised)."""
    try:
        import choix
    except ImportError:
        raise ConfigError("the Bradley-Terry baseline needs choix: pip install 'relcomp[baseline]'") from None
    return choix.ilsr_pairwise(n_items, [tuple(map(int, p)) for p in pairs], alpha=0.01)


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "bt"`` profile; write results.json, report.md and report.html into ``out``."""
    t0, out = time.perf_counter(), h.out
    n_items, compared, n_pairs = int(prof["items"]), int(prof["compared"]), parse_count(str(prof["pairs"]))
    train_split = load_mnist(data_dir).train
    labels, images = train_split.labels[:n_items], train_split.images[:n_items]
    d = prof.get("data", {})
    scores: dict[str, list[dict]] = {"relcomp": [], "relcomp, never compared": [], "choix": []}
    for seed in prof["seeds"]:
        pairs = judged_pairs(labels, compared, n_pairs, seed)
        path = out / "pairs" / f"s{seed}.csv"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([("a", "b", "outcome"), *((int(w), int(v), 1) for w, v in pairs)])
        cfg = TrainConfig(model="weak", loss=prof.get("loss", "auto"), samples=parse_count(str(prof["samples"])), seed=seed, device=h.device,
                          eval_every=parse_count(str(prof["samples"])),
                          data=MnistSource(pairs=str(path), train_subset=n_items, val_subset=d.get("val_subset"),
                                           val_pairs=d.get("val_pairs", 20_000), data_dir=data_dir))
        folder, _ = h.train(cfg, f"weak-s{seed}")
        seen = np.zeros(n_items, bool)
        seen[pairs.ravel()] = True
        p = Predictor(folder, h.device)
        ours, bt = p.scores(p.outputs(images)), bradley_terry(compared, pairs)
        scores["relcomp"].append(ranking_metrics(ours[seen], labels[seen]))
        scores["relcomp, never compared"].append(ranking_metrics(ours[~seen], labels[~seen]))
        scores["choix"].append(ranking_metrics(bt[seen[:compared]], labels[:compared][seen[:compared]]))
    res = {**study_head("bt", prof, ("seeds", "items", "compared", "pairs", "samples"), data=d),
           "cells": {arm: {m: pct([s[m] for s in ss]) for m in METRICS} for arm, ss in scores.items()},
           "n_compared_items": int(seen.sum()), "n_runs": len(h.train_times),
           "train_time_s_total": h.train_time_total, "wall_time_s": round(time.perf_counter() - t0, 1),
           "figures": {}}
    return write_study(res, out, "relcomp against Bradley-Terry", markdown)


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s = res["settings"]
    n_never = s["items"] - res["n_compared_items"]
    intro = (f"{provenance_line(res)} (each its own comparisons); {parse_count(str(s['pairs'])):,} comparisons among the first "
             f"{s['compared']:,} MNIST train images ({res['n_compared_items']:,} of them compared in the last seed), "
             f"{s['items']:,} items in all ({n_never:,} never compared); relcomp: the weak model, "
             f"{parse_count(str(s['samples'])):,} pairs seen. Scores against the hidden digit labels, × 100.")
    rows = [["relcomp (weak model), compared items", *[fmt(res["cells"]["relcomp"][k]) for k in METRICS]],
            ["choix Bradley-Terry (ilsr_pairwise), compared items", *[fmt(res["cells"]["choix"][k]) for k in METRICS]],
            ["relcomp, items never compared", *[fmt(res["cells"]["relcomp, never compared"][k]) for k in METRICS]],
            ["choix, items never compared", "— (no data)", "—", "—"]]
    table = md_table(["ranking", "Kendall tau-b", "Spearman rho", "NDCG"], rows)
    return "\n".join([intro, "", *table])


def figures(res: dict, fig_dir) -> dict[str, str]:
    """This study draws no figure."""
    return {}
