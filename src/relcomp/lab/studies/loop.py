"""``relcomp reproduce --profile loop-quick``: the judging page with ``--learn``, driven through
its HTTP API by a simulated annotator, as a person would use it.

Per seed and arm: the first ``images`` MNIST train images as PNGs in a folder; ``relcomp annotate
--images DIR --comparisons judged.csv --learn weak --classes 10 [the arm's options]`` in a
process of its own; an oracle (:func:`relcomp.annotate.oracle.simulate`: the labels, which the
server never sees, give each answer) judges ``judgements`` pairs, one every ``pace_s`` seconds.
Afterwards each round's model (an ordinary run folder) is scored on the first ``test_images``
MNIST test images, which the page never showed (held out), and on the page's own images; beside
it the agreement the page showed for that model (its prediction of the judgements made while it
served, recorded before each was written). Rounds come after 20, 40, 80 ... judgements.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ... import embed, save_features
from ...annotate.oracle import call, simulate
from ...data.mnist import load_mnist
from ...inference import Predictor
from ...plots import plot_lines
from ...utils import write_json_atomic
from ..common import fmt, log, md_table, pct, provenance_line, study_head, write_study
from ..harness import Harness

TICKS = [20, 40, 80, 160, 320, 640, 1280]  # where rounds are due


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """The images as PNGs under ``root/imgs``; their labels by file name (kept from the server)."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    names = {}
    for k, (img, label) in enumerate(zip(images, labels)):
        name = f"{k:05d}.png"
        if not (root / "imgs" / name).exists():
            Image.fromarray(img).save(root / "imgs" / name)
        names[name] = int(label)
    return names


