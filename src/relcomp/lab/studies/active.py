"""``relcomp reproduce --profile active-quick``: annotation rounds with a simulated annotator on MNIST.

The annotator is an oracle that reads the hidden train labels. Asked "is A greater than B?" it
answers 1 when label(A) > label(B) and 0 otherwise (a tie is a "no", and costs a question like any
other), and flips a share ``flip_rate`` of its answers when the profile asks for noise.

For every seed, budget B and setting of ``--unlabeled``, round 0 trains the weak model on B/4
random pairs (the same pairs for every strategy and both settings). Then, per strategy, each
round asks ``relcomp suggest`` for the next pairs (never a judged one), has the oracle judge
them, appends them to the comparisons file and trains from the previous round's weights
(``--init-from``), until B pairs are judged (``schedule``: the share judged after each round).
The last round's model is evaluated on val (to choose the strategy) and on the MNIST test split.

Every training run is a cached study run (``<out>/runs/<tag>-<hash>``) and every round's
comparisons file is written once (``<out>/pairs``), so a rerun reuses what finished and continues
what did not.
"""
from __future__ import annotations

import csv
import html
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TrainConfig
from ...data.mnist import load_mnist
from ...data.pairs import Pairs
from ...data.sources import MnistSource
from ...errors import ConfigError
from ...models import model_class
from ...plots import plot_lines
from ...run import read_metrics
from ...suggest import STRATEGIES, Suggester, candidate_pairs
from ...utils import atomic_path, format_count, parse_count, write_json_atomic, write_text_atomic
from ..common import (
    fmt,
    html_figures,
    html_head,
    html_table,
    machine_info,
    md_table,
    mnist_subsets,
    pct,
    provenance,
)
from ..harness import Harness

ARMS = {"auto": "with unlabeled images", "off": "pairs only", "balance": "balance term",
        "clusters": "named clusters"}


def oracle(a: np.ndarray, b: np.ndarray, labels: np.ndarray, flip_rate: float, rng: np.random.Generator) -> np.ndarray:
    """The simulated annotator's answers to "is label(a) > label(b)?" (1 / 0), a share flipped."""
    z = (labels[a] > labels[b]).astype(np.int64)
    if flip_rate > 0:
        z = np.where(rng.random(len(z)) < flip_rate, 1 - z, z)
    return z


