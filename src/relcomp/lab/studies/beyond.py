"""``relcomp reproduce --profile beyond-quick``: what the paper names as future work, measured.

Four studies on MNIST, every run through the one training loop with the same budget of pairs,
each repeated for every seed of the profile (``--seeds N`` for seeds 0 .. N-1):

1. A ranker (one score per image) beside the Siamese and weak models: pairwise accuracy, Spearman
   rho of the score against the digit, and classes from cut-points on the score (k = 0, 1, 3).
   The Siamese model's paper-style linear head beside an ordinal-anchor classifier that uses only
   its relation head.
2. Relations: gt (the paper), ge (ties as a third outcome) and same (same class or not).
3. Noisy annotators: a fraction e of the train and val outcomes flipped, with and without forward
   correction; weak classification accuracy and Siamese 1-shot accuracy against e.
4. Data efficiency: weak and ranker classification accuracy against the size of the pair set the
   runs draw from, and Siamese few-shot accuracy against k.

Every cell of the results is mean ± std over the seeds (a few-shot cell: each seed's mean over the
draws). Runs live under ``<out>/runs`` in folders named by a hash of their config (shared between
the studies where the config is the same) and are reused or resumed on a rerun.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TrainConfig, loss_name
from ...data.sources import MnistSource
from ...fewshot import shot_name
from ...plots import plot_lines
from ...utils import format_count, parse_count
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

SECTIONS = ("seeds", "budget", "relations", "noise", "efficiency", "fewshot")


class Study:
    """The profile's configs, run through the harness."""

    def __init__(self, prof: dict, h: Harness, data_dir: str | None):
        self.prof, self.h, self.data_dir = prof, h, data_dir

    def config(self, pairs: str | None = None, flip_rate: float = 0.0, **kw) -> TrainConfig:
        b, d = self.prof["budget"], self.prof.get("data", {})
        source = MnistSource(pairs=pairs or b["pairs"], **mnist_subsets(d), flip_rate=flip_rate, data_dir=self.data_dir)
        # The studies measured before relcomp learned from unlabeled images keep their setting.
        base = dict(samples=parse_count(b["samples"]), eval_every=parse_count(b["eval_every"]), device=self.h.device,
                    data=source, unlabeled="off", loss=self.prof.get("loss", "auto"))
        return TrainConfig(**{**base, **kw})

    def run(self, **kw) -> dict[str, Any]:
        """Train the run (or reuse it) and evaluate it on the test split."""
        cfg = self.config(**kw)
        tag = "-".join(str(v) for v in (cfg.model, cfg.data.pairs, cfg.relation) if v) + \
            (f"-flip{cfg.flip_rate:g}-{cfg.noise_correction}" if cfg.flip_rate else "") + f"-s{cfg.seed}"
        r = self.h.run(cfg, tag)
        return {"folder": str(r.folder), "seed": cfg.seed, "loss": loss_name(cfg), "eval": r.eval}

    def fewshot(self, rec: dict, shots: list[int], method: str) -> dict[str, float]:
        """Each k's test accuracy (%) averaged over the profile's draws (drawn with the run's seed)."""
        r = self.h.fewshot(rec["folder"], shots, int(self.prof["fewshot"]["draws"]), rec["seed"], method,
                           check=lambda r: all(str(k) in r["shots"] or k == 0 for k in shots))
        return {k: 100 * float(np.mean(v["accuracies"])) for k, v in r["shots"].items()}


def rel_cls(rec: dict) -> dict[str, float | None]:
    ev = rec["eval"]
    cls = ev.get("classification_accuracy")
    return {"relational_accuracy": 100 * ev["relational_accuracy"],
            "classification_accuracy": None if cls is None else 100 * cls}