def serve(root: Path, seed: int, options: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "relcomp", "annotate", "--images", str(root / "imgs"), "--comparisons",
           str(root / "judged.csv"), "--port", "0", "--seed", str(seed), "--learn", "weak", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if "open http://" not in line:
        raise RuntimeError(f"relcomp annotate did not start: {line}{proc.stderr.read()[-500:]}")
    return proc, line.split("open ")[1].split()[0]


def drive(root: Path, labels: dict[str, int], prof: dict, seed: int, options: list[str]) -> dict[str, Any]:
    """Judge through the page until ``judgements``, wait for the rounds those call for (after 20, 40,
    80 ... judgements), stop the server."""
    proc, url = serve(root, seed, options)
    total = int(prof["judgements"])
    expected = int(np.floor(np.log2(total / 20))) + 1
    try:
        done = call(url, "api/status")[1]["judged"]
        r = simulate(url, labels, total - done, seed=seed, pause_s=float(prof["pace_s"]))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = call(url, "api/status")[1]
            if status["version"] >= expected and not status["training"] or status["error"]:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    return {"latency": {k: r[k] for k in ("next_ms_p50", "next_ms_p99")}, "history": status["history"]}


def score(round_dir: Path, images: np.ndarray, labels: np.ndarray) -> float:
    p = Predictor(round_dir, device="cpu")
    x = pixels(images) if p.takes_features else images
    return float((p.outputs(x).argmax(1).numpy() == labels).mean())


def pixels(images: np.ndarray) -> np.ndarray:
    """The vectors `relcomp embed --with pixels` writes (:func:`relcomp.embed`), for images held as
    an array (the test images): each image's pixels in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def with_features(root: Path, options: list[str]) -> list[str]:
    """An arm's options with ``PIXELS`` replaced by a features file of the page's images (their
    pixels, ``relcomp embed --with pixels --images DIR``): the page's rounds on features."""
    if "PIXELS" not in options:
        return options
    path = root / "pixels.npz"
    if not path.exists():
        items, _ = embed("pixels", images=root / "imgs")
        save_features(path, items.names, items.images)
    return [str(path) if x == "PIXELS" else x for x in options]


def measure(root: Path, prof: dict, seed: int, options: list[str], mnist) -> dict[str, Any]:
    """One seed of one arm: the curve of its rounds (cached in ``root/curve.json``)."""
    cached = root / "curve.json"
    if cached.exists():
        return json.loads(cached.read_text())
    n, t = int(prof["images"]), int(prof["test_images"])
    labels = write_folder(root, mnist.train.images[:n], mnist.train.labels[:n])
    drove = drive(root, labels, prof, seed, with_features(root, options))
    agreement = {h["version"]: h["agreement"] for h in drove["history"]}
    rounds = [json.loads(x) for x in (root / "judged.csv.rounds" / "rounds.jsonl").read_text().splitlines()]
    curve = []
    for r in rounds:
        folder = root / "judged.csv.rounds" / f"round-{r['version']:03d}"
        curve.append({"version": r["version"], "trained_on": r["trained_on"], "round_s": r["seconds"],
                      "test_cls_acc": score(folder, mnist.test.images[:t], mnist.test.labels[:t]),
                      "page_cls_acc": score(folder, mnist.train.images[:n], mnist.train.labels[:n]),
                      "agreement": agreement.get(r["version"])})
    out = {"curve": curve, **drove["latency"]}
    write_json_atomic(cached, out)
    return out


def run(prof: dict, h: Harness, data_dir: str | None = None) -> dict[str, Any]:
    """Run a ``kind = "loop"`` profile; write results.json, report.md and report.html into ``h.out``."""
    t0, mnist = time.perf_counter(), load_mnist(data_dir)
    arms: dict[str, list[str]] = {name: [str(x) for x in opts] for name, opts in prof["arms"].items()}
    runs = {}
    for name, options in arms.items():
        for seed in prof["seeds"]:
            log(f"loop: arm {name}, seed {seed}")
            runs[f"{name}/s{seed}"] = measure(h.out / "loop" / f"{name}-s{seed}", prof, seed, options, mnist)
    res = {**study_head("loop", prof, ("seeds", "images", "test_images", "judgements", "pace_s"), arms=arms),
           "runs": runs, "cells": cells(runs, arms, prof["seeds"]),
           "n_runs": sum(len(r["curve"]) for r in runs.values()),
           "train_time_s_total": round(sum(c["round_s"] for r in runs.values() for c in r["curve"]), 1),
           "wall_time_s": round(time.perf_counter() - t0, 1), "figures": {}}
    return write_study(res, h.out, "relcomp loop", markdown)


def cells(runs: dict, arms: dict, seeds: list[int]) -> dict[str, list[dict]]:
    """Per arm, per round index: the seeds' mean judgements trained on, test and page accuracy and agreement."""
    out = {}
    for name in arms:
        curves = [runs[f"{name}/s{s}"]["curve"] for s in seeds]
        rows = []
        for k in range(min(len(c) for c in curves)):
            at = [c[k] for c in curves]
            rows.append({"round": k + 1, "trained_on": round(float(np.mean([x["trained_on"] for x in at]))),
                         "round_s": pct([x["round_s"] for x in at], scale=1),
                         "test_cls_acc": pct([x["test_cls_acc"] for x in at]),
                         "page_cls_acc": pct([x["page_cls_acc"] for x in at]),
                         "agreement": pct([x["agreement"] for x in at if x["agreement"] is not None])})
        out[name] = rows
    return out


def markdown(res: dict, figure_dir: str = "figures") -> str:
    s = res["settings"]
    lat = [r["next_ms_p99"] for r in res["runs"].values()]
    intro = (f"{provenance_line(res)}. {s['images']:,} MNIST train images on the page; an oracle judges "
             f"{s['judgements']:,} pairs, one every {s['pace_s']} s; each round's model scored on the first "
             f"{s['test_images']:,} MNIST test images (never on the page). Next pair at the 99th percentile: "
             f"{max(lat):.0f} ms at most over the runs (target 100 ms).")
    lines = [intro, ""]
    for name, rows in res["cells"].items():
        opts = " ".join(s["arms"][name]) or "(the defaults)"
        lines += [f"`relcomp annotate --learn weak {opts}`:", ""]
        lines += md_table(["round", "judgements trained on", "round time (s)", "held-out test classification (%)",
                           "classification of the page's images (%)", "agreement shown (%)"],
                          [[str(r["round"]), str(r["trained_on"]), fmt(r["round_s"]), fmt(r["test_cls_acc"]),
                            fmt(r["page_cls_acc"]), fmt(r["agreement"])] for r in rows])
        lines.append("")
    lines.append(f"![Held-out MNIST test classification and the agreement the page showed, mean ± std over "
                 f"{len(s['seeds'])} seeds, against the judgements each round trained on.]({figure_dir}/loop.png)")
    return "\n".join(lines)


def figures(res: dict, fig_dir) -> dict[str, str]:
    """Held-out classification and the agreement shown, against the judgements a round trained on."""
    series_acc, series_agree = {}, {}
    for name, rows in res["cells"].items():
        xs = [r["trained_on"] for r in rows]
        series_acc[name] = (xs, [r["test_cls_acc"]["mean"] for r in rows], [r["test_cls_acc"]["std"] for r in rows])
        pts = [(r["trained_on"], r["agreement"]) for r in rows if r["agreement"].get("mean") is not None]
        series_agree[name] = ([x for x, _ in pts], [a["mean"] for _, a in pts], [a["std"] for _, a in pts])
    panels = [{"title": "held-out test classification", "xlabel": "judgements the round trained on",
               "ylabel": "accuracy (%)", "logx": True, "series": series_acc, "xticks": TICKS},
              {"title": "agreement the page showed", "xlabel": "judgements the round trained on",
               "ylabel": "agreement (%)", "logx": True, "series": series_agree, "xticks": TICKS}]
    Path(fig_dir).mkdir(parents=True, exist_ok=True)
    plot_lines(panels, Path(fig_dir) / "loop.png")
    return {"loop.png": f"The judging page's rounds with an oracle annotator: mean ± std over {len(res['settings']['seeds'])} "
                        "seeds against the judgements each round trained on."}