def write_judged(path: Path, rows: list[tuple[int, int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "outcome"])
        w.writerows(rows)


def read_judged(path: Path) -> list[tuple[int, int, int]]:
    with open(path, newline="") as f:
        return [(int(r["a"]), int(r["b"]), int(r["outcome"])) for r in csv.DictReader(f)]


class ActiveStudy:
    """Runs the rounds of one profile; trains (or reuses) runs through the one training loop."""

    def __init__(self, prof: dict, h: Harness, data_dir: str | None):
        self.prof, self.h, self.data_dir = prof, h, data_dir
        self.out, self.device = h.out, h.device
        d = prof.get("data", {})
        self.subset = d.get("train_subset")
        labels = load_mnist(data_dir).train.labels
        self.labels = labels[: self.subset] if self.subset else labels
        self.flip_rate = float(prof.get("flip_rate", 0.0))
        self.tag = f"flip{self.flip_rate:g}-" if self.flip_rate else ""  # pair files and runs of a noisy annotator

    def config(self, pairs: Path, seed: int, unlabeled: str, samples: str, init_from: str | None) -> TrainConfig:
        d, t = self.prof.get("data", {}), self.prof["train"]
        source = MnistSource(pairs=str(pairs), **mnist_subsets(d), data_dir=self.data_dir)
        eval_every = parse_count(t.get("eval_every", samples))
        # The "auto" arm ran when auto was the balance term; pinned so that a rerun means what the
        # committed results say (auto groups the images at these budgets now).
        return TrainConfig(model="weak", loss=self.prof.get("loss", "auto"), samples=parse_count(samples),
                           eval_every=eval_every, seed=seed,
                           unlabeled="balance" if unlabeled == "auto" else unlabeled,
                           unlabeled_batch=int(t.get("unlabeled_batch", 64)),
                           augment=t.get("augment", "off"), init_from=init_from, device=self.device,
                           data=source)

    def train_round(self, tag: str, pairs: Path, seed: int, unlabeled: str, first: bool,
                    init_from: str | None, last: bool = False) -> str:
        cfg = self.config(pairs, seed, unlabeled, self.samples(first, len(read_judged(pairs)), last), init_from)
        folder, _ = self.h.train(cfg, tag, note=f" ({len(read_judged(pairs)):,} pairs)")
        return str(folder)

    def samples(self, first: bool, n_pairs: int, last: bool = False) -> str:
        """Pairs seen by a round: the profile's ``first_samples`` / ``round_samples``, or with
        ``first_steps`` / ``round_steps`` that many steps of min(batch, pairs) pairs (a round on 20
        pairs takes as many steps as one on 200; the images nobody compared fill every step).
        ``last_steps``, where given, is the length of the last round: the one whose model is
        measured, while the earlier rounds only choose the next questions."""
        t = self.prof["train"]
        key = "last_steps" if last and "last_steps" in t else "first_steps" if first else "round_steps"
        steps = t.get(key)
        if steps is None:
            return str(t["first_samples" if first else "round_samples"])
        return str(int(steps) * min(model_class("weak").batch_size, n_pairs))

    def first_pairs(self, budget: int, seed: int) -> Path:
        """Round 0's comparisons: a quarter of the budget, random pairs, judged by the oracle."""
        path = self.out / "pairs" / f"{self.tag}b{budget}-s{seed}-round0.csv"
        if not path.exists():
            n = max(1, round(budget * self.prof["schedule"][0]))
            a, b = candidate_pairs(len(self.labels), n, np.empty(0, np.int64), seed=10_000 + seed)
            z = oracle(a, b, self.labels, self.flip_rate, np.random.default_rng(20_000 + seed))
            write_judged(path, list(zip(a.tolist(), b.tolist(), z.tolist())))
        return path

    def next_pairs(self, run: str, judged: Path, path: Path, n: int, strategy: str, seed: int) -> Path:
        """``judged`` plus ``n`` pairs that ``suggest`` picks from ``run`` and the oracle judges, asked
        ``ask_batch`` at a time (default: all at once): each batch's questions see the answers to the
        batches before it, as on the page whose queue is refilled (no training in between)."""
        if path.exists():
            return path
        rows = read_judged(judged)
        total = len(rows) + n
        s = Suggester(run, self.device, seed)
        rng = np.random.default_rng(seed)
        step = int(self.prof.get("ask_batch", n))
        for start in range(0, n, step):
            i, j, z = (np.asarray(c, dtype=np.int64) for c in zip(*rows, strict=True))
            a, b, _, _ = s.ask(min(step, total - len(rows)), strategy, Pairs(i, j, z), seed=seed + start)
            rows += list(zip(a.tolist(), b.tolist(), oracle(a, b, self.labels, self.flip_rate, rng).tolist()))
        write_judged(path, rows)
        return path

    def chain(self, budget: int, seed: int, unlabeled: str, strategy: str, first_run: str) -> dict[str, Any]:
        """Rounds 1.. of one strategy from round 0's run; the last run's val and test numbers."""
        sched = self.prof["schedule"]
        run, judged = first_run, self.first_pairs(budget, seed)
        for k, share in enumerate(sched[1:], 1):
            n = round(budget * share) - len(read_judged(judged))
            path = self.out / "pairs" / f"{self.tag}b{budget}-s{seed}-{unlabeled}-{strategy}-round{k}.csv"
            judged = self.next_pairs(run, judged, path, n, strategy, seed=1000 * seed + k)
            run = self.train_round(f"{self.tag}b{budget}-s{seed}-{unlabeled}-{strategy}-r{k}", judged, seed, unlabeled,
                                   first=False, init_from=run, last=k == len(sched) - 1)
        return self.measure(run, len(read_judged(judged)))

    def measure(self, run: str, n_judged: int) -> dict[str, Any]:
        ev = self.h.evaluate(run)
        last = read_metrics(run)[-1]
        return {"folder": run, "judged": n_judged, "val_cls_acc": last["val_cls_acc"],
                "val_rel_acc": last["val_rel_acc"], "test_cls_acc": ev["classification_accuracy"],
                "test_rel_acc": ev["relational_accuracy"]}


def arms(s: dict, unlabeled: str) -> list[str]:
    """The strategies run with ``unlabeled``: the profile's (or results' settings') strategies but
    those its ``skip`` list names as ``unlabeled/strategy``."""
    return [x for x in s["strategies"] if f"{unlabeled}/{x}" not in s.get("skip", [])]


def check_profile(prof: dict) -> None:
    """Raises: ConfigError on a profile this study cannot run."""
    for key in ("seeds", "budgets", "schedule", "strategies", "unlabeled", "train"):
        if key not in prof:
            raise ConfigError(f"profile {prof['name']}: missing {key}")
    sched, flip = prof["schedule"], prof.get("flip_rate", 0.0)
    if not 0 <= flip < 0.5:
        raise ConfigError(f"--flip-rate must be in [0, 0.5), got {flip}")
    if not (0 < sched[0] and sched == sorted(sched) and sched[-1] == 1.0):
        raise ConfigError(f"profile {prof['name']}: schedule must rise from above 0 to 1.0, got {sched}")
    ask = prof.get("ask_batch", 1)
    if not (isinstance(ask, int) and not isinstance(ask, bool) and ask > 0):
        raise ConfigError(f"profile {prof['name']}: ask_batch must be a positive whole number, got {ask!r}")
    bad = [s for s in prof["strategies"] if s not in STRATEGIES] + [u for u in prof["unlabeled"] if u not in ARMS]
    if bad:
        raise ConfigError(f"profile {prof['name']}: unknown strategy or unlabeled setting {bad}")


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run the rounds of a ``kind = "active"`` profile; write results.json, report.md, report.html
    and figures/ into ``out``; return the results."""
    check_profile(prof)
    t0, out = time.perf_counter(), h.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    st = ActiveStudy(prof, h, data_dir)
    cells: dict[str, list[dict]] = {}
    for seed in prof["seeds"]:
        for budget in (parse_count(str(b)) for b in prof["budgets"]):
            first = st.first_pairs(budget, seed)
            for unl in prof["unlabeled"]:
                r0 = st.train_round(f"{st.tag}b{budget}-s{seed}-{unl}-r0", first, seed, unl, first=True, init_from=None)
                for strategy in arms(prof, unl):
                    cells.setdefault(f"{budget}/{unl}/{strategy}", []).append(
                        st.chain(budget, seed, unl, strategy, r0))
    res = summarise(prof, cells)
    res.update(provenance(prof), machine=machine_info(), wall_time_s=round(time.perf_counter() - t0, 1), n_runs=len(h.train_times),
               train_time_s_total=h.train_time_total)
    res["figures"] = figures(res, out / "figures")
    res["console"] = console(res)
    write_json_atomic(out / "results.json", {k: v for k, v in res.items() if k != "console"})
    write_reports(res, out)
    return res


def summarise(prof: dict, cells: dict[str, list[dict]]) -> dict[str, Any]:
    """Mean ± std over seeds per (budget, unlabeled, strategy), and the strategy val picks per budget."""
    rows = {}
    for key, runs in cells.items():
        budget, unl, strategy = key.split("/")
        rows[key] = {"budget": int(budget), "unlabeled": unl, "strategy": strategy,
                     "seeds": [r["folder"] for r in runs], "judged": [r["judged"] for r in runs],
                     **{m: pct([r[m] for r in runs]) for m in ("val_cls_acc", "val_rel_acc", "test_cls_acc",
                                                                "test_rel_acc")}}
    chosen = {}
    for budget in sorted({r["budget"] for r in rows.values()}):
        best = max((r for r in rows.values() if r["budget"] == budget), key=lambda r: r["val_cls_acc"]["mean"])
        chosen[str(budget)] = f"{budget}/{best['unlabeled']}/{best['strategy']}"
    return {"kind": "active", "profile": prof["name"], "description": prof.get("description", ""),
            "settings": {k: prof[k] for k in ("seeds", "budgets", "schedule", "strategies", "unlabeled", "train")}
            | {"flip_rate": prof.get("flip_rate", 0.0), "ask_batch": prof.get("ask_batch"), "data": prof.get("data", {}), "skip": prof.get("skip", []),
               "figure": prof.get("figure", "active.png"), "targets": prof.get("targets", TARGETS)},
            "cells": rows, "chosen_on_val": chosen}


def table(res: dict) -> tuple[list[str], list[list[str]]]:
    s = res["settings"]
    header = ["budget", *[f"{strat}, {ARMS[u]}" for u in s["unlabeled"] for strat in arms(s, u)]]
    rows = []
    for b in sorted({c["budget"] for c in res["cells"].values()}):
        row = [format_count(b)]
        for u in s["unlabeled"]:
            for strat in arms(s, u):
                c = res["cells"][f"{b}/{u}/{strat}"]
                mark = " ◆" if res["chosen_on_val"][str(b)] == f"{b}/{u}/{strat}" else ""
                row.append(f"{fmt(c['test_cls_acc'])} / {fmt(c['test_rel_acc'])}{mark}")
        rows.append(row)
    return header, rows


def figures(res: dict, fig_dir: Path) -> dict[str, str]:
    """Draw the study's figure from its results into ``fig_dir``; return {file name: caption}."""
    s = res["settings"]
    budgets = sorted({c["budget"] for c in res["cells"].values()})
    panels = []
    for metric, title in (("test_cls_acc", "test classification (no labels)"),
                          ("test_rel_acc", "test relational accuracy")):
        series = {}
        for u in s["unlabeled"]:
            for strat in arms(s, u):
                cs = [res["cells"][f"{b}/{u}/{strat}"][metric] for b in budgets]
                name = f"{strat}, {ARMS[u]}".replace("pairs only", "without unlabeled")
                series[name] = (budgets, [c["mean"] for c in cs], [c["std"] for c in cs])
        panels.append({"title": title, "xlabel": "comparisons judged", "ylabel": "accuracy (%)", "logx": True,
                       "xticks": budgets, "series": series})
    Path(fig_dir).mkdir(parents=True, exist_ok=True)
    name = s.get("figure", "active.png")
    plot_lines(panels, Path(fig_dir) / name)
    return {name: f"Weak model on MNIST after annotation rounds with a simulated annotator: mean ± std "
                          f"over {len(s['seeds'])} seeds against the comparisons judged."}


def console(res: dict) -> str:
    header, rows = table(res)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["", "Test classification / relational accuracy (%), mean ± std over seeds; ◆ chosen on val",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows])


