"""``relcomp reproduce --profile beyond-quick``: what the paper names as future work, measured.

Four studies on MNIST, every run through the one training loop with the same budget of pairs:

1. A ranker (one score per image) beside the Siamese and weak models: pairwise accuracy, Spearman
   rho of the score against the digit, and classes from cut-points on the score (k = 0, 1, 3).
   The Siamese model's paper-style linear head beside an ordinal-anchor classifier that uses only
   its relation head.
2. Relations: gt (the paper), ge (ties as a third outcome) and same (same class or not).
3. Noisy annotators: a fraction e of the train and val outcomes flipped, with and without forward
   correction; weak classification accuracy and Siamese 1-shot accuracy against e.
4. Data efficiency: weak and ranker classification accuracy against the number of distinct
   training pairs, and Siamese few-shot accuracy against k.

Runs live under ``<out>/runs`` in folders named by a hash of their config (shared between the
studies where the config is the same) and are reused or resumed on a rerun.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data.sources import MnistSource
from ..engine import train
from ..evaluate import evaluate_run
from ..fewshot import fewshot_eval
from ..plots import plot_lines
from ..utils import format_count, parse_count, write_json_atomic, write_text_atomic
from .common import (
    cached_json,
    fmt,
    html_figures,
    html_head,
    html_table,
    log,
    machine_info,
    md_figures,
    md_table,
    pct,
    run_folder,
)


def _f(cell: dict | float | None) -> str:
    return fmt(cell) if isinstance(cell, dict) or cell is None else f"{cell:.2f}"


class Study:
    """Trains (or reuses) runs and caches their evaluations."""

    def __init__(self, prof: dict, out: Path, device: str, data_dir: str | None, progress: bool):
        self.prof, self.out, self.device, self.data_dir, self.progress = prof, out, device, data_dir, progress
        self.n_runs = 0
        self.train_times: dict[str, float] = {}  # folder -> training seconds (runs shared by studies count once)

    def config(self, pairs: str | None = None, flip_rate: float = 0.0, **kw) -> TrainConfig:
        b, d = self.prof["budget"], self.prof.get("data", {})
        source = MnistSource(pairs=pairs or b["pairs"], train_subset=d.get("train_subset"),
                             val_subset=d.get("val_subset"), val_pairs=d.get("val_pairs", 20_000),
                             flip_rate=flip_rate, data_dir=self.data_dir)
        # The studies measured before relcomp learned from unlabeled images keep their setting.
        base = dict(samples=parse_count(b["samples"]), eval_every=parse_count(b["eval_every"]), device=self.device,
                    progress=self.progress, data=source, unlabeled="off", loss=self.prof.get("loss", "auto"))
        return TrainConfig(**{**base, **kw})

    def run(self, **kw) -> dict[str, Any]:
        """Train the run (or reuse it) and evaluate it on the test split."""
        cfg = self.config(**kw)
        tag = "-".join(str(v) for v in (cfg.model, cfg.data.pairs, cfg.relation) if v) + \
            (f"-flip{cfg.flip_rate:g}-{cfg.noise_correction}" if cfg.flip_rate else "")
        folder = run_folder(self.out, tag, cfg)
        self.n_runs += 1
        log(f"[{self.n_runs}] {tag} -> {folder}")
        summary = train(cfg, folder, resume=True)
        self.train_times[str(folder)] = summary["train_time_s"]
        ev = cached_json(folder / "eval.json", folder / "best.safetensors") or evaluate_run(folder, device=self.device)
        return {"folder": str(folder), "train_time_s": summary["train_time_s"],
                "eval": {k: v for k, v in ev.items() if k not in ("run_dir", "confusion_matrix")}}

    def fewshot(self, rec: dict, shots: list[int], method: str) -> dict[str, dict]:
        name = "fewshot.json" if method == "linear" else f"fewshot-{method}.json"
        folder = Path(rec["folder"])
        draws = int(self.prof["fewshot"]["draws"])
        cached = cached_json(folder / name, folder / "best.safetensors",
                              lambda r: r["draws"] == draws and all(str(k) in r["shots"] or k == 0 for k in shots))
        if cached:
            return cached["shots"]
        r = fewshot_eval(rec["folder"], shots=shots, draws=draws, device=self.device, method=method)
        return r["shots"]


def run_beyond(prof: dict, out: str | Path | None, device: str = "auto", data_dir: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Run the four studies of a ``kind = "beyond"`` profile; write results.json, report.md,
    report.html and figures/ into ``out``; return the results."""
    t0 = time.perf_counter()
    out = Path(out) if out else Path("runs") / f"reproduce-{prof['name']}"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    st = Study(prof, out, device, data_dir, progress)
    res: dict[str, Any] = {"kind": "beyond", "profile": prof["name"], "description": prof.get("description", ""),
                           "budget": prof["budget"], "machine": machine_info()}

    # 1 + 2. Models x relations (the gt runs also serve studies 1, 3 and 4).
    rel_models, relations = prof["relations"]["models"], prof["relations"]["relations"]
    runs = {(m, r): st.run(model=m, relation=r) for r in relations for m in rel_models}
    res["relations"] = {f"{m}/{r}": runs[(m, r)]["eval"] for (m, r) in runs}
    ranker, siam = runs[("ranker", "gt")], runs[("siamese", "gt")]
    res["ranker"] = {"relational_accuracy": ranker["eval"]["relational_accuracy"],
                     "spearman_rho": ranker["eval"]["spearman_rho"],
                     "cutpoints": {k: pct(v["accuracies"]) for k, v in st.fewshot(ranker, [0, 1, 3], "cutpoints").items()}}
    ks = list(prof["efficiency"]["shots"])
    res["siamese_k"] = {method: {k: pct(v["accuracies"]) for k, v in st.fewshot(siam, ks, method).items()}
                        for method in ("linear", "anchors")}

    # 3. Noise.
    res["noise"] = {}
    for m in prof["noise"]["models"]:
        for e in prof["noise"]["rates"]:
            for corr in (["none"] if e == 0 else ["none", "given"]):
                rec = runs[(m, "gt")] if e == 0 else st.run(model=m, flip_rate=e, noise_correction=corr)
                if m == "siamese":
                    acc = pct(st.fewshot(rec, [1], "linear")["1"]["accuracies"])
                else:
                    acc = pct([rec["eval"]["classification_accuracy"]])
                res["noise"][f"{m}/{e:g}/{corr}"] = {"model": m, "rate": e, "correction": corr, "accuracy": acc,
                                                     "relational_accuracy": rec["eval"]["relational_accuracy"]}

    # 4. Data efficiency: distinct training pairs.
    res["efficiency"] = {}
    res["efficiency_samples"] = eff_samples = parse_count(prof["efficiency"].get("samples", prof["budget"]["samples"]))
    same_budget = eff_samples == parse_count(prof["budget"]["samples"])
    for m in prof["efficiency"]["models"]:
        for size in prof["efficiency"]["sizes"]:
            if size == prof["budget"]["pairs"] and same_budget:
                rec = runs[(m, "gt")]
            else:
                rec = st.run(model=m, pairs=size, samples=eff_samples)
            if m == "ranker":
                acc = pct(st.fewshot(rec, [3], "cutpoints")["3"]["accuracies"])
            else:
                acc = pct([rec["eval"]["classification_accuracy"]])
            res["efficiency"][f"{m}/{size}"] = {"model": m, "pairs": size, "accuracy": acc,
                                                "relational_accuracy": rec["eval"]["relational_accuracy"]}

    res["tables"] = _tables(res, prof)
    res["figures"] = _figures(res, prof, out)
    res["wall_time_s"] = round(time.perf_counter() - t0, 1)
    res["n_runs"] = len(st.train_times)
    res["train_time_s_total"] = round(sum(st.train_times.values()), 1)
    res["console"] = _console(res)
    write_json_atomic(out / "results.json", {k: v for k, v in res.items() if k != "console"})
    _write_reports(res, out)
    return res


