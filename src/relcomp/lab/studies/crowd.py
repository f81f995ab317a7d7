"""``relcomp reproduce --profile crowd-quick``: a simulated crowd on MNIST, with and without the
annotator model.

The profile's annotators judge random train pairs (ties left out, as in the paper's ``gt``
sets), each one in turn, and flip a share of their outcomes: e.g. three reliable annotators
(0.05), a spammer (0.5) and an inverted one (0.9). Three arms train the weak model on the same
pairs, per seed: the clean outcomes, the crowd's outcomes as they are, and the crowd's outcomes
with ``--annotator-model flip``. Each is evaluated on the MNIST test split (clean); the results
hold the learned rates beside the true ones, and the calibration of P(A > B) on the test pairs.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TrainConfig
from ...data.mnist import load_mnist
from ...data.sources import MnistSource
from ...errors import ConfigError
from ...plots import plot_bars, plot_reliability
from ...utils import atomic_path, parse_count
from ..common import (
    fmt,
    html_figures,
    md_table,
    mnist_subsets,
    pct,
    provenance_line,
    study_head,
    write_study,
)
from ..harness import Harness

ARMS = {"clean": "clean outcomes", "crowd": "crowd, no annotator model", "modelled": "crowd, --annotator-model flip"}


def crowd_rows(labels: np.ndarray, n: int, annotators: dict[str, float], seed: int) -> list[tuple]:
    """(a, b, true outcome, observed outcome, annotator) for ``n`` random pairs of unequal labels,
    the annotators taking turns."""
    rng = np.random.default_rng(seed)
    names = list(annotators)
    rows: list[tuple] = []
    while len(rows) < n:
        a, b = (int(x) for x in rng.integers(0, len(labels), 2))
        if a == b or labels[a] == labels[b]:
            continue
        name = names[len(rows) % len(names)]
        z = int(labels[a] > labels[b])
        rows.append((a, b, z, 1 - z if rng.random() < annotators[name] else z, name))
    return rows


def write_comparisons(path: Path, rows: list[tuple], observed: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "outcome", "annotator"])
        w.writerows((a, b, zo if observed else z, name) for a, b, z, zo, name in rows)


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "crowd"`` profile; write results.json, report.md, report.html, figures/."""
    t0, out = time.perf_counter(), h.out
    annotators = {str(k): float(v) for k, v in prof["annotators"].items()}
    if not annotators or not all(0 <= e < 1 for e in annotators.values()):
        raise ConfigError(f"profile {prof['name']}: annotators need flip rates in [0, 1)")
    d = prof.get("data", {})
    labels = load_mnist(data_dir).train.labels[: d.get("train_subset")]
    rows = crowd_rows(labels, parse_count(str(prof["pairs"])), annotators, seed=int(prof.get("pair_seed", 0)))
    files = {"clean": out / "pairs" / "clean.csv", "crowd": out / "pairs" / "crowd.csv"}
    for arm, path in files.items():
        if not path.exists():
            write_comparisons(path, rows, observed=arm == "crowd")
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in prof["seeds"]:
        for arm in ARMS:
            cfg = TrainConfig(model="weak", loss=prof.get("loss", "auto"), samples=parse_count(str(prof["samples"])), seed=seed, device=h.device,
                              annotator_model="flip" if arm == "modelled" else "none",
                              eval_every=parse_count(str(prof.get("eval_every", prof["samples"]))),
                              data=MnistSource(pairs=str(files["clean" if arm == "clean" else "crowd"]),
                                               **mnist_subsets(d), data_dir=data_dir))
            runs[arm].append(h.run(cfg, f"{arm}-s{seed}").eval)
    realised = {name: float(np.mean([zo != z for _, _, z, zo, n in rows if n == name])) for name in annotators}
    res = {**study_head("crowd", prof, ("seeds", "pairs", "samples", "annotators"), data=d,
                        loss=TrainConfig(model="weak", loss=prof.get("loss", "auto")).loss),
           "realised_flip_share": realised,
           "cells": {arm: {"test_cls_acc": pct([e["classification_accuracy"] for e in evs]),
                           "test_rel_acc": pct([e["relational_accuracy"] for e in evs]),
                           "ece": pct([e["calibration"]["ece"] for e in evs])} for arm, evs in runs.items()},
           "learned": {name: pct([e["annotators"][name]["flip_rate"] for e in runs["modelled"]]) for name in annotators},
           "flags": {name: [e["annotators"][name]["flag"] for e in runs["modelled"]] for name in annotators},
           "calibration_seed0": {arm: evs[0]["calibration"] for arm, evs in runs.items()},
           "n_runs": len(h.train_times), "train_time_s_total": h.train_time_total,
           "wall_time_s": round(time.perf_counter() - t0, 1)}
    res["figures"] = figures(res, out / "figures")
    return write_study(res, out, "relcomp simulated crowd", markdown, html_figures(res["figures"], out))


