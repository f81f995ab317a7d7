"""The training paths ``relcomp bench`` times, and how it times them.

A path is one training step of a relational model: the *naive* one, written as the paper's
original code (materialised image pairs, a per-item Dataset with float conversion, a DataLoader,
two backbone calls), or relcomp's own (:meth:`relcomp.trainer.Trainer.train_step`) with its
parts added in turn (index gathers, bf16 autocast, channels-last), and the variants that were
tried and not kept (:data:`ABLATIONS`).

One 40-step window of a path moved by 15-25% from one run to the next on an idle 2-core machine,
and a speedup by 0.3. So :func:`time_paths` times every path of a model in several windows of at
least :data:`WINDOW_S` seconds, the paths taking turns within each round, and reports each path's
fastest window: a slow spell (another process, the CPU's clock) then falls on every path alike
instead of on one, and only ever slows a window down; the windows' median and spread are recorded
beside it. (Windows of 40 steps left the fast path, 1.2 s a window, 13-14% apart between two
benches; medians of 4-s windows, up to 14%.)
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ..config import TrainConfig, resolve
from ..data.pairs import make_pairs
from ..data.splits import Data, to_tensor
from ..distributed import DistInfo
from ..losses import get_loss
from ..models import build_model
from ..trainer import Plan, Trainer, TrainState, unlabeled_choice

# The loss every path computes, so that the naive and the fast path do the same arithmetic (the
# weak model's default, symmetric, differs only in a K-sized sum per pair).
BENCH_LOSS = "unconditional"
WINDOWS = 5   # timed windows of each path; the fastest is reported
WINDOW_S = 4.0  # a window lasts at least this long (the fast path's 40 steps took 1.2 s and moved 13%)
WARMUP = 3    # untimed steps of each path first (torch.compile compiles here)

# What `relcomp bench --ablations` tries on the fast path, each alone: the variants that were
# measured and not kept.
ABLATIONS = {"compile": "torch.compile (inductor) of the model; compilation in the warm-up steps, not timed",
             "batch_256": "batch 256 instead of the paper's 128",
             "amax_pool": "MaxPool2d replaced by a reshape + amax"}


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


class AmaxPool2(nn.Module):
    """2 x 2 max-pooling as a reshape and an ``amax`` (an ablation of ``MaxPool2d``; same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).amax((3, 5))


def flops_per_pair(model_name: str, batch: int = 32) -> float:
    """Model FLOPs of one training pair (forward and backward, two images), counted by torch."""
    model = build_model(model_name)
    xa, xb, z = torch.rand(batch, 1, 28, 28), torch.rand(batch, 1, 28, 28), torch.ones(batch)
    with FlopCounterMode(display=False) as fc:
        naive_loss(model, xa, xb, z).backward()
    return fc.get_total_flops() / batch


