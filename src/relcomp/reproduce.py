"""``relcomp reproduce``: rerun the paper's whole study and report it beside the paper's numbers.

Plan: one supervised run, one Siamese run per pair-set size, and two weak runs per size (the
paper's original ``paper-code`` loss and the correct loss), each with every seed asked for. Each
run lives in its own folder named by a hash of its config, so a rerun reuses finished runs and
continues interrupted ones. Then: test evaluation, few-shot transfer of the Siamese backbones,
the ordinal analysis of the embeddings, and the tables, figures and report.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import html
import json
import os
import platform
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .utils import format_count, parse_count, write_json_atomic, write_text_atomic

# The paper's numbers (percent), by the position of the pair-set size in the profile.
PAPER_SIZES = ["50k", "500k", "5M"]
PAPER = {
    "siamese_rel": [99.33, 99.40, 99.45],
    "weak_rel": [95.90, 98.23, 96.89],
    "supervised_cls": 99.23,
    "siamese_cls": {1: [97.80, 98.42, 98.73], 3: [97.63, 98.41, 98.72]},
    "weak_cls": [20.28, 83.33, 71.19],
    "rho": {"supervised": 0.193, "siamese": 0.962, "weak": 0.818},
    "ordering": {"supervised": "2→7→3→1→9→8→4→0→5→6", "siamese": "0→1→2→3→4→6→5→8→7→9"},
}


FEWSHOT_STEPS, FEWSHOT_LR = 300, 1e-3

# ---------------------------------------------------------------------------------------------
# Profiles

def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("relcomp").joinpath("configs").iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name: str) -> dict[str, Any]:
    """A named profile (``quick``, ``paper``, ``smoke``) or the path of a TOML file.

    Raises:
        ConfigError: unknown name, unreadable file or missing keys.
    """
    path = Path(name)
    try:
        if path.suffix == ".toml" and path.exists():
            text = path.read_text()
        elif name in profile_names():
            text = resources.files("relcomp").joinpath("configs", f"{name}.toml").read_text()
        else:
            raise ConfigError(f"unknown profile {name!r}; choose from {', '.join(profile_names())} or give a .toml file")
        prof = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"profile {name}: invalid TOML ({e})") from None
    prof["name"] = path.stem if path.suffix == ".toml" else name
    if prof.get("kind") == "beyond":
        return prof
    for section, key in (("supervised", "epochs"), ("relational", "sizes"), ("relational", "samples"),
                         ("fewshot", "shots"), ("fewshot", "draws")):
        if key not in prof.get(section, {}):
            raise ConfigError(f"profile {name}: missing [{section}] {key}")
    prof.setdefault("weak", {}).setdefault("losses", ["paper-code", "correct"])
    prof.setdefault("analysis", {}).setdefault("tsne_points", 2000)
    prof.setdefault("data", {})
    return prof


# ---------------------------------------------------------------------------------------------
# The plan

@dataclass
class RunSpec:
    key: str          # e.g. "weak-500k-correct"
    group: str        # supervised | siamese | weak
    size: str | None  # pair-set size
    loss: str
    seed: int
    cfg: Any          # TrainConfig

    def folder(self, out: Path) -> Path:
        d = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in ("progress", "device", "data_dir")}
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return out / "runs" / f"{self.key}-s{self.seed}-{h}"


def plan(prof: dict[str, Any], seeds: list[int], device: str = "auto", data_dir: str | None = None) -> list[RunSpec]:
    from .train import TrainConfig

    common = dict(device=device, data_dir=data_dir, train_subset=prof["data"].get("train_subset"),
                  val_subset=prof["data"].get("val_subset"), val_pairs=prof["data"].get("val_pairs", 20_000))
    rel = prof["relational"]
    specs = []
    for seed in seeds:
        specs.append(RunSpec("supervised", "supervised", None, "correct", seed,
                             TrainConfig(model="supervised", epochs=prof["supervised"]["epochs"], seed=seed,
                                         eval_every=prof["supervised"].get("eval_every"), **common)))
        for size in rel["sizes"]:
            relational = dict(pairs=size, samples=parse_count(rel["samples"]), eval_every=rel.get("eval_every"),
                              seed=seed, **common)
            specs.append(RunSpec(f"siamese-{size}", "siamese", size, "correct", seed,
                                 TrainConfig(model="siamese", **relational)))
            for loss in prof["weak"]["losses"]:
                specs.append(RunSpec(f"weak-{size}-{loss}", "weak", size, loss, seed,
                                     TrainConfig(model="weak", loss=loss, **relational)))
    return specs


# ---------------------------------------------------------------------------------------------
# Running

def _cached_json(path: Path, newer_than: Path, check=lambda d: True) -> dict | None:
    if path.exists() and path.stat().st_mtime >= newer_than.stat().st_mtime:
        try:
            d = json.loads(path.read_text())
            return d if check(d) else None
        except json.JSONDecodeError:
            return None
    return None


def _cell(values: list[float], paper: float | None = None) -> dict[str, Any]:
    """A table cell in percent: mean, std (sample, 0 for one value), n, the values and the paper's number."""
    v = np.array(values, dtype=float) * 100
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v)), "values": [float(x) for x in v], "paper": paper}


