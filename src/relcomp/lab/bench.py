"""``relcomp bench``: measured speed and size figures, never assumed ones.

Measures, in one process on this machine: the matrix peak (fp32 and bf16 matmul), training
throughput of the relational models on a *naive* path written as the paper's original code
(materialised image pairs, a per-item Dataset with float conversion, a DataLoader, fp32, two
backbone calls) and on relcomp's fast path, the model FLOP utilisation, the pair store's size,
and time-to-accuracy of real training runs.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ..callbacks import StopWhen
from ..config import TrainConfig, resolve
from ..data.mnist import load_mnist
from ..data.pairs import load_pairs, make_pairs, save_pairs
from ..data.sources import MnistSource
from ..data.splits import Data, to_tensor
from ..distributed import DistInfo
from ..engine import train
from ..fewshot import fewshot_accuracy
from ..losses import get_loss
from ..models import MODELS, build_model
from ..trainer import Plan, Trainer, TrainState
from ..utils import resolve_precision

# The loss every path of the bench computes, so that the naive and the fast path do the same
# arithmetic (the weak model's default, symmetric, differs only in a K-sized sum per pair).
BENCH_LOSS = "unconditional"
TARGETS = {"speedup_vs_naive": 3.0, "mfu": 0.5, "pair_store_bytes_5m": 64_000_000, "time_to_98_weak_s": 120.0,
           "unlabeled_slowdown": 1.5, "suggest_1000_s": 15.0}


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
# The naive path, as the paper's original code: image pairs materialised, converted per item.

class NaivePairDataset(Dataset):
    """Materialised uint8 image pairs; each item converted to float on access."""

    def __init__(self, images: np.ndarray, i: np.ndarray, j: np.ndarray, z: np.ndarray):
        self.a, self.b, self.z = images[i], images[j], z  # copies of the images, as the original

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, k: int):
        xa = torch.tensor(self.a[k], dtype=torch.float32).unsqueeze(0) / 255.0
        xb = torch.tensor(self.b[k], dtype=torch.float32).unsqueeze(0) / 255.0
        return xa, xb, torch.tensor(float(self.z[k]))


def naive_loss(model, xa: torch.Tensor, xb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The same loss as the fast path, but with two separate backbone calls."""
    out = model.pair_output(model.item_output(model.embed(xa)), model.item_output(model.embed(xb)))
    return get_loss(BENCH_LOSS)(out, z)