def figures(res: dict, fig_dir: Path) -> dict[str, str]:
    """Learned against true rates, and the reliability diagrams of seed 0, drawn from the results."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    true = res["settings"]["annotators"]
    plot_bars({name: {"true flip rate": 100 * true[name], "share flipped in the data": 100 * res["realised_flip_share"][name],
                      "learned (mean over seeds)": res["learned"][name]["mean"]} for name in true},
              fig_dir / "crowd-rates.png", "Annotator flip rates: true and learned (--annotator-model flip)", "%")
    for arm in ("crowd", "modelled"):
        plot_reliability(res["calibration_seed0"][arm], fig_dir / f"crowd-reliability-{arm}.png",
                         title=f"weak model, {ARMS[arm]} (seed {res['settings']['seeds'][0]})")
    return {"crowd-rates.png": "Each annotator's flip rate: the profile's, the share actually flipped in the "
                               "drawn pairs, and the rate the annotator model learned (mean over seeds).",
            "crowd-reliability-crowd.png": "Calibration of P(A > B) on the clean MNIST test pairs: trained on the "
                                           "crowd's outcomes as they are.",
            "crowd-reliability-modelled.png": "The same, with the annotator model."}


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s = res["settings"]
    loss = f"the weak model, `--loss {s['loss']}`; " if s.get("loss") else ""
    intro = (f"{provenance_line(res)}; {loss}{parse_count(str(s['pairs'])):,} random MNIST train pairs (ties left out), each arm "
             f"{parse_count(str(s['samples'])):,} pairs seen; the MNIST test split (10,000 images, 20,000 clean "
             f"pairs). {res['n_runs']} runs, {res['train_time_s_total']:.0f} s of training.")
    acc = md_table(["weak model trained on", "test classification (%)", "test relational (%)", "ECE of P(A > B)"],
                   [[ARMS[a], fmt(c["test_cls_acc"]), fmt(c["test_rel_acc"]),
                     f"{c['ece']['mean'] / 100:.4f}"] for a, c in res["cells"].items()])
    rates = md_table(["annotator", "true rate", "flipped in the data", "learned rate (mean ± std)", "flags"],
                     [[name, f"{e:.2f}", f"{res['realised_flip_share'][name]:.3f}",
                       f"{res['learned'][name]['mean'] / 100:.3f} ± {res['learned'][name]['std'] / 100:.3f}",
                       ", ".join(sorted({f for f in res["flags"][name] if f})) or "—"]
                      for name, e in s["annotators"].items()])
    worst = max(abs(res["learned"][n]["mean"] / 100 - e) for n, e in s["annotators"].items())
    c = res["cells"]
    gap = c["clean"]["test_cls_acc"]["mean"] - c["modelled"]["test_cls_acc"]["mean"]
    drop = c["clean"]["test_cls_acc"]["mean"] - c["crowd"]["test_cls_acc"]["mean"]
    rel_gap = c["clean"]["test_rel_acc"]["mean"] - c["modelled"]["test_rel_acc"]["mean"]
    rel_drop = c["clean"]["test_rel_acc"]["mean"] - c["crowd"]["test_rel_acc"]["mean"]
    notes = [f"- Largest distance between a learned and a true rate: {worst:.3f} (target ±0.07: "
             f"{'met' if worst <= 0.07 else 'missed'}).",
             f"- Classification, clean minus modelled: {gap:+.2f} points (target within 1.5: "
             f"{'met' if abs(gap) <= 1.5 else 'missed'}); clean minus the crowd without the model: {drop:+.2f}.",
             f"- Relational, clean minus modelled: {rel_gap:+.2f} points (target within 1.5: "
             f"{'met' if abs(rel_gap) <= 1.5 else 'missed'}); clean minus the crowd without the model: {rel_drop:+.2f}."]
    figs = [f"![{cap}]({figure_dir}/{name})" for name, cap in res["figures"].items()]
    return "\n".join([intro, "", *acc, "", *rates, "", *notes, "", *figs])