def intro(res: dict) -> str:
    m, s, t = res["machine"], res["settings"], res["settings"]["train"]
    cmd = f"`{res['command']}`, " if res.get("command") else ""
    return (f"{cmd}relcomp {res.get('relcomp', '?')}. Machine: {m['cpu']}, {m['cores']} cores{', GPU ' + m['gpu'] if m['gpu'] else ''}; torch {m['torch']}. "
            f"Seeds {s['seeds']}; rounds judge {s['schedule']} of each budget (the first share at random); "
            f"round 0 trains {rounds_text(t, True)}, each later round {rounds_text(t, False)} from the "
            f"previous round's weights{last_text(t)}; unlabeled batch {t.get('unlabeled_batch', 64)}, augment "
            f"{t.get('augment', 'off')}; annotator flip rate {s['flip_rate']:g}{ask_text(s)}. {res['n_runs']} training runs; "
            f"wall time {res['wall_time_s']:.0f} s ({res['train_time_s_total']:.0f} s of training, including runs "
            "reused from an earlier invocation).")


def ask_text(s: dict) -> str:
    if not s.get("ask_batch"):
        return ""
    return f", questions asked {s['ask_batch']} at a time (each batch chosen after the answers before it)"


def rounds_text(t: dict, first: bool) -> str:
    key = "first" if first else "round"
    if f"{key}_steps" in t:
        return f"{t[key + '_steps']} steps"
    return f"on {t[key + '_samples']}" + (" pairs seen" if first else "")