def measure(st: Study, prof: dict, seed: int) -> dict[str, Any]:
    """One seed of the four studies: every number in percent (Spearman rho as it is)."""
    rel_models, relations = prof["relations"]["models"], prof["relations"]["relations"]
    runs = {(m, r): st.run(model=m, relation=r, seed=seed) for r in relations for m in rel_models}
    ranker, siam = runs[("ranker", "gt")], runs[("siamese", "gt")]
    res: dict[str, Any] = {
        "relations": {f"{m}/{r}": {**rel_cls(rec), "loss": rec["loss"]} for (m, r), rec in runs.items()},
        "ranker": {"relational_accuracy": 100 * ranker["eval"]["relational_accuracy"],
                   "spearman_rho": ranker["eval"]["spearman_rho"],
                   "cutpoints": st.fewshot(ranker, [0, 1, 3], "cutpoints")},
        "siamese_k": {method: st.fewshot(siam, list(prof["efficiency"]["shots"]), method)
                      for method in ("linear", "anchors")},
        "noise": {}, "efficiency": {}}
    for m in prof["noise"]["models"]:
        for e in prof["noise"]["rates"]:
            for corr in (["none"] if e == 0 else ["none", "given"]):
                rec = runs[(m, "gt")] if e == 0 else st.run(model=m, flip_rate=e, noise_correction=corr, seed=seed)
                acc = st.fewshot(rec, [1], "linear")["1"] if m == "siamese" else rel_cls(rec)["classification_accuracy"]
                res["noise"][f"{m}/{e:g}/{corr}"] = {"accuracy": acc, **rel_cls(rec)}
    eff_samples = efficiency_samples(prof)
    same_budget = eff_samples == parse_count(prof["budget"]["samples"])
    for m in prof["efficiency"]["models"]:
        for size in prof["efficiency"]["sizes"]:
            rec = runs[(m, "gt")] if size == prof["budget"]["pairs"] and same_budget else \
                st.run(model=m, pairs=size, samples=eff_samples, seed=seed)
            acc = st.fewshot(rec, [3], "cutpoints")["3"] if m == "ranker" else rel_cls(rec)["classification_accuracy"]
            res["efficiency"][f"{m}/{size}"] = {"accuracy": acc, **rel_cls(rec)}
    return res