def path_step(model_name: str, path: str, steps: int, images: np.ndarray, labels: np.ndarray, batch: int = 128,
              precision: str = "fp32", channels_last: bool = False, unlabeled: bool = False,
              ablation: str | None = None) -> Callable[[], None]:
    """One training step of ``model_name`` on the ``naive`` or ``fast`` path, over ``steps`` batches of
    pairs that it goes through again and again (``unlabeled``: with the class-balance term on a batch of unlabeled images, as `relcomp
    train weak` by default; ``ablation``: one of :data:`ABLATIONS` applied to the fast path)."""
    torch.manual_seed(0)
    model = build_model(model_name)
    if ablation == "amax_pool":
        model.backbone.features = nn.Sequential(*(AmaxPool2() if isinstance(m, nn.MaxPool2d) else m
                                                  for m in model.backbone.features))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    pairs = make_pairs(labels, batch * steps, seed=0)
    if path != "naive":
        return engine_step(model_name, model, opt, images, labels, pairs, batch, precision, channels_last, unlabeled,
                           compile_model=ablation == "compile")
    dataset = NaivePairDataset(images, pairs.i, pairs.j, pairs.z)
    loader = {"it": iter(DataLoader(dataset, batch_size=batch, shuffle=True))}

    def step():
        batch_ = next(loader["it"], None)
        if batch_ is None:  # an epoch of the pairs is over: the next, as a DataLoader loop would
            loader["it"] = iter(DataLoader(dataset, batch_size=batch, shuffle=True))
            batch_ = next(loader["it"])
        xa, xb, z = batch_
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = naive_loss(model, xa, xb, z)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def engine_step(model_name: str, model, opt, images: np.ndarray, labels: np.ndarray, pairs, batch: int, precision: str,
                channels_last: bool, unlabeled: bool = False, compile_model: bool = False) -> Callable[[], None]:
    """One step of relcomp's own training loop (:meth:`relcomp.trainer.Trainer.train_step`)."""
    cpu = torch.device("cpu")
    x = to_tensor(images, cpu)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    data = Data(x, torch.from_numpy(labels), x[:1], torch.from_numpy(labels[:1]), pairs, None,
                unlabeled=torch.arange(len(x)) if unlabeled else None)
    # The default's term at the 50k pairs it is timed for: balance (auto would group the images
    # for this step's few thousand pairs).
    run = resolve(TrainConfig(model=model_name, loss=BENCH_LOSS, unlabeled="balance" if unlabeled else "off"))
    plan = Plan(total=len(pairs), batch=batch, eval_every=len(pairs), n=len(pairs),
                unlabeled=unlabeled_choice(run.cfg, data))
    trainer = Trainer(run, Path(tempfile.gettempdir()), model, opt, data, plan, TrainState(), DistInfo(), cpu,
                      precision, forward=torch.compile(model) if compile_model else None)
    order = torch.randperm(len(pairs))
    pos = {"k": 0}

    def step():
        if pos["k"] + batch > len(order):
            pos["k"] = 0
        idx = order[pos["k"]:pos["k"] + batch]
        pos["k"] += batch
        trainer.train_step(idx, len(idx))

    return step


def time_paths(paths: dict[str, dict], steps: int, images: np.ndarray, labels: np.ndarray,
               windows: int = WINDOWS, seconds: float = 0.0,
               each_round: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Pairs per second of each path (name -> :func:`path_step` keywords: model_name, path, ...) in
    ``windows`` windows, the paths taking turns in each round after :data:`WARMUP` steps each; a
    window is ``steps`` steps, or as many more as fill ``seconds``, so that a fast path is timed as
    long as a slow one. ``each_round`` is called after every round (the bench times its short
    figures there, so that they too are sampled across minutes). {name: [rate of each window]}."""
    built = {name: path_step(steps=max(steps, 64), images=images, labels=labels, **kw) for name, kw in paths.items()}
    for step in built.values():
        for _ in range(WARMUP):
            step()
    rates: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(windows):
        for name, step in built.items():
            done, t = 0, time.perf_counter()
            while done < steps or time.perf_counter() - t < seconds:
                step()
                done += 1
            rates[name].append(paths[name].get("batch", 128) * done / (time.perf_counter() - t))
        if each_round is not None:
            each_round()
    return rates


def best_and_spread(rates: list[float]) -> tuple[float, float]:
    """The fastest of a path's window rates and their spread, (max - min) / max. The fastest, not
    the median: whatever else the machine does only ever slows a window down, and two benches back
    to back moved their medians by up to 14% on this shared VM (the fastest window moves less)."""
    best = max(rates)
    return round(best, 1), round((best - min(rates)) / best, 3)


def throughput(model_name: str, path: str, steps: int, images: np.ndarray, labels: np.ndarray,
               windows: int = WINDOWS, **kw) -> float:
    """The best pairs per second of one path alone (``kw``: :func:`path_step`'s)."""
    rates = time_paths({"one": dict(model_name=model_name, path=path, **kw)}, steps, images, labels, windows)
    return best_and_spread(rates["one"])[0]