def last_text(t: dict) -> str:
    return f" (the last, whose model is measured, {t['last_steps']} steps)" if "last_steps" in t else ""


TITLE = "Test classification / relational accuracy (%), mean ± std over seeds; ◆: the setting chosen on val"
# test classification (%), mean of 3 seeds, that the study is judged by (a profile's [targets] replace them)
TARGETS = {"1000": 95.0, "5000": 97.0}


def verdicts(res: dict) -> list[str]:
    """What the measured cells say about the targets, in words computed from the numbers."""
    cells, s = res["cells"], res["settings"]
    lines = []
    for budget, target in s.get("targets", TARGETS).items():
        budget = int(budget)
        key = res["chosen_on_val"].get(str(budget))
        if key:
            c = cells[key]["test_cls_acc"]
            lines.append(f"{format_count(budget)} comparisons: the setting chosen on val ({key.split('/', 1)[1]}) "
                         f"reaches {fmt(c)}% test classification; target {target:g}%: "
                         f"{'met' if c['mean'] >= target else 'missed'}.")
    for u in s["unlabeled"]:
        if "random" not in arms(s, u):
            continue
        for strat in (x for x in arms(s, u) if x != "random"):
            diffs = []
            for b in sorted({c["budget"] for c in cells.values()}):
                d = cells[f"{b}/{u}/{strat}"]["test_cls_acc"]["mean"] - cells[f"{b}/{u}/random"]["test_cls_acc"]["mean"]
                diffs.append(f"{format_count(b)} {d:+.1f}")
            lines.append(f"{strat} minus random, {ARMS[u]} (test classification, points): {', '.join(diffs)}.")
    return lines


def markdown(res: dict, figure_dir: str = "figures") -> str:
    """The study's tables and findings as markdown (report.md, and the README through ``relcomp report``)."""
    header, rows = table(res)
    figs = [f"![{caption}]({figure_dir}/{name})" for name, caption in res["figures"].items()]
    return "\n".join([intro(res), "", TITLE + ":", "", *md_table(header, rows), "",
                      *[f"- {v}" for v in verdicts(res)], "", *figs])


def write_reports(res: dict, out: Path) -> None:
    header, rows = table(res)
    md = [f"# relcomp annotation rounds: profile `{res['profile']}`", "", res["description"], "", markdown(res)]
    page = html_head(f"relcomp annotation rounds: {res['profile']}") + [
        f"<h1>relcomp annotation rounds: <code>{html.escape(res['profile'])}</code></h1>",
        f"<p>{html.escape(res['description'])}</p><p>{html.escape(intro(res))}</p>",
        f"<h2>{html.escape(TITLE)}</h2>" + html_table(header, rows),
        "<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts(res)) + "</ul><h2>Figures</h2>",
        *html_figures(res["figures"], out), "</body></html>"]
    write_text_atomic(out / "report.md", "\n".join(md))
    write_text_atomic(out / "report.html", "\n".join(page))