def merge(items: list) -> Any:
    """The seeds' results, one structure: each number becomes a cell (mean, std, n, values)."""
    first = items[0]
    if isinstance(first, dict):
        return {k: merge([d[k] for d in items]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return pct(items, scale=1)
    return first


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run the four studies of a ``kind = "beyond"`` profile for each of its seeds; write
    results.json, report.md, report.html and figures/ into ``out``; return the results."""
    t0, out = time.perf_counter(), h.out
    prof.setdefault("seeds", [0])
    st = Study(prof, h, data_dir)
    per_seed = [measure(st, prof, int(seed)) for seed in prof["seeds"]]
    res = {**study_head("beyond", prof, SECTIONS, loss=prof.get("loss", "auto"), data=prof.get("data", {})),
           **merge(per_seed), "n_runs": len(h.train_times),
           "train_time_s_total": h.train_time_total,
           "wall_time_s": round(time.perf_counter() - t0, 1)}
    res["figures"] = figures(res, out / "figures")
    return write_study(res, out, "relcomp beyond the paper", markdown, html_figures(res["figures"], out))


def _series(cells: list[dict]) -> tuple[list[float], list[float]]:
    return [c["mean"] for c in cells], [c["std"] for c in cells]


def figures(res: dict, fig_dir: Path) -> dict[str, str]:
    """The noise and data-efficiency charts, drawn from the results."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    s, noise = res["settings"], res["noise"]
    rates = s["noise"]["rates"]

    def points(m: str, corr: str, key: str) -> list[dict]:
        return [(noise.get(f"{m}/{e:g}/{corr}") or noise[f"{m}/{e:g}/none"])[key] for e in rates]

    panels = [{"title": title, "xlabel": "flip rate e (train and val outcomes)", "ylabel": "test accuracy (%)",
               "series": {label: (rates, *_series(points(m, corr, "accuracy")))
                          for corr, label in (("none", "without correction"), ("given", "with forward correction"))}}
              for m, title in (("weak", "weak model: classification, zero labels"),
                               ("siamese", "Siamese + 1-shot linear head")) if m in s["noise"]["models"]]
    panels.append({"title": "relational accuracy (clean test pairs)", "xlabel": "flip rate e", "ylabel": "test accuracy (%)",
                   "series": {f"{m}, {label}": (rates, *_series(points(m, corr, "relational_accuracy")))
                              for m in s["noise"]["models"]
                              for corr, label in (("none", "without correction"), ("given", "with correction"))}})
    name_noise, name_eff = f"{res['profile']}-noise.png", f"{res['profile']}-efficiency.png"
    plot_lines(panels, fig_dir / name_noise)
    sizes, sk = s["efficiency"]["sizes"], res["siamese_k"]
    ks = sorted(sk["linear"], key=int)
    series = {label: ([parse_count(x) for x in sizes], *_series([res["efficiency"][f"{m}/{x}"]["accuracy"] for x in sizes]))
              for m, label in (("weak", "weak (argmax, no labels)"), ("ranker", "ranker (3-shot cut-points)"))
              if m in s["efficiency"]["models"]}
    plot_lines([{"title": "classification vs size of the pair set", "xlabel": "pairs in the set (log scale)",
                 "logx": True, "ylabel": "test accuracy (%)", "series": series},
                {"title": "Siamese: few-shot accuracy vs k", "xlabel": "labelled images per class (k)",
                 "ylabel": "test accuracy (%)",
                 "series": {label: ([int(k) for k in ks], *_series([sk[method][k] for k in ks]))
                            for method, label in (("linear", "linear head"), ("anchors", "ordinal anchors"))}}],
               fig_dir / name_eff)
    n = len(s["seeds"])
    return {name_noise: f"Noisy annotators: test accuracy against the share e of flipped train and val outcomes, "
                        f"with and without forward correction (mean ± std over {n} seed(s)).",
            name_eff: f"Data efficiency. Left: every run sees {efficiency_samples(s):,} pairs drawn "
                      f"from a set of the given size (a set larger than that is seen only in part). Right: the "
                      f"Siamese backbone with k labelled images per class (mean ± std over {n} seed(s))."}


NOTES = [
    "Cells: mean ± std over the training seeds; a few-shot cell is, per seed, the mean over the draws of k "
    "labelled train images per class (drawn with the run's seed). Test: the MNIST test split (10,000 images, "
    "20,000 pairs of the run's relation); the best val checkpoint of each run.",
    "Cut-points with 0 labels use no label: a known K, and either equal class proportions (quantiles) or 1-D "
    "k-means, fitted on the train images' scores (never on the test scores).",
    "`same` classification maps each predicted class to a digit by the best one-to-one matching against the test "
    "labels (Hungarian algorithm): similarity finds classes only up to a permutation.",
    "`ge` relational accuracy is three-way (A < B, A > B, tie), so it is not comparable with the two-way `gt` column.",
    "Noise: the flip corrupts the train and val outcomes (val picks the checkpoint), never the test ones. Forward "
    "correction (`--noise-correction given`) trains P_obs = (1 - e) P + e (1 - P) and is told the true e (an "
    "oracle); the Siamese column is 1-shot accuracy of its linear head.",
]


def efficiency_samples(settings: dict) -> int:
    """Pairs seen by each data-efficiency run (the profile's budget unless it names its own)."""
    return parse_count(settings["efficiency"].get("samples", settings["budget"]["samples"]))


def losses_text(res: dict) -> str:
    """Which loss the relation runs trained with, e.g. "symmetric for weak/gt; unconditional for the rest"."""
    by_loss: dict[str, list[str]] = {}
    for key, e in res["relations"].items():
        by_loss.setdefault(e["loss"], []).append(key)
    common = max(by_loss, key=lambda loss: len(by_loss[loss]))
    rare = [f"{loss} for {', '.join(keys)}" for loss, keys in by_loss.items() if loss != common]
    return "; ".join(rare + [f"{common} for {'the rest' if rare else 'every run'}"])


def _size_label(size: str, seen: int) -> str:
    return f"{size} set, ≤{format_count(seen)} distinct seen" if parse_count(size) > seen else size


def _ranker_table(res: dict) -> list[str]:
    r = res["ranker"]
    cut = r["cutpoints"]
    rows = [["pairwise (relational)", fmt(r["relational_accuracy"])],
            ["Spearman rho of the score against the digit", f"{r['spearman_rho']['mean']:.3f} ± {r['spearman_rho']['std']:.3f}"],
            ["cut-points, 0 labels: equal class proportions", fmt(cut.get(shot_name(0, "quantile")))],
            ["cut-points, 0 labels: 1-D k-means", fmt(cut.get(shot_name(0, "kmeans")))],
            *[[f"cut-points, {k}-shot", fmt(cut[k])] for k in cut if "(" not in k]]
    return md_table(["ranker (score s, P(A > B) = sigmoid(s(A) - s(B)))", "test (%)"], rows)


def _relation_table(res: dict) -> list[str]:
    s = res["settings"]["relations"]
    names = {"gt": "`gt` (A > B, ties dropped; the paper)", "ge": "`ge` (ties a third outcome; 3-way)",
             "same": "`same` (same class or not; balanced pairs)"}
    rows = []
    for rel in s["relations"]:
        row = [names.get(rel, rel)]
        for m in s["models"]:
            e = res["relations"][f"{m}/{rel}"]
            cls = e.get("classification_accuracy")
            row.append(fmt(e["relational_accuracy"]) + (f" / {fmt(cls)}" + ("*" if rel == "same" else "") if cls else ""))
        rows.append(row)
    heads = {"weak": "weak: relational / classification", "siamese": "Siamese: relational", "ranker": "ranker: relational"}
    return md_table(["relation", *[heads.get(m, m) for m in s["models"]]], rows)


def _noise_table(res: dict) -> list[str]:
    s = res["settings"]["noise"]
    what = {"weak": "weak classification", "siamese": "Siamese 1-shot"}
    header = ["flip rate e"] + [f"{what.get(m, m)}: none / given" for m in s["models"]] + \
        [f"{ {'siamese': 'Siamese'}.get(m, m)} relational: none / given" for m in s["models"]]

    def pair(m: str, e: float, key: str) -> str:
        given = res["noise"].get(f"{m}/{e:g}/given")
        return fmt(res["noise"][f"{m}/{e:g}/none"][key]) + ("" if given is None else f" / {fmt(given[key])}")

    rows = [[f"{e:g}"] + [pair(m, e, "accuracy") for m in s["models"]] +
            [pair(m, e, "relational_accuracy") for m in s["models"]] for e in s["rates"]]
    return md_table(header, rows)


def _efficiency_tables(res: dict) -> list[str]:
    s = res["settings"]["efficiency"]
    seen = parse_count(s.get("samples", res["settings"]["budget"]["samples"]))
    what = {"weak": ["weak classification (no labels)", "weak relational"],
            "ranker": ["ranker 3-shot cut-points", "ranker relational"]}
    rows = [[_size_label(size, seen)] + [fmt(res["efficiency"][f"{m}/{size}"][k]) for m in s["models"]
                                         for k in ("accuracy", "relational_accuracy")] for size in s["sizes"]]
    sk = res["siamese_k"]
    shots = md_table(["k (labelled images per class)", "Siamese: linear head on the frozen backbone (the paper)",
                      "Siamese: ordinal anchors through the relation head"],
                     [[k, fmt(sk["linear"][k]), fmt(sk["anchors"][k])] for k in sorted(sk["linear"], key=int)])
    return [*md_table(["pair set", *[h for m in s["models"] for h in what.get(m, [m, m])]], rows), "", *shots]


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s = res["settings"]
    b = s["budget"]
    intro = (f"{provenance_line(res)}; MNIST, every run {parse_count(b['samples']):,} pairs seen from the "
             f"{b['pairs']} train pair set (the data-efficiency runs {efficiency_samples(s):,} from sets of the sizes "
             f"shown), `--loss {s['loss']}` ({losses_text(res)}), unlabeled images off, batch 128, Adam lr 1e-3. "
             f"{res['n_runs']} runs, {res['train_time_s_total']:.0f} s of training.")
    figs = [f"![{cap}]({figure_dir}/{name})" for name, cap in res["figures"].items()]
    return "\n".join([intro, "", "**A ranker: one score per image** (test, %)", "", *_ranker_table(res), "",
                      "**Relations** (test accuracy, %)", "", *_relation_table(res), "",
                      "**Noisy annotators**: test accuracy (%) without / with forward correction", "",
                      *_noise_table(res), "", "**Data efficiency** and **few-shot** (test accuracy, %)", "",
                      *_efficiency_tables(res), "", *[f"- {n}" for n in NOTES], "", *figs])
