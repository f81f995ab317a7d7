"""``relcomp reproduce``: rerun the paper's whole study and report it beside the paper's numbers.

Plan: one supervised run, one Siamese run per pair-set size, and two weak runs per size (the
paper's original ``paper-code`` loss and relcomp's default, ``symmetric``), each with every seed asked for. Each
run lives in its own folder named by a hash of its config, so a rerun reuses finished runs and
continues interrupted ones. Then: test evaluation, few-shot transfer of the Siamese backbones,
the ordinal analysis of the embeddings, and the tables, figures and report.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...analysis import pc1_ordering, stratified_subsample, tsne_2d
from ...config import TrainConfig, resolve
from ...data.mnist import load_mnist
from ...data.sources import MnistSource
from ...errors import ConfigError
from ...evaluate import test_embeddings
from ...plots import plot_bars, plot_embeddings, plot_relational_curves
from ...run import read_metrics, run_files
from ...utils import parse_count, write_json_atomic, write_text_atomic
from ..common import (
    log,
    machine_info,
    mnist_subsets,
    pct,
    provenance,
)
from ..harness import Harness
from .paper_report import (
    PAPER,
    PAPER_RHO_RUN,
    PAPER_SIZES,
    classification_groups,
    figures,
    markdown,
    render_html,
    render_markdown,
    size_label,
)

# The study's contract: run (here), markdown and figures (rendered in paper_report).
__all__ = ["PAPER", "PAPER_SIZES", "figures", "markdown", "plan", "prepare_profile", "run"]

FEWSHOT_STEPS, FEWSHOT_LR = 300, 1e-3

# ---------------------------------------------------------------------------------------------
# The plan

@dataclass
class RunSpec:
    key: str          # e.g. "weak-500k-unconditional"
    group: str        # supervised | siamese | weak
    size: str | None  # pair-set size
    loss: str
    seed: int
    cfg: TrainConfig


def plan(prof: dict[str, Any], seeds: list[int], device: str = "auto", data_dir: str | None = None) -> list[RunSpec]:
    d = prof["data"]

    def source(pairs: str = "50k") -> MnistSource:
        return MnistSource(pairs=pairs, **mnist_subsets(d), data_dir=data_dir)

    rel = prof["relational"]
    specs = []
    for seed in seeds:
        specs.append(RunSpec("supervised", "supervised", None, "unconditional", seed,
                             TrainConfig(model="supervised", epochs=prof["supervised"]["epochs"], seed=seed,
                                         eval_every=prof["supervised"].get("eval_every"), device=device,
                                         data=source())))
        for size in rel["sizes"]:
            # The paper's counterparts learn from the pairs alone: no unlabeled images.
            relational = dict(samples=parse_count(rel["samples"]), eval_every=rel.get("eval_every"), seed=seed,
                              device=device, data=source(size), unlabeled="off")
            specs.append(RunSpec(f"siamese-{size}", "siamese", size, "unconditional", seed,
                                 TrainConfig(model="siamese", **relational)))
            for loss in prof["weak"]["losses"]:
                specs.append(RunSpec(f"weak-{size}-{loss}", "weak", size, loss, seed,
                                     TrainConfig(model="weak", loss=loss, **relational)))
    return specs


# ---------------------------------------------------------------------------------------------
# Running

def _cell(values: list[float], paper: float | None = None) -> dict[str, Any]:
    """A table cell in percent with the paper's number (None where the paper has no such row)."""
    return {**pct(values), "paper": paper}


def prepare_profile(prof: dict[str, Any]) -> None:
    """Check the paper profile's keys and fill its defaults.

    Raises:
        ConfigError: a key the study needs is missing.
    """
    for section, key in (("supervised", "epochs"), ("relational", "sizes"), ("relational", "samples"),
                         ("fewshot", "shots"), ("fewshot", "draws")):
        if key not in prof.get(section, {}):
            raise ConfigError(f"profile {prof['name']}: missing [{section}] {key}")
    prof.setdefault("weak", {}).setdefault("losses", ["paper-code", "symmetric"])
    prof.setdefault("analysis", {}).setdefault("tsne_points", 2000)
    prof.setdefault("data", {})


