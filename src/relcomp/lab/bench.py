"""``relcomp bench``: measured speed and size figures, never assumed ones.

Measures, in one process on this machine: the matrix peak (fp32 and bf16 matmul), training
throughput of the relational models on a *naive* path written as the paper's original code and on
relcomp's fast path (:mod:`relcomp.lab.throughput`: the paths, timed in interleaved windows), the
model FLOP utilisation, the pair store's size, and time-to-accuracy of real training runs.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..callbacks import StopWhen
from ..config import TrainConfig
from ..data.mnist import load_mnist
from ..data.pairs import load_pairs, make_pairs, save_pairs
from ..data.sources import MnistSource
from ..engine import train
from ..fewshot import fewshot_accuracy
from ..models import MODELS
from ..utils import keep_freed_memory, resolve_precision
from .common import busy_cpu_warning
from .throughput import ABLATIONS, WINDOW_S, WINDOWS, best_and_spread, flops_per_pair, time_paths

TARGETS = {"speedup_vs_naive": 3.0, "mfu": 0.5, "pair_store_bytes_5m": 64_000_000, "time_to_98_weak_s": 120.0,
           "unlabeled_slowdown": 1.5, "suggest_1000_s": 15.0}
TIME_RUNS = 3  # runs of each time-to-accuracy figure; the fastest is reported (two left the capped Siamese run 15% apart)


# ---------------------------------------------------------------------------------------------
# Matrix peak

def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype``, best of repeated timings."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# FLOP per cycle and core where the core is known, by (vendor, family): fp32 FMA and bf16 dot
# products. AMD family 25 (Zen 3/4): two 256-bit FMA pipes (Zen 4 runs AVX-512 on them in two
# halves): 2 x 8 lanes x 2 = 32 fp32 FLOP; a bf16 dot product does twice the work per lane: 64.
# Family 26 (Zen 5): 512-bit pipes, twice that. Other CPUs: not derived (None).
NOMINAL_FLOP_PER_CYCLE = {("AuthenticAMD", 25): (32, 64, "AMD family 25 (Zen 3/4): 2 x 256-bit FMA pipes"),
                          ("AuthenticAMD", 26): (64, 128, "AMD family 26 (Zen 5): 2 x 512-bit FMA pipes")}


def cpu_facts(text: str | None = None) -> dict[str, Any]:
    """Vendor, family and clock (MHz) of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    facts: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("vendor_id", "cpu family", "cpu MHz") and key not in facts:
            facts[key] = value
    return facts


