"""``relcomp reproduce --profile loss-quick``: the weak model's losses, studied rather than assumed.

Pairs with equal labels are never shown (``gt``), so what an unequal pair says of the tie mass
P(A = B) is a modelling choice. Each loss of :data:`relcomp.losses.LOSSES` trains the weak model
on the same MNIST pairs, per seed: ``unconditional`` (a tie counts as "not greater"),
``conditional`` (ties left out of the likelihood), ``symmetric`` (tie mass wrong both ways) and the
paper's ``paper-code`` bug. The loss with the best mean *val* classification accuracy is the one
chosen (relcomp's default); test numbers are reported beside it. The mean tie mass P(A = B) the
model gives the test pairs (all of them unequal) shows how far its classes merged.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...config import TrainConfig
from ...data.sources import MnistSource
from ...data.splits import to_tensor
from ...losses import log_prob_relations
from ...metrics import item_outputs
from ...plots import plot_bars
from ...run import load_run_model, read_metrics
from ...utils import parse_count, resolve_device, resolve_precision
from ..common import (
    fmt,
    md_table,
    mnist_subsets,
    pct,
    provenance_line,
    study_head,
    write_study,
)
from ..harness import Harness


@torch.no_grad()
def tie_mass(folder: Path, device: str) -> float:
    """Mean P(A = B) = sum_i p_A[i] p_B[i] over the run's test pairs (every one of unequal labels)."""
    dev = resolve_device(device)
    model, cfg = load_run_model(folder, dev)
    test = cfg.data.test_split(cfg.relation)
    _, out = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    logp = out.float().log_softmax(-1)
    i, j = torch.from_numpy(test.pairs.i).long(), torch.from_numpy(test.pairs.j).long()
    return float(log_prob_relations(logp[i], logp[j])[:, 2].exp().mean())


def best_val(folder: Path, summary: dict) -> dict[str, float]:
    """The val metrics of the checkpoint that was kept (the best val relational accuracy)."""
    rows = [r for r in read_metrics(folder) if r.get("samples") == summary["best_samples"]
            and "val_rel_acc" in r]
    return {"val_rel_acc": rows[-1]["val_rel_acc"], "val_cls_acc": rows[-1]["val_cls_acc"]}


def one_run(prof: dict, loss: str, seed: int, h: Harness, data_dir: str | None) -> dict:
    d = prof.get("data", {})
    cfg = TrainConfig(model="weak", loss=loss, samples=parse_count(str(prof["samples"])), seed=seed, device=h.device,
                      unlabeled=prof.get("unlabeled", "off"),
                      eval_every=parse_count(str(prof.get("eval_every", prof["samples"]))),
                      data=MnistSource(pairs=str(prof["pairs"]), **mnist_subsets(d), data_dir=data_dir))
    r = h.run(cfg, f"{loss}-s{seed}")
    return {**best_val(r.folder, r.summary), "test_rel_acc": r.eval["relational_accuracy"],
            "test_cls_acc": r.eval["classification_accuracy"], "tie_mass": tie_mass(r.folder, h.device),
            "train_time_s": r.summary["train_time_s"]}


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "loss"`` profile; write results.json, report.md, report.html and figures/."""
    t0, out = time.perf_counter(), h.out
    losses = list(prof.get("losses", ["unconditional", "conditional", "symmetric", "paper-code"]))
    runs = {loss: [one_run(prof, loss, seed, h, data_dir) for seed in prof["seeds"]]
            for loss in losses}
    keys = ("val_cls_acc", "val_rel_acc", "test_cls_acc", "test_rel_acc", "tie_mass")
    cells = {loss: {k: pct([r[k] for r in rs]) for k in keys} for loss, rs in runs.items()}
    chosen = max(losses, key=lambda loss: cells[loss]["val_cls_acc"]["mean"])
    res = {**study_head("loss", prof, ("seeds", "pairs", "samples"), unlabeled=prof.get("unlabeled", "off"),
                        losses=losses, data=prof.get("data", {})), "cells": cells, "chosen_on_val": chosen,
           "n_runs": sum(map(len, runs.values())),
           "train_time_s_total": round(sum(r["train_time_s"] for rs in runs.values() for r in rs), 1),
           "wall_time_s": round(time.perf_counter() - t0, 1)}
    res["figures"] = figures(res, out / "figures")
    return write_study(res, out, "relcomp weak-loss study", markdown)


def figures(res: dict, fig_dir: Path) -> dict[str, str]:
    """Test classification and relational accuracy of each loss, drawn from the results."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    name = f"{res['profile']}-losses.png"
    plot_bars({loss: {"test classification": c["test_cls_acc"]["mean"], "test relational": c["test_rel_acc"]["mean"]}
               for loss, c in ((loss, res["cells"][loss]) for loss in res["settings"]["losses"])}, fig_dir / name,
              "Weak model, zero labels: test accuracy by loss (mean over seeds)", "accuracy (%)")
    return {name: "Test classification and relational accuracy of the weak model for each loss (mean over seeds)."}


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s, c = res["settings"], res["cells"]
    intro = (f"{provenance_line(res)}; the weak model on {parse_count(str(s['pairs'])):,} MNIST train pairs (`gt`), "
             f"{parse_count(str(s['samples'])):,} pairs seen, unlabeled images {s['unlabeled']}, zero labels. "
             f"Val: {s['data'].get('val_subset') or 10_000:,} MNIST val images and {s['data'].get('val_pairs') or 20_000:,} "
             f"val pairs; test: the 10,000 test images and 20,000 test pairs. {res['n_runs']} runs, "
             f"{res['train_time_s_total']:.0f} s of training.")
    table = md_table(["loss", "val classification (%)", "test classification (%)", "test relational (%)",
                      "mean P(A = B) on test pairs"],
                     [[f"**{loss}**" if loss == res["chosen_on_val"] else loss, fmt(x["val_cls_acc"]),
                       fmt(x["test_cls_acc"]), fmt(x["test_rel_acc"]),
                       f"{x['tie_mass']['mean'] / 100:.3f} ± {x['tie_mass']['std'] / 100:.3f}"]
                      for loss, x in ((loss, c[loss]) for loss in s["losses"])])
    figs = [f"![{cap}]({figure_dir}/{name})" for name, cap in res["figures"].items()]
    return "\n".join([intro, "", *table, "", f"Chosen on val (best mean val classification): "
                      f"**{res['chosen_on_val']}**.", "", *figs])