def run(prof: dict[str, Any], h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run the paper's study of profile ``prof`` (seeds 0 .. n-1 of its ``seeds``, default [0]) into
    the harness's folder; return the content of ``results.json``."""
    t_start, out = time.perf_counter(), h.out
    seeds = len(prof.get("seeds") or [0])
    out.mkdir(parents=True, exist_ok=True)
    specs = plan(prof, list(range(seeds)), h.device, data_dir)
    shots = list(prof["fewshot"]["shots"])
    log(f"profile {prof['name']}: {len(specs)} training runs into {out}")
    h.prefetch([(spec.cfg, f"{spec.key}-s{spec.seed}") for spec in specs])
    runs = train_in_turn(specs, h, prof)
    log("ordinal analysis (PC1, Spearman rho) and t-SNE of the test embeddings")
    ordinal, panels = ordinal_analysis(prof, specs, runs, h.device, data_dir)
    sizes = prof["relational"]["sizes"]
    results = _tables(prof, runs, seeds, shots)
    results.update({
        "kind": "paper", "profile": prof["name"], "description": prof.get("description", ""), **provenance(prof),
        "budgets": {"supervised_epochs": prof["supervised"]["epochs"],
                    "relational_samples": parse_count(prof["relational"]["samples"]), "sizes": sizes,
                    "fewshot_shots": shots, "fewshot_draws": int(prof["fewshot"]["draws"]), "data": prof["data"],
                    "weak_losses": list(prof["weak"]["losses"])},
        "seeds": list(range(seeds)), "ordinal": ordinal, "runs": runs, "machine": machine_info(), "jobs": h.jobs,
        # Training time of every run, whether trained now or earlier and reused from the cache.
        "train_time_s_total": round(sum(r["train"]["train_time_s"] for r in runs.values()), 1),
    })
    results["figures"] = _figures(out, results, runs, panels, prof)
    results["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "report.md", render_markdown(results))
    write_text_atomic(out / "report.html", render_html(results, out))
    return results


def train_in_turn(specs: list[RunSpec], h: Harness, prof: dict) -> dict[str, dict]:
    """Every run in turn (trained, or reused); with one job, the training time left after each, at
    the speed of the runs so far (their recorded training time: a reused run's too, so an estimate
    that errs long where later runs are reused as well)."""
    runs: dict[str, dict] = {}
    units = seconds = 0.0  # images through a backbone, and the training seconds they took
    n_train = prof["data"].get("train_subset") or 50_000
    for k, spec in enumerate(specs, 1):
        runs[f"{spec.key}/s{spec.seed}"] = rec = train_and_evaluate(spec, h, prof)
        units += images_seen(spec, rec["train"]["samples"])
        seconds += rec["train"]["train_time_s"]
        if h.jobs == 1 and k < len(specs) and units > 0:  # with more jobs every run is trained already
            left = sum(images_seen(s, resolve(s.cfg).budget(n_train)) for s in specs[k:]) * seconds / units
            log(f"{k} of {len(specs)} runs done; about {left / 60:.0f} min of training left at the speed so far")
    return runs


def images_seen(spec: RunSpec, samples: int) -> int:
    """Images through the backbone for ``samples`` samples: two for a pair, one for an image."""
    return samples * (1 if spec.group == "supervised" else 2)


def train_and_evaluate(spec: RunSpec, h: Harness, prof: dict) -> dict[str, Any]:
    """Train one run (or reuse it), evaluate it on the test split, and few-shot a Siamese backbone."""
    shots, draws = list(prof["fewshot"]["shots"]), int(prof["fewshot"]["draws"])
    r = h.run(spec.cfg, f"{spec.key}-s{spec.seed}")
    rec = {"key": spec.key, "group": spec.group, "size": spec.size, "loss": spec.loss, "seed": spec.seed,
           "folder": str(r.folder), "train": r.summary, "eval": {k: v for k, v in r.eval.items() if k != "run_dir"}}
    if spec.group == "siamese":
        rec["fewshot"] = h.fewshot(r.folder, shots, draws, spec.seed, steps=FEWSHOT_STEPS, lr=FEWSHOT_LR,
                                   check=lambda d: sorted(d["shots"]) == sorted(map(str, shots))
                                   and (d.get("steps"), d.get("lr")) == (FEWSHOT_STEPS, FEWSHOT_LR))
    return rec


def ordinal_analysis(prof: dict, specs: list[RunSpec], runs: dict, device: str,
                     data_dir: str | None) -> tuple[dict, list[dict]]:
    """PC1 / Spearman rho of the test embeddings of every model and seed (mean ± std over seeds,
    the ordering of seed 0); t-SNE panels of a few seed-0 models. The paper's rho and ordering sit
    only beside the models the paper measured them on."""
    sizes = prof["relational"]["sizes"]
    tsne_keys = ["supervised", f"siamese-{sizes[-1]}"] + [f"weak-{sizes[-1]}-{loss}"
                                                          for loss in reversed(prof["weak"]["losses"])]
    test_labels = load_mnist(data_dir).test.labels[: prof["data"].get("test_subset")]
    sub = stratified_subsample(test_labels, int(prof["analysis"]["tsne_points"]), seed=0)
    ordinal, panels = {}, []
    for key in dict.fromkeys(s.key for s in specs):
        rhos, first = [], None
        for spec in (s for s in specs if s.key == key):
            rec = runs[f"{key}/s{spec.seed}"]
            outs = test_embeddings(rec["folder"], device=device)
            o = pc1_ordering(outs["embeddings"], outs["labels"])
            rhos.append(o["rho"])
            if first is None:
                first = o
                if key in tsne_keys:
                    panels.append({"key": key, "title": _pretty(rec), "tsne": tsne_2d(outs["embeddings"][sub]),
                                   "labels": outs["labels"][sub], "pc1": o["projection"],
                                   "pc1_labels": outs["labels"], "rho": o["rho"], "ordering": o["ordering"]})
        paper_key = PAPER_RHO_RUN.get(key)
        ordinal[key] = {"rho": pct(rhos, scale=1), "ordering": first["ordering"],
                        "paper_rho": PAPER["rho"][paper_key] if paper_key else None,
                        "paper_ordering": PAPER["ordering"].get(paper_key) if paper_key else None}
    panels.sort(key=lambda p: tsne_keys.index(p["key"]))
    return ordinal, panels


def _pretty(rec: dict) -> str:
    if rec["group"] == "supervised":
        return "Supervised"
    if rec["group"] == "siamese":
        return f"Siamese ({rec['size']})"
    return f"Weak ({rec['size']}, {rec['loss']} loss)"


# ---------------------------------------------------------------------------------------------
# Tables


def _tables(prof: dict, runs: dict, seeds: int, shots: list[int]) -> dict[str, Any]:
    sizes = prof["relational"]["sizes"]
    losses = prof["weak"]["losses"]
    seen = parse_count(prof["relational"]["samples"])

    def collect(key: str, get) -> list[float]:
        return [get(runs[f"{key}/s{s}"]) for s in range(seeds) if f"{key}/s{s}" in runs]

    def paper_at(values: list[float], size: str) -> float | None:
        return values[PAPER_SIZES.index(size)] if size in PAPER_SIZES and values else None

    t1, t2, t3 = [], [], []
    for size in sizes:
        t1.append({"row": f"Siamese ({size_label(size, seen)})", "size": size, "paper_size": (size if size in PAPER_SIZES else None),
                   "relcomp": _cell(collect(f"siamese-{size}", lambda r: r["eval"]["relational_accuracy"]),
                                    paper_at(PAPER["siamese_rel"], size))})
        row = {"row": f"Weak ({size_label(size, seen)})", "size": size, "paper_size": (size if size in PAPER_SIZES else None),
               "paper": paper_at(PAPER["weak_rel"], size)}
        for loss in losses:
            row[loss] = _cell(collect(f"weak-{size}-{loss}", lambda r: r["eval"]["relational_accuracy"]),
                              paper_at(PAPER["weak_rel"], size) if loss == "paper-code" else None)
        t2.append(row)
    t3.append({"row": "Supervised", "paper": PAPER["supervised_cls"],
               "relcomp": _cell(collect("supervised", lambda r: r["eval"]["classification_accuracy"]), PAPER["supervised_cls"])})
    for size in sizes:
        for shot in shots:
            vals = [a for r in collect(f"siamese-{size}", lambda r, k=str(shot): r["fewshot"]["shots"][k]["accuracies"])
                    for a in r]
            paper = paper_at(PAPER["siamese_cls"].get(shot, []), size)
            t3.append({"row": f"Siamese ({size_label(size, seen)}), {shot}-shot", "paper": paper, "relcomp": _cell(vals, paper)})
    for size in sizes:
        row = {"row": f"Weakly supervised ({size_label(size, seen)})", "paper": paper_at(PAPER["weak_cls"], size)}
        for loss in losses:
            row[loss] = _cell(collect(f"weak-{size}-{loss}", lambda r: r["eval"]["classification_accuracy"]),
                              row["paper"] if loss == "paper-code" else None)
        t3.append(row)
    return {"tables": {"table1": t1, "table2": t2, "table3": t3}}


# ---------------------------------------------------------------------------------------------
# Figures


def _figures(out: Path, results: dict, runs: dict, panels: list[dict], prof: dict) -> dict[str, str]:
    sizes = prof["relational"]["sizes"]
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    figs: dict[str, str] = {}

    def copy(src: Path, name: str, caption: str) -> None:
        if src.exists():
            shutil.copyfile(src, fig_dir / name)
            figs[name] = caption

    sup = run_files(runs["supervised/s0"]["folder"])
    copy(sup.curves, "fig2_supervised_curves.png", "Figure 2. Loss and accuracy of the supervised model.")
    curves = {_pretty(r): read_metrics(r["folder"]) for k, r in runs.items()
              if k.endswith("/s0") and r["group"] != "supervised"}
    plot_relational_curves(curves, fig_dir / "curves_relational.png")
    figs["curves_relational.png"] = "Validation accuracy of every relational run against pairs seen (same budget for every size)."
    copy(sup.confusion, "fig4_confusion_supervised.png", "Figure 4. Confusion matrix of the supervised model.")
    mid = sizes[min(1, len(sizes) - 1)]
    if 3 in prof["fewshot"]["shots"]:
        copy(run_files(runs[f"siamese-{mid}/s0"]["folder"]).fewshot_confusion("3shot"), "fig5_confusion_siamese_3shot.png",
             f"Figure 5. Siamese ({mid}) + 3-shot head, pooled over draws.")
    for letter, loss in zip("ab", prof["weak"]["losses"]):
        copy(run_files(runs[f"weak-{mid}-{loss}/s0"]["folder"]).confusion, f"fig6_confusion_weak_{loss}.png",
             f"Figure 6{letter}. Weakly supervised ({mid}), {loss} loss.")
    plot_embeddings(panels, fig_dir / "fig7_embeddings.png")
    figs["fig7_embeddings.png"] = ("Figure 7. Top: t-SNE of the 128-d test embeddings, digit medians labelled. "
                                   "Bottom: projection on the first principal component (oriented so rho > 0) per digit.")
    groups = classification_groups(results)
    plot_bars(groups, fig_dir / "classification.png", "Classification test accuracy: paper vs relcomp", "accuracy (%)")
    figs["classification.png"] = "Table 3 as a chart: the paper's numbers beside relcomp's."
    return figs


# ---------------------------------------------------------------------------------------------
# Reports