def nominal_peak(cores: int | None = None, facts: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The CPU's nominal peak, cores x clock x FLOP/cycle, with what it assumes; None where the
    core is not in :data:`NOMINAL_FLOP_PER_CYCLE` or the clock is unknown. The clock is the one
    /proc/cpuinfo reports (under a hypervisor often the base clock: a core that boosts above it
    beats this "peak", and the MFU against it is then an overestimate)."""
    facts = cpu_facts() if facts is None else facts
    try:
        key, mhz = (facts["vendor_id"], int(facts["cpu family"])), float(facts["cpu MHz"])
    except (KeyError, ValueError):
        return None
    if key not in NOMINAL_FLOP_PER_CYCLE:
        return None
    fp32, bf16, basis = NOMINAL_FLOP_PER_CYCLE[key]
    cores = cores or os.cpu_count() or 1
    return {"cores": cores, "mhz": mhz, "fp32_flop_per_cycle": fp32, "bf16_flop_per_cycle": bf16, "basis": basis,
            "gflops_fp32": round(cores * mhz * fp32 / 1e3, 1), "gflops_bf16": round(cores * mhz * bf16 / 1e3, 1)}


# ---------------------------------------------------------------------------------------------
# Suggest

def bench_suggest(data_dir: str | None, n: int = 1_000, train_subset: int | None = None, repeats: int = 3) -> float:
    """Seconds for `relcomp suggest RUN --n 1000` over the 50k MNIST train images (or the first
    ``train_subset``; a briefly trained weak run, validated on 1,000 val images; the time does not
    depend on how well it is trained): the fastest of ``repeats`` (one timing moved 10% between
    two benches back to back)."""
    from ..suggest import suggest

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(model="weak", samples=1_024, eval_every=1_024, progress=False,
                          data=MnistSource(pairs="50k", val_subset=1_000, val_pairs=1_000, train_subset=train_subset,
                                           data_dir=data_dir))
        train(cfg, Path(d) / "run")
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            suggest(Path(d) / "run", n, strategy="uncertainty")
            times.append(time.perf_counter() - t)
        return round(min(times), 2)


# ---------------------------------------------------------------------------------------------
# Pair store

def pair_labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 10, 50_000)  # 50k MNIST-like labels: the sampler sees only labels


def pair_gen_s(n: int, seed: int = 42) -> float:
    """Seconds to sample ``n`` pairs once."""
    labels = pair_labels()
    t = time.perf_counter()
    make_pairs(labels, n, seed)
    return time.perf_counter() - t


class SpeedProbes:
    """The machine's own speed, a matmul peak timed beside everything the bench times: at its start
    (before and after the pair store and `suggest`), before each model's paths and after every round
    of their windows ("throughput:weak" ...), and before and after each time-to-accuracy run. The VM's speed
    moves over minutes (two benches back to back: a bf16 peak of 2,375 and 2,716 GFLOP/s, each the
    best of its samples, and every training figure faster in the second), so each figure keeps the
    speed it was taken at, and ``relcomp bench --compare`` tells a figure that moved with the
    machine from one that moved on its own. The matmul is outside relcomp's code: a slower relcomp
    cannot pass for a slower machine."""

    def __init__(self, prec: str, seconds: float):
        self.dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if prec == "bf16" else {})}
        self.seconds = seconds
        self.samples: list[dict[str, Any]] = []

    def sample(self, phase: str, seconds: float | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {"phase": phase}
        for name, dtype in self.dtypes.items():
            row[name] = round(matmul_gflops(dtype, seconds=seconds or self.seconds), 1)
        self.samples.append(row)
        return row

    def peaks(self) -> dict[str, list[float]]:
        return {name: [row[name] for row in self.samples] for name in self.dtypes}


def pair_store_figures(n: int, seed: int, repeats: int) -> dict[str, Any]:
    """The pair store's figures, measured in the process this runs in: the fastest of ``repeats``
    samplings of ``n`` pairs, then one save and one load."""
    gen_s = min(pair_gen_s(n, seed) for _ in range(repeats))
    pairs = make_pairs(pair_labels(), n, seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.npz"
        t = time.perf_counter()
        save_pairs(path, pairs)
        save_s = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        load_pairs(path)
        load_s = time.perf_counter() - t
    return {"pairs": n, "pair_gen_s": round(gen_s, 3), "pair_save_s": round(save_s, 3),
            "pair_load_s": round(load_s, 3), "pair_store_bytes": size,
            "pair_images_bytes_uint8": n * 2 * 28 * 28, "pair_images_bytes_float32": n * 2 * 28 * 28 * 4}


def bench_pair_store(n: int = 5_000_000, seed: int = 42, repeats: int = 7) -> dict[str, Any]:
    """Sample ``n`` pairs from 50k MNIST-like labels (the fastest of ``repeats``), save and load
    them, and measure time and bytes, in a fresh process as `relcomp data pairs` does: this 0.2-s
    step is mostly allocation, and in the bench's own process, its heap shaped by glibc settings
    and what ran before, it took 0.15-0.25 s from one bench to the next; alone, 0.185-0.212 s."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(pair_store_figures, (n, seed, repeats))


# ---------------------------------------------------------------------------------------------
# Time to accuracy: real training runs, stopped when the target is reached.

def time_to_accuracy(model_name: str, target: float, cap: int, eval_every: int, mnist, data_dir=None,
                     draws: int = 10, val_subset: int | None = None) -> dict[str, Any]:
    """Train ``model_name`` on the 50k pairs until its val metric reaches ``target`` (weak: val
    classification accuracy with no labels; Siamese: mean 1-shot val accuracy over ``draws``
    draws) or ``cap`` pairs, validating on the first ``val_subset`` val images (all: None). Times
    count training steps only, not the evaluations."""
    hit: dict[str, Any] = {"reached": False, "time_s": None, "samples": None, "best": 0.0}

    def reached(model, row) -> bool:
        if MODELS[model_name].classifies:  # its own classes, no labels used
            acc = row["val_cls_acc"]
        else:
            val = slice(0, val_subset)
            accs, _ = fewshot_accuracy(model, mnist.train.images, mnist.train.labels, mnist.val.images[val],
                                       mnist.val.labels[val], shots=[1], draws=draws,
                                       precision=resolve_precision("auto", torch.device("cpu")))[1]
            acc = float(accs.mean())
        hit["best"] = max(hit["best"], acc)
        hit.setdefault("curve", []).append((row["samples"], round(row["train_time_s"], 2), round(acc, 4)))
        if acc >= target:
            hit.update(reached=True, time_s=row["train_time_s"], samples=row["samples"])
            return True
        return False

    with tempfile.TemporaryDirectory() as d:
        source = MnistSource(pairs="50k", data_dir=data_dir, val_subset=val_subset,
                             val_pairs=20_000 if val_subset is None else 2 * val_subset)
        cfg = TrainConfig(model=model_name, samples=cap, eval_every=eval_every, progress=False, data=source)
        summary = train(cfg, Path(d) / "run", callbacks=[StopWhen(reached)])
    hit["train_time_s"] = round(summary["train_time_s"], 2)
    hit.update(target=target, cap_samples=cap)
    return hit


# ---------------------------------------------------------------------------------------------

def model_paths(model_name: str, prec: str, ablations: bool) -> dict[str, dict]:
    """The paths timed for one model (name -> :func:`~relcomp.lab.throughput.path_step` keywords):
    naive, then each part of the fast path added in turn ("fast" is what `relcomp train` runs by
    default), the weak model's default class-balance term, and the ablations when asked."""
    fast = dict(path="fast", precision=prec, channels_last=True)
    paths = {"naive": dict(path="naive"), "naive_bf16": dict(path="naive", precision="bf16"),
             "gather_fp32": dict(path="fast", precision="fp32"), "gather_bf16": dict(path="fast", precision="bf16"),
             "fast": fast}
    if prec != "bf16":  # an emulated bf16 says nothing about relcomp
        del paths["naive_bf16"], paths["gather_bf16"]
    if model_name == "weak":
        paths["with_unlabeled"] = dict(fast, unlabeled=True)
    if ablations:
        paths.update({f"ablation:{name}": dict(fast, batch=256 if name == "batch_256" else 128,
                                               ablation=None if name == "batch_256" else name) for name in ABLATIONS})
    return {name: dict(model_name=model_name, **kw) for name, kw in paths.items()}


def measure_throughput(r: dict[str, Any], steps: int, images: np.ndarray, labels: np.ndarray, prec: str,
                       ablations: bool, seconds: float, log, probes: SpeedProbes) -> dict[str, dict[str, float]]:
    """Every model's paths in interleaved windows (:func:`~relcomp.lab.throughput.time_paths`), each
    model after a fresh matmul peak; fills ``r`` (medians, spreads, peaks, ablations) and returns
    the unrounded median rates."""
    exact: dict[str, dict[str, float]] = {}
    for model_name in ("siamese", "weak"):
        phase = f"throughput:{model_name}"  # each model's own: the machine moved 12% between two models' windows
        r["peak_gflops_before"][model_name] = probes.sample(phase, seconds)[prec]
        log(f"throughput of {model_name}: {r['windows']} windows of at least {steps} steps and {r['window_s']:g} s "
            "on each path, in turns ...")
        rates = time_paths(model_paths(model_name, prec, ablations), steps, images, labels, r["windows"],
                           r["window_s"], each_round=functools.partial(probes.sample, phase))
        exact[model_name] = {name: max(v) for name, v in rates.items()}
        summary = {name: best_and_spread(v) for name, v in rates.items()}
        r["pairs_per_s_spread"][model_name] = {name: spread for name, (_, spread) in summary.items()}
        r["pairs_per_s_median"][model_name] = {name: round(statistics.median(v), 1) for name, v in rates.items()}
        r["pairs_per_s"][model_name] = {name: best for name, (best, _) in summary.items() if ":" not in name}
        r["pairs_per_s"][model_name].setdefault("naive_bf16", None)
        r["pairs_per_s"][model_name].setdefault("gather_bf16", None)
        if ablations:
            r.setdefault("ablations", {})[model_name] = {name.split(":")[1]: best for name, (best, _) in summary.items()
                                                         if ":" in name}
    return exact


def times_to_accuracy(quick: bool, mnist, data_dir: str | None, log, probes: SpeedProbes) -> dict[str, Any]:
    """Training time of the weak model to 98% val classification and of the Siamese model to a 97%
    mean 1-shot val accuracy, each the fastest of :data:`TIME_RUNS` runs (the same seed, so the same
    steps: one run's time moved 12% between two benches on this shared VM), with the machine's
    speed probed before each run and after the last."""
    runs = 1 if quick else TIME_RUNS
    val = 2_000 if quick else None  # quick (tests): a fifth of the val images

    def probed(*args, **kw) -> dict[str, Any]:
        probes.sample("time_to_accuracy")
        return time_to_accuracy(*args, **kw)

    log(f"time to accuracy: weak model to 98% val classification ({runs} runs) ...")
    weak = fastest([probed("weak", 0.98, 3_000 if quick else 400_000, 1_500 if quick else 10_000, mnist,
                           data_dir, val_subset=val) for _ in range(runs)])
    log(f"time to accuracy: Siamese 1-shot mean to 97% ({runs} runs) ...")
    siam = fastest([probed("siamese", 0.97, 3_000 if quick else 500_000, 1_500 if quick else 25_000, mnist,
                           data_dir, draws=3 if quick else 10, val_subset=val) for _ in range(runs)])
    probes.sample("time_to_accuracy")
    return {"time_to_98_weak": weak, "time_to_98_weak_s": weak["time_s"], "time_to_97_siamese_1shot": siam,
            "time_to_97_siamese_1shot_s": siam["time_s"]}


def fastest(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The run that reached its target fastest, or where none did, the one that trained to its cap
    fastest (every run's times kept in ``times_s`` and ``train_times_s``)."""
    done = [h for h in hits if h["reached"]]
    best = dict(min(done, key=lambda h: h["time_s"]) if done else min(hits, key=lambda h: h["train_time_s"]))
    best["times_s"] = [h["time_s"] for h in hits]
    best["train_times_s"] = [h["train_time_s"] for h in hits]
    return best


def run_bench(quick: bool = False, data_dir: str | None = None, log=print, ablations: bool = False) -> dict[str, Any]:
    """Every measurement; ``quick`` uses fewer steps and smaller caps (seconds, for tests);
    ``ablations`` adds the fast path's variants of :data:`ABLATIONS`. The figures need idle cores:
    the load average before and after is recorded, and a busy machine is named in the log."""
    r: dict[str, Any] = {"kind": "bench", "quick": quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "load_avg": {"cores": os.cpu_count(), "before": round(os.getloadavg()[0], 2)}}
    # As `relcomp train` does: every path is timed with glibc's malloc keeping freed memory.
    r["malloc_keeps_freed"] = keep_freed_memory()
    busy = busy_cpu_warning("the bench's figures need idle cores")
    if busy:
        log(busy)
    # The precision `relcomp train` picks here: bf16 only where the CPU computes it natively (an
    # emulated bf16 is many times slower than fp32 and would say nothing about relcomp).
    prec = resolve_precision("auto", torch.device("cpu"))
    r["precision"] = prec
    seconds = 0.5 if quick else 2.0
    log("matmul peak ...")
    probes = SpeedProbes(prec, seconds / 2)
    start = probes.sample("start", seconds)
    r["matmul_gflops_fp32"], r["matmul_gflops_bf16"] = start["fp32"], start.get("bf16")
    r["mfu_of"] = f"the best {prec} matmul peak measured in the bench (at its start, before each model's paths and after every round of their windows)"
    r["nominal_peak"] = nominal_peak()
    # The short one-shot figures first, in the fresh process: timed after the training paths they
    # moved 21-23% between two benches (0.15-0.5 s to sample the pairs) with the heap those left.
    log("pair store ...")
    store = bench_pair_store(500_000 if quick else 5_000_000)
    r["pair_store"] = store
    r["pair_store_bytes_5m"] = int(store["pair_store_bytes"] * 5_000_000 / store["pairs"])
    r["pair_gen_5m_s"] = round(store["pair_gen_s"] * 5_000_000 / store["pairs"], 3)
    r["images_bytes_5m_uint8"] = 5_000_000 * 2 * 28 * 28
    log(f"suggest 1,000 pairs among the {'first 5k' if quick else '50k'} MNIST train images ...")
    r["suggest_1000_s"] = bench_suggest(data_dir, train_subset=5_000 if quick else None,  # quick: over 5k images
                                        repeats=1 if quick else 3)
    probes.sample("start")
    mnist = load_mnist(data_dir)
    throughput_figures(r, 4 if quick else 40, 2 if quick else WINDOWS, 0.0 if quick else WINDOW_S, mnist.train.images,
                       mnist.train.labels, prec, ablations, seconds, log, probes)
    r.update(times_to_accuracy(quick, mnist, data_dir, log, probes))
    r["speed_probes"] = probes.samples
    r["targets"] = targets(r)
    r["load_avg"]["after"] = round(os.getloadavg()[0], 2)
    return r


def throughput_figures(r: dict[str, Any], steps: int, windows: int, window_s: float, images: np.ndarray,
                       labels: np.ndarray, prec: str, ablations: bool, seconds: float, log,
                       probes: SpeedProbes) -> None:
    """Pairs per second of every path, the speedups, the class-balance term's cost and the MFU;
    the matmul peaks become the best the ``probes`` measured so far."""
    r.update(pairs_per_s={}, pairs_per_s_spread={}, pairs_per_s_median={}, peak_gflops_before={}, windows=windows,
             window_steps=steps, window_s=window_s)
    exact = measure_throughput(r, steps, images, labels, prec, ablations, seconds, log, probes)
    r["peak_gflops_samples"] = probes.peaks()
    for name, values in r["peak_gflops_samples"].items():
        if values and r[f"matmul_gflops_{name}"] is not None:
            r[f"matmul_gflops_{name}"] = max(r[f"matmul_gflops_{name}"], *values)
    r["speedup_vs_naive"] = {k: round(v["fast"] / v["naive"], 2) for k, v in exact.items()}
    r["unlabeled_slowdown"] = round(exact["weak"]["fast"] / exact["weak"]["with_unlabeled"], 3)
    fpp = flops_per_pair("weak")
    r["model_flops_per_pair"] = fpp
    r["model_gflops"] = {k: round(v["fast"] * fpp / 1e9, 1) for k, v in r["pairs_per_s"].items()}
    # Of the best peak the bench measured: a single measurement can land on a busy moment (1,418
    # against 2,046-2,310 GFLOP/s in two benches back to back here), the best cannot be too high.
    r["mfu_peak_gflops"] = max([*r["peak_gflops_before"].values(), r["matmul_gflops_bf16" if prec == "bf16" else "matmul_gflops_fp32"]])
    r["mfu"] = {k: round(g / r["mfu_peak_gflops"], 3) for k, g in r["model_gflops"].items()}
    if r["nominal_peak"]:
        nominal = r["nominal_peak"][f"gflops_{prec}"]
        r["mfu_nominal"] = {k: round(g / nominal, 3) for k, g in r["model_gflops"].items()}


def round_or_none(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """Each target, the measured value, and whether and by how much it is met. The speedup and the
    MFU are both judged on the worse of the two models."""
    out = {}
    worst_speedup = min(r["speedup_vs_naive"].values())
    worst_mfu = min(r["mfu"].values())
    for key, value, ok in (
        ("speedup_vs_naive", worst_speedup, worst_speedup >= TARGETS["speedup_vs_naive"]),
        ("mfu", worst_mfu, worst_mfu >= TARGETS["mfu"]),
        ("pair_store_bytes_5m", r["pair_store_bytes_5m"], r["pair_store_bytes_5m"] <= TARGETS["pair_store_bytes_5m"]),
        ("time_to_98_weak_s", r["time_to_98_weak_s"],
         r["time_to_98_weak_s"] is not None and r["time_to_98_weak_s"] <= TARGETS["time_to_98_weak_s"]),
        ("unlabeled_slowdown", r["unlabeled_slowdown"], r["unlabeled_slowdown"] <= TARGETS["unlabeled_slowdown"]),
        ("suggest_1000_s", r["suggest_1000_s"], r["suggest_1000_s"] <= TARGETS["suggest_1000_s"]),
    ):
        out[key] = {"target": TARGETS[key], "measured": value, "met": bool(ok),
                    "ratio": None if value is None else round(value / TARGETS[key], 3)}
    return out