def reproduce(profile: str = "quick", out: str | os.PathLike | None = None, seeds: int = 1, device: str = "auto",
              data_dir: str | None = None, overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the study of ``profile`` into ``out``; return the content of ``results.json``."""
    from .analysis import pc1_ordering, stratified_subsample, tsne_2d
    from .data.mnist import load_mnist
    from .evaluate import evaluate_run, test_outputs
    from .fewshot import fewshot_eval
    from .train import train

    t_start = time.perf_counter()
    prof = load_profile(profile)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        prof.setdefault(section, {})[key] = value
    if prof.get("kind") == "beyond":
        from .beyond import run_beyond

        return run_beyond(prof, out, device, data_dir, progress)
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    out = Path(out) if out else Path("runs") / f"reproduce-{prof['name']}"
    out.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(data_dir)
    specs = plan(prof, list(range(seeds)), device, data_dir)
    for s in specs:
        s.cfg.progress = progress
    shots, draws = list(prof["fewshot"]["shots"]), int(prof["fewshot"]["draws"])
    _log(f"profile {prof['name']}: {len(specs)} training runs into {out}")

    runs: dict[str, dict[str, Any]] = {}
    for n, spec in enumerate(specs, 1):
        folder = spec.folder(out)
        _log(f"[{n}/{len(specs)}] {spec.key} seed {spec.seed} -> {folder}")
        summary = train(spec.cfg, folder, resume=True, mnist=mnist)
        ev = _cached_json(folder / "eval.json", folder / "best.safetensors") or evaluate_run(folder, mnist=mnist, device=device)
        rec = {"key": spec.key, "group": spec.group, "size": spec.size, "loss": spec.loss, "seed": spec.seed,
               "folder": str(folder), "train": summary, "eval": {k: v for k, v in ev.items() if k != "run_dir"}}
        if spec.group == "siamese":
            fs = _cached_json(folder / "fewshot.json", folder / "best.safetensors",
                              lambda d: d["draws"] == draws and sorted(d["shots"]) == sorted(map(str, shots))
                              and (d.get("steps"), d.get("lr")) == (FEWSHOT_STEPS, FEWSHOT_LR))
            rec["fewshot"] = fs or fewshot_eval(folder, shots=shots, draws=draws, seed=spec.seed, mnist=mnist,
                                                device=device, steps=FEWSHOT_STEPS, lr=FEWSHOT_LR)
        runs[f"{spec.key}/s{spec.seed}"] = rec

    # Ordinal analysis of the test embeddings of every seed-0 model; t-SNE of a few.
    _log("ordinal analysis (PC1, Spearman rho) and t-SNE of the test embeddings")
    sizes = prof["relational"]["sizes"]
    ordinal, panels = {}, []
    tsne_keys = ["supervised", f"siamese-{sizes[-1]}"] + [f"weak-{sizes[-1]}-{loss}" for loss in reversed(prof["weak"]["losses"])]
    sub = stratified_subsample(mnist.test.labels, int(prof["analysis"]["tsne_points"]), seed=0)
    for key in [s.key for s in specs if s.seed == 0]:
        rec = runs[f"{key}/s0"]
        outs = test_outputs(rec["folder"], mnist=mnist, device=device)
        o = pc1_ordering(outs["embeddings"], outs["labels"])
        ordinal[key] = {"rho": o["rho"], "rho_raw": o["rho_raw"], "ordering": o["ordering"],
                        "paper_rho": PAPER["rho"].get(rec["group"]) if key in tsne_keys[:3] else None,
                        "paper_ordering": PAPER["ordering"].get(rec["group"]) if key in tsne_keys[:3] else None}
        if key in tsne_keys:
            panels.append({"key": key, "title": _pretty(rec), "tsne": tsne_2d(outs["embeddings"][sub]),
                           "labels": outs["labels"][sub], "pc1": o["projection"], "pc1_labels": outs["labels"],
                           "rho": o["rho"], "ordering": o["ordering"]})
    panels.sort(key=lambda p: tsne_keys.index(p["key"]))

    results = _tables(prof, runs, seeds, shots)
    results.update({
        "profile": prof["name"], "description": prof.get("description", ""),
        "budgets": {"supervised_epochs": prof["supervised"]["epochs"], "relational_samples": parse_count(prof["relational"]["samples"]),
                    "sizes": sizes, "fewshot_shots": shots, "fewshot_draws": draws, "data": prof["data"]},
        "seeds": list(range(seeds)), "ordinal": ordinal, "runs": runs, "machine": machine_info(),
        "command": "relcomp " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("relcomp") else None,
        "wall_time_s": None,
        # Training time of every run, whether trained now or earlier and reused from the cache.
        "train_time_s_total": round(sum(r["train"]["train_time_s"] for r in runs.values()), 1),
    })
    figures = _figures(out, results, runs, panels, prof)
    results["figures"] = figures
    results["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "report.md", render_markdown(results))
    write_text_atomic(out / "report.html", render_html(results, out))
    return results


def _log(msg: str) -> None:
    print(f"relcomp: {msg}", file=sys.stderr, flush=True)


def _pretty(rec: dict) -> str:
    if rec["group"] == "supervised":
        return "Supervised"
    if rec["group"] == "siamese":
        return f"Siamese ({rec['size']})"
    return f"Weak ({rec['size']}, {'paper-code' if rec['loss'] == 'paper-code' else 'correct'} loss)"


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------
# Tables

def _tables(prof: dict, runs: dict, seeds: int, shots: list[int]) -> dict[str, Any]:
    sizes = prof["relational"]["sizes"]
    losses = prof["weak"]["losses"]

    def collect(key: str, get) -> list[float]:
        return [get(runs[f"{key}/s{s}"]) for s in range(seeds) if f"{key}/s{s}" in runs]

    def paper_at(values: list[float], k: int) -> float | None:
        return values[k] if k < len(values) else None

    t1, t2, t3 = [], [], []
    for k, size in enumerate(sizes):
        t1.append({"row": f"Siamese ({size})", "size": size, "paper_size": paper_at(PAPER_SIZES, k),
                   "relcomp": _cell(collect(f"siamese-{size}", lambda r: r["eval"]["relational_accuracy"]),
                                    paper_at(PAPER["siamese_rel"], k))})
        row = {"row": f"Weak ({size})", "size": size, "paper_size": paper_at(PAPER_SIZES, k),
               "paper": paper_at(PAPER["weak_rel"], k)}
        for loss in losses:
            row[loss] = _cell(collect(f"weak-{size}-{loss}", lambda r: r["eval"]["relational_accuracy"]),
                              paper_at(PAPER["weak_rel"], k) if loss == "paper-code" else None)
        t2.append(row)
    t3.append({"row": "Supervised", "paper": PAPER["supervised_cls"],
               "relcomp": _cell(collect("supervised", lambda r: r["eval"]["classification_accuracy"]), PAPER["supervised_cls"])})
    for k, size in enumerate(sizes):
        for shot in shots:
            vals = [a for r in collect(f"siamese-{size}", lambda r: r["fewshot"]["shots"][str(shot)]["accuracies"]) for a in r]
            paper = paper_at(PAPER["siamese_cls"].get(shot, []), k)
            t3.append({"row": f"Siamese ({size}), {shot}-shot", "paper": paper, "relcomp": _cell(vals, paper)})
    for k, size in enumerate(sizes):
        row = {"row": f"Weakly supervised ({size})", "paper": paper_at(PAPER["weak_cls"], k)}
        for loss in losses:
            row[loss] = _cell(collect(f"weak-{size}-{loss}", lambda r: r["eval"]["classification_accuracy"]),
                              row["paper"] if loss == "paper-code" else None)
        t3.append(row)
    return {"tables": {"table1": t1, "table2": t2, "table3": t3}}


def _fmt(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    return f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["n"] > 1 else "")


def _fmt_paper(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def table_rows(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The three tables as (title, header, rows) of strings, for the console, Markdown and HTML."""
    t = results["tables"]
    out = []
    out.append(("Table 1. Siamese, relational test accuracy (%)", ["model", "paper", "relcomp"],
                [[r["row"], _fmt_paper(r["relcomp"]["paper"]), _fmt(r["relcomp"])] for r in t["table1"]]))
    out.append(("Table 2. Weakly supervised, relational test accuracy (%)",
                ["model", "paper", "relcomp, paper-code loss", "relcomp, correct loss"],
                [[r["row"], _fmt_paper(r["paper"]), _fmt(r.get("paper-code")), _fmt(r.get("correct"))] for r in t["table2"]]))
    rows3 = []
    for r in t["table3"]:
        if "relcomp" in r:
            rows3.append([r["row"], _fmt_paper(r["paper"]), _fmt(r["relcomp"]), ""])
        else:
            rows3.append([r["row"], _fmt_paper(r["paper"]), _fmt(r.get("paper-code")), _fmt(r.get("correct"))])
    out.append(("Table 3. Classification test accuracy (%)",
                ["model", "paper", "relcomp (same method; weak: paper-code loss)", "relcomp, correct loss"], rows3))
    return out


def format_console(results: dict) -> str:
    lines = []
    for title, header, rows in table_rows(results):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines += ["", title, "  ".join(h.ljust(w) for h, w in zip(header, widths)),
                  "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines += ["", "Ordinal structure of the test embeddings (PC1 projection, |Spearman rho|):"]
    for key, o in results["ordinal"].items():
        paper = f"   paper {o['paper_rho']:.3f}" if o.get("paper_rho") is not None else ""
        lines.append(f"  {key:<24} |rho| {o['rho']:.3f}  {o['ordering']}{paper}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures

def _figures(out: Path, results: dict, runs: dict, panels: list[dict], prof: dict) -> dict[str, str]:
    from .plots import plot_bars, plot_embeddings, plot_relational_curves
    from .utils import read_jsonl

    sizes = prof["relational"]["sizes"]
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    figs: dict[str, str] = {}

    def copy(src: Path, name: str, caption: str) -> None:
        if src.exists():
            shutil.copyfile(src, fig_dir / name)
            figs[name] = caption

    sup = Path(runs["supervised/s0"]["folder"])
    copy(sup / "curves.png", "fig2_supervised_curves.png", "Figure 2. Loss and accuracy of the supervised model.")
    curves = {_pretty(r): read_jsonl(Path(r["folder"]) / "metrics.jsonl") for k, r in runs.items()
              if k.endswith("/s0") and r["group"] != "supervised"}
    plot_relational_curves(curves, fig_dir / "curves_relational.png")
    figs["curves_relational.png"] = "Validation accuracy of every relational run against pairs seen (same budget for every size)."
    copy(sup / "confusion.png", "fig4_confusion_supervised.png", "Figure 4. Confusion matrix of the supervised model.")
    mid = sizes[min(1, len(sizes) - 1)]
    copy(Path(runs[f"siamese-{mid}/s0"]["folder"]) / "confusion-3shot.png" if 3 in prof["fewshot"]["shots"] else Path("/nonexistent"),
         "fig5_confusion_siamese_3shot.png", f"Figure 5. Siamese ({mid}) + 3-shot head, pooled over draws.")
    for loss in prof["weak"]["losses"]:
        copy(Path(runs[f"weak-{mid}-{loss}/s0"]["folder"]) / "confusion.png", f"fig6_confusion_weak_{loss}.png",
             f"Figure 6. Weakly supervised ({mid}), {loss} loss.")
    plot_embeddings(panels, fig_dir / "fig7_embeddings.png")
    figs["fig7_embeddings.png"] = ("Figure 7. Top: t-SNE of the 128-d test embeddings, digit medians labelled. "
                                   "Bottom: projection on the first principal component (oriented so rho > 0) per digit.")
    groups = {}
    for r in results["tables"]["table3"]:
        g = {"paper": r["paper"]} if r["paper"] is not None else {}
        if "relcomp" in r:
            g["relcomp, paper's method"] = r["relcomp"]["mean"]
        else:
            g["relcomp, paper's method"] = (r.get("paper-code") or {}).get("mean")
            g["relcomp, correct loss"] = (r.get("correct") or {}).get("mean")
        groups[r["row"]] = {k: v for k, v in g.items() if v is not None}
    plot_bars(groups, fig_dir / "classification.png", "Classification test accuracy: paper vs relcomp", "accuracy (%)")
    figs["classification.png"] = "Table 3 as a chart: the paper's numbers beside relcomp's."
    return figs


# ---------------------------------------------------------------------------------------------
# Reports

def _budget_text(results: dict) -> str:
    b = results["budgets"]
    sizes = b["sizes"]
    per = ", ".join(f"{b['relational_samples'] / parse_count(s):g} epochs of {s}" for s in sizes)
    data = f" Data subsets: {b['data']}." if b["data"] else ""
    return (f"Supervised: {b['supervised_epochs']} epochs of 50k images, batch 64. Each relational run: "
            f"{format_count(b['relational_samples'])} pairs ({per}), batch 128. Adam, lr 1e-3, weight decay 1e-4; "
            f"the best val checkpoint is evaluated. Few-shot: {b['fewshot_draws']} random draws of k images per class "
            f"for k in {b['fewshot_shots']}. Seeds: {len(results['seeds'])}.{data}")


def _time_text(results: dict) -> str:
    return (f"{results['wall_time_s'] or 0:.0f} s wall time for this invocation; "
            f"{results['train_time_s_total']:.0f} s of training summed over all runs (including runs reused from the cache)")


NOTES = [
    "The paper's weak model fed a probability into a loss that expects logits (`BCEWithLogits` on P(A > B): "
    "a double sigmoid). The `paper-code` column reproduces that bug; the `correct` column uses the log-space "
    "binary cross-entropy of P(A > B).",
    "Spearman rho: the sign of a principal component is arbitrary, so the projection is oriented to make rho "
    "positive and |rho| is reported; the ordering lists the digits by the median of the oriented projection.",
    "Few-shot cells are the mean ± standard deviation over the random draws of the labelled images (and seeds); "
    "the paper reports a single draw.",
]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def md_figures(figures: dict[str, str]) -> list[str]:
    lines = []
    for name, caption in figures.items():
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    return lines


def html_table(header: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def html_head(title: str) -> list[str]:
    return ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title><style>",
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}",
            "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}",
            "figure{margin:1.5em 0}figcaption{color:#555;font-style:italic}</style></head><body>"]


def html_figures(figures: dict[str, str], out: Path) -> list[str]:
    """Every figure embedded as base64 PNG, so the page is self-contained."""
    esc = html.escape
    parts = []
    for name, caption in figures.items():
        data = base64.b64encode((out / "figures" / name).read_bytes()).decode()
        parts.append(f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return parts


def render_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# relcomp reproduction: profile `{results['profile']}`", "",
             f"{results.get('description', '')}", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m["gpu"] else "") +
             f"; torch {m['torch']}, Python {m['python']}",
             f"- Time: {_time_text(results)}",
             f"- Budgets: {_budget_text(results)}", ""]
    for title, header, rows in table_rows(results):
        lines += [f"## {title}", ""] + md_table(header, rows) + [""]
    lines += ["## Ordinal structure (PC1 of the test embeddings)", "",
              "| model | abs. Spearman rho | discovered ordering | paper rho | paper ordering |", "|---|---|---|---|---|"]
    for key, o in results["ordinal"].items():
        pr = "—" if o.get("paper_rho") is None else f"{o['paper_rho']:.3f}"
        lines.append(f"| {key} | {o['rho']:.3f} | {o['ordering']} | {pr} | {o.get('paper_ordering') or '—'} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES] + ["", "## Figures", ""] + md_figures(results["figures"])
    return "\n".join(lines)


def render_html(results: dict, out: Path) -> str:
    """A self-contained page: the tables and every figure embedded as base64 PNG."""
    esc = html.escape
    m = results["machine"]
    parts = html_head(f"relcomp reproduction: {results['profile']}") + [
             f"<h1>relcomp reproduction: profile <code>{esc(results['profile'])}</code></h1>",
             f"<p>{esc(results.get('description', ''))}</p><ul>",
             f"<li>Machine: {esc(m['cpu'])}, {m['cores']} cores{', GPU ' + esc(m['gpu']) if m['gpu'] else ''}; "
             f"torch {esc(m['torch'])}, Python {esc(m['python'])}</li>",
             f"<li>Time: {esc(_time_text(results))}</li><li>Budgets: {esc(_budget_text(results))}</li></ul>"]
    for title, header, rows in table_rows(results):
        parts.append(f"<h2>{esc(title)}</h2>" + html_table(header, rows))
    parts.append("<h2>Ordinal structure (PC1 of the test embeddings)</h2><table><tr><th>model</th><th>|rho|</th>"
                 "<th>discovered ordering</th><th>paper rho</th><th>paper ordering</th></tr>")
    for key, o in results["ordinal"].items():
        pr = "—" if o.get("paper_rho") is None else f"{o['paper_rho']:.3f}"
        parts.append(f"<tr><td>{esc(key)}</td><td>{o['rho']:.3f}</td><td>{esc(o['ordering'])}</td><td>{pr}</td>"
                     f"<td>{esc(o.get('paper_ordering') or '—')}</td></tr>")
    parts.append("</table><h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in NOTES) + "</ul><h2>Figures</h2>")
    parts += html_figures(results["figures"], out)
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# CLI

def add_reproduce_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="rerun the paper's whole study; write tables, figures and a report",
        description="Train every model of the paper (supervised; Siamese and weak at each pair-set size; the weak "
        "model with the paper's original loss and with the correct one), evaluate on the test split, run few-shot "
        "transfer and the ordinal analysis, and write results.json, report.md, report.html and figures/. Finished "
        "runs whose config matches are reused; interrupted ones continue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--profile", default="quick", help=f"named profile ({', '.join(profile_names())}) or a .toml file")
    p.add_argument("--out", default=None, help="output folder (default: runs/reproduce-<profile>)")
    p.add_argument("--seeds", type=int, default=1, help="train every model with this many seeds; report mean ± std")
    p.add_argument("--samples", default=None, help="override: pairs seen by every relational run (e.g. 150k)")
    p.add_argument("--sizes", default=None, help="override: comma-separated pair-set sizes (e.g. 50k,500k)")
    p.add_argument("--supervised-epochs", type=float, default=None, help="override: supervised epochs")
    p.add_argument("--draws", type=int, default=None, help="override: few-shot draws")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--data-dir", default=None, help="MNIST/pair cache (default: $RELCOMP_DATA_DIR or ~/.cache/relcomp)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_reproduce(args) -> int:
    overrides: dict[str, Any] = {}
    if args.samples:
        overrides["relational.samples"] = parse_count(args.samples)
    if args.sizes:
        overrides["relational.sizes"] = [s.strip() for s in args.sizes.split(",") if s.strip()]
        for s in overrides["relational.sizes"]:
            parse_count(s)
    if args.supervised_epochs:
        overrides["supervised.epochs"] = args.supervised_epochs
    if args.draws:
        overrides["fewshot.draws"] = args.draws
    results = reproduce(args.profile, args.out, args.seeds, args.device, args.data_dir, overrides, progress=not args.quiet)
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{results['profile']}"
    print(results["console"] if results.get("kind") == "beyond" else format_console(results))
    print(f"\n{_time_text(results)}\nreport: {out / 'report.html'} (and report.md, results.json)")
    return 0