def _time_steps(step, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t


def throughput(model_name: str, path: str, steps: int, images: np.ndarray, labels: np.ndarray, batch: int = 128,
               precision: str = "fp32", channels_last: bool = False, unlabeled: bool = False,
               ablation: str | None = None) -> float:
    """Training pairs per second of ``model_name`` on the ``naive`` or ``fast`` path (``unlabeled``: with
    the class-balance term on a batch of unlabeled images, as `relcomp train weak` by default;
    ``ablation``: one of :data:`ABLATIONS` applied to the fast path)."""
    torch.manual_seed(0)
    model = build_model(model_name)
    if ablation == "amax_pool":
        model.backbone.features = nn.Sequential(*(AmaxPool2() if isinstance(m, nn.MaxPool2d) else m
                                                  for m in model.backbone.features))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    pairs = make_pairs(labels, batch * (steps + 3), seed=0)
    if path == "naive":
        loader = iter(DataLoader(NaivePairDataset(images, pairs.i, pairs.j, pairs.z), batch_size=batch, shuffle=True))

        def step():
            xa, xb, z = next(loader)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = naive_loss(model, xa, xb, z)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        step = _engine_step(model_name, model, opt, images, labels, pairs, batch, precision, channels_last, unlabeled,
                            compile_model=ablation == "compile")
    return batch * steps / _time_steps(step, steps)


class AmaxPool2(nn.Module):
    """2 x 2 max-pooling as a reshape and an ``amax`` (an ablation of ``MaxPool2d``; same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).amax((3, 5))


# What `relcomp bench --ablations` tries on the fast path, each alone: the variants that were
# measured and not kept.
ABLATIONS = {"compile": "torch.compile (inductor) of the model; compilation in the warm-up steps, not timed",
             "batch_256": "batch 256 instead of the paper's 128",
             "amax_pool": "MaxPool2d replaced by a reshape + amax"}


def _engine_step(model_name: str, model, opt, images: np.ndarray, labels: np.ndarray, pairs, batch: int, precision: str,
                 channels_last: bool, unlabeled: bool = False, compile_model: bool = False):
    """One step of relcomp's own training loop (:meth:`relcomp.trainer.Trainer.train_step`)."""
    cpu = torch.device("cpu")
    x = to_tensor(images, cpu)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    data = Data(x, torch.from_numpy(labels), x[:1], torch.from_numpy(labels[:1]), pairs, None,
                unlabeled=torch.arange(len(x)) if unlabeled else None)
    plan = Plan(total=len(pairs), batch=batch, eval_every=len(pairs), n=len(pairs))
    run = resolve(TrainConfig(model=model_name, loss=BENCH_LOSS))
    trainer = Trainer(run, Path(tempfile.gettempdir()), model, opt, data, plan, TrainState(), DistInfo(), cpu,
                      precision, forward=torch.compile(model) if compile_model else None)
    order = torch.randperm(len(pairs))
    pos = {"k": 0}

    def step():
        idx = order[pos["k"]:pos["k"] + batch]
        pos["k"] += batch
        trainer.train_step(idx, len(idx))

    return step


def bench_suggest(data_dir: str | None, n: int = 1_000, train_subset: int | None = None) -> float:
    """Seconds for `relcomp suggest RUN --n 1000` over the 50k MNIST train images (or the first
    ``train_subset``; a briefly trained weak run, validated on 1,000 val images; the time does not
    depend on how well it is trained)."""
    from ..suggest import suggest

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(model="weak", samples=1_024, eval_every=1_024, progress=False,
                          data=MnistSource(pairs="50k", val_subset=1_000, val_pairs=1_000, train_subset=train_subset,
                                           data_dir=data_dir))
        train(cfg, Path(d) / "run")
        t = time.perf_counter()
        suggest(Path(d) / "run", n, strategy="uncertainty")
        return round(time.perf_counter() - t, 2)


def flops_per_pair(model_name: str, batch: int = 32) -> float:
    """Model FLOPs of one training pair (forward and backward, two images), counted by torch."""
    model = build_model(model_name)
    xa, xb, z = torch.rand(batch, 1, 28, 28), torch.rand(batch, 1, 28, 28), torch.ones(batch)
    with FlopCounterMode(display=False) as fc:
        naive_loss(model, xa, xb, z).backward()
    return fc.get_total_flops() / batch


# ---------------------------------------------------------------------------------------------
# Pair store

def bench_pair_store(n: int = 5_000_000, seed: int = 42) -> dict[str, Any]:
    """Sample ``n`` pairs from 50k MNIST-like labels, save them, and measure time and bytes."""
    labels = np.random.default_rng(0).integers(0, 10, 50_000)  # the sampler only sees labels
    t = time.perf_counter()
    pairs = make_pairs(labels, n, seed)
    gen_s = time.perf_counter() - t
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

def paths_throughput(model_name: str, steps: int, images: np.ndarray, labels: np.ndarray, prec: str) -> dict[str, Any]:
    """Pairs per second of each step of the fast path added in turn; "fast" is what `relcomp
    train` runs by default."""
    naive = throughput(model_name, "naive", steps, images, labels)
    naive_bf16 = throughput(model_name, "naive", steps, images, labels, precision="bf16") if prec == "bf16" else None
    fp32 = throughput(model_name, "fast", steps, images, labels, precision="fp32")
    bf16 = throughput(model_name, "fast", steps, images, labels, precision="bf16") if prec == "bf16" else None
    fast = throughput(model_name, "fast", steps, images, labels, precision=prec, channels_last=True)
    return {"naive": round(naive, 1), "naive_bf16": round_or_none(naive_bf16), "gather_fp32": round(fp32, 1),
            "gather_bf16": round_or_none(bf16), "fast": round(fast, 1)}


def ablations_throughput(model_name: str, steps: int, images: np.ndarray, labels: np.ndarray,
                         prec: str) -> dict[str, float]:
    """Pairs per second of the fast path's variants that were tried and not kept (:data:`ABLATIONS`)."""
    return {name: round(throughput(model_name, "fast", steps, images, labels, precision=prec, channels_last=True,
                                   batch=256 if name == "batch_256" else 128,
                                   ablation=None if name == "batch_256" else name), 1) for name in ABLATIONS}


def times_to_accuracy(quick: bool, mnist, data_dir: str | None, log) -> dict[str, Any]:
    """Training time of the weak model to 98% val classification and of the Siamese model to a 97%
    mean 1-shot val accuracy."""
    log("time to accuracy: weak model to 98% val classification ...")
    val = 2_000 if quick else None  # quick (tests): a fifth of the val images
    weak = time_to_accuracy("weak", 0.98, 3_000 if quick else 400_000, 1_500 if quick else 10_000, mnist, data_dir,
                            val_subset=val)
    log("time to accuracy: Siamese 1-shot mean to 97% ...")
    siam = time_to_accuracy("siamese", 0.97, 3_000 if quick else 500_000, 1_500 if quick else 25_000, mnist, data_dir,
                            draws=3 if quick else 10, val_subset=val)
    return {"time_to_98_weak": weak, "time_to_98_weak_s": weak["time_s"], "time_to_97_siamese_1shot": siam,
            "time_to_97_siamese_1shot_s": siam["time_s"]}


def run_bench(quick: bool = False, data_dir: str | None = None, log=print, ablations: bool = False) -> dict[str, Any]:
    """Every measurement; ``quick`` uses fewer steps and smaller caps (seconds, for tests);
    ``ablations`` adds the fast path's variants of :data:`ABLATIONS`."""
    r: dict[str, Any] = {"kind": "bench", "quick": quick, "torch": torch.__version__, "threads": torch.get_num_threads()}
    # The precision `relcomp train` picks here: bf16 only where the CPU computes it natively (an
    # emulated bf16 is many times slower than fp32 and would say nothing about relcomp).
    prec = resolve_precision("auto", torch.device("cpu"))
    r["precision"] = prec
    log("matmul peak ...")
    r["matmul_gflops_fp32"] = round(matmul_gflops(torch.float32, seconds=0.5 if quick else 2.0), 1)
    r["matmul_gflops_bf16"] = (round(matmul_gflops(torch.bfloat16, seconds=0.5 if quick else 2.0), 1)
                               if prec == "bf16" else None)
    peak = r["matmul_gflops_bf16"] or r["matmul_gflops_fp32"]
    r["mfu_of"] = "bf16 matmul peak (measured)" if r["matmul_gflops_bf16"] else "fp32 matmul peak (measured)"
    r["nominal_peak"] = nominal_peak()

    mnist = load_mnist(data_dir)
    images, labels = mnist.train.images, mnist.train.labels
    steps = 4 if quick else 40
    r["pairs_per_s"] = {}
    for model_name in ("siamese", "weak"):
        log(f"throughput of {model_name} ...")
        r["pairs_per_s"][model_name] = paths_throughput(model_name, steps, images, labels, prec)
        if ablations:
            r.setdefault("ablations", {})[model_name] = ablations_throughput(model_name, steps, images, labels, prec)
    r["speedup_vs_naive"] = {k: round(v["fast"] / v["naive"], 2) for k, v in r["pairs_per_s"].items()}
    log("throughput of weak with the class-balance term on unlabeled images ...")
    with_u = throughput("weak", "fast", steps, images, labels, precision=prec, channels_last=True, unlabeled=True)
    r["pairs_per_s"]["weak"]["with_unlabeled"] = round(with_u, 1)
    r["unlabeled_slowdown"] = round(r["pairs_per_s"]["weak"]["fast"] / with_u, 3)
    log(f"suggest 1,000 pairs among the {'first 5k' if quick else '50k'} MNIST train images ...")
    r["suggest_1000_s"] = bench_suggest(data_dir, train_subset=5_000 if quick else None)  # quick: over 5k images
    fpp = flops_per_pair("weak")
    r["model_flops_per_pair"] = fpp
    r["model_gflops"] = {k: round(v["fast"] * fpp / 1e9, 1) for k, v in r["pairs_per_s"].items()}
    r["mfu"] = {k: round(g / peak, 3) for k, g in r["model_gflops"].items()}  # of the measured matmul peak
    if r["nominal_peak"]:
        nominal = r["nominal_peak"][f"gflops_{prec}"]
        r["mfu_nominal"] = {k: round(g / nominal, 3) for k, g in r["model_gflops"].items()}

    log("pair store ...")
    store = bench_pair_store(500_000 if quick else 5_000_000)
    scale = 5_000_000 / store["pairs"]
    r["pair_store"] = store
    r["pair_store_bytes_5m"] = int(store["pair_store_bytes"] * scale)
    r["pair_gen_5m_s"] = round(store["pair_gen_s"] * scale, 3)
    r["images_bytes_5m_uint8"] = 5_000_000 * 2 * 28 * 28

    r.update(times_to_accuracy(quick, mnist, data_dir, log))
    r["targets"] = targets(r)
    return r


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