def _tables(res: dict, prof: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    r = res["ranker"]
    cut = r["cutpoints"]
    t4 = ("Table 4. Ranker (score s, P(A > B) = sigmoid(s(A) - s(B))): test accuracy (%)",
          ["pairwise", "Spearman rho", *[f"cut-points, {k}-shot" if "(" not in k else f"cut-points, {k.replace(' (', '-shot (')}"
                                         for k in cut]],
          [[_f(r["relational_accuracy"] * 100), f"{r['spearman_rho']:.4f}", *[_f(v) for v in cut.values()]]])
    sk = res["siamese_k"]
    t5 = ("Table 5. Siamese classification with k labelled images per class (%): linear head vs ordinal anchors",
          ["k", "linear head on the frozen backbone (the paper)", "ordinal anchors through the relation head"],
          [[k, _f(sk["linear"].get(k)), _f(sk["anchors"].get(k))] for k in sorted(sk["linear"], key=int)])
    rels = prof["relations"]["relations"]
    rows = []
    for m in prof["relations"]["models"]:
        row = [m]
        for rel in rels:
            e = res["relations"][f"{m}/{rel}"]
            cell = _f(e["relational_accuracy"] * 100)
            if e.get("classification_accuracy") is not None:
                cell += f" / {e['classification_accuracy'] * 100:.2f}" + ("*" if rel == "same" else "")
            row.append(cell)
        rows.append(row)
    t6 = ("Table 6. Relations: relational test accuracy / classification test accuracy of the weak model (%)",
          ["model", *[{"gt": "gt (A > B, ties dropped)", "ge": "ge (ties a third outcome)",
                       "same": "same (same class or not)"}[x] for x in rels]], rows)
    return [t4, t5, t6]


def _figures(res: dict, prof: dict, out: Path) -> dict[str, str]:
    figs = {}
    rates = prof["noise"]["rates"]
    panels = []
    for m, title in (("weak", "weak model: test classification"), ("siamese", "Siamese + 1-shot linear head")):
        if m not in prof["noise"]["models"]:
            continue
        series = {}
        for corr, label in (("none", "without correction"), ("given", "with forward correction")):
            pts = [res["noise"].get(f"{m}/{e:g}/{corr}") or res["noise"].get(f"{m}/{e:g}/none") for e in rates]
            series[label] = (rates, [p["accuracy"]["mean"] for p in pts], [p["accuracy"]["std"] for p in pts])
        panels.append({"title": title, "xlabel": "flip rate e (train and val outcomes)", "ylabel": "accuracy (%)",
                       "series": series})
    rel_series = {}
    for m in prof["noise"]["models"]:
        for corr, label in (("none", "without correction"), ("given", "with correction")):
            pts = [res["noise"].get(f"{m}/{e:g}/{corr}") or res["noise"].get(f"{m}/{e:g}/none") for e in rates]
            rel_series[f"{m}, {label}"] = (rates, [p["relational_accuracy"] * 100 for p in pts], None)
    panels.append({"title": "relational test accuracy (clean test pairs)", "xlabel": "flip rate e",
                   "ylabel": "accuracy (%)", "series": rel_series})
    plot_lines(panels, out / "figures" / "noise.png")
    figs["noise.png"] = ("Noisy annotators: test accuracy against the fraction of flipped comparisons, with and "
                         "without forward correction (Siamese 1-shot: mean ± std over draws; one training seed).")
    sizes = prof["efficiency"]["sizes"]
    series = {}
    for m, label in (("weak", "weak (argmax, no labels)"), ("ranker", "ranker (3-shot cut-points)")):
        if m in prof["efficiency"]["models"]:
            pts = [res["efficiency"][f"{m}/{s}"]["accuracy"] for s in sizes]
            series[label] = ([parse_count(s) for s in sizes], [p["mean"] for p in pts], [p["std"] for p in pts])
    sk = res["siamese_k"]
    ks = sorted(int(k) for k in sk["linear"])
    plot_lines([{"title": "classification vs distinct training pairs", "xlabel": "training pairs", "logx": True,
                 "ylabel": "test accuracy (%)", "series": series},
                {"title": "Siamese: few-shot accuracy vs k", "xlabel": "labelled images per class (k)",
                 "ylabel": "test accuracy (%)",
                 "series": {"linear head": (ks, [sk["linear"][str(k)]["mean"] for k in ks],
                                            [sk["linear"][str(k)]["std"] for k in ks]),
                            "ordinal anchors": (ks, [sk["anchors"][str(k)]["mean"] for k in ks],
                                                [sk["anchors"][str(k)]["std"] for k in ks])}}],
               out / "figures" / "efficiency.png")
    eff = parse_count(prof["efficiency"].get("samples", prof["budget"]["samples"]))
    figs["efficiency.png"] = (f"Data efficiency. Left: every run sees {format_count(eff)} "
                              "pairs drawn from a set of the given size. Right: mean ± std over random draws of k images per class.")
    return figs


def _console(res: dict) -> str:
    lines = []
    for title, header, rows in res["tables"]:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines += ["", title, "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines += ["", "Noise (accuracy %, mean):"]
    lines += [f"  {k:<28} {v['accuracy']['mean']:.2f}" for k, v in res["noise"].items()]
    lines += ["", "Data efficiency (accuracy %, mean):"]
    lines += [f"  {k:<28} {v['accuracy']['mean']:.2f}" for k, v in res["efficiency"].items()]
    return "\n".join(lines)


NOTES = [
    "Every run sees the same number of pairs (the profile's budget); the best val checkpoint is evaluated on the "
    "MNIST test split (20k test pairs of the run's relation, 10k test images).",
    "* same: same/different comparisons identify classes only up to a permutation; the classification accuracy "
    "maps each predicted class to a true class by the best one-to-one matching (Hungarian algorithm).",
    "ge: relational accuracy is three-way (A < B, A > B, tie), so it is not comparable with the two-way gt column.",
    "Noise: the flip corrupts the train and val outcomes (val picks the checkpoint), never the test ones. "
    "Forward correction trains P_obs = (1 - e) P + e (1 - P) on the observed outcomes with e given.",
    "Cut-points 0-shot use no label: a known K and 1-D k-means of the test scores, or equal class proportions.",
]


def _write_reports(res: dict, out: Path) -> None:
    m = res["machine"]
    b = res["budget"]
    intro = (f"Machine: {m['cpu']}, {m['cores']} cores{', GPU ' + m['gpu'] if m['gpu'] else ''}; torch {m['torch']}. "
             f"Budget: {format_count(parse_count(b['samples']))} pairs per run from a {b['pairs']} pair set "
             f"({format_count(res['efficiency_samples'])} for the data-efficiency runs), batch 128, "
             f"Adam lr 1e-3. {res['n_runs']} training runs; wall time {res['wall_time_s']:.0f} s "
             f"({res['train_time_s_total']:.0f} s of training, including runs reused from an earlier invocation).")
    md = [f"# relcomp beyond the paper: profile `{res['profile']}`", "", res["description"], "", intro, ""]
    page = html_head(f"relcomp beyond the paper: {res['profile']}") + [
        f"<h1>relcomp beyond the paper: <code>{html.escape(res['profile'])}</code></h1>",
        f"<p>{html.escape(res['description'])}</p><p>{html.escape(intro)}</p>"]
    for title, header, rows in res["tables"]:
        md += [f"## {title}", ""] + md_table(header, rows) + [""]
        page.append(f"<h2>{html.escape(title)}</h2>" + html_table(header, rows))
    md += ["## Notes", ""] + [f"- {n}" for n in NOTES] + ["", "## Figures", ""] + md_figures(res["figures"])
    page.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES) + "</ul><h2>Figures</h2>")
    page += html_figures(res["figures"], out) + ["</body></html>"]
    write_text_atomic(out / "report.md", "\n".join(md))
    write_text_atomic(out / "report.html", "\n".join(page))
