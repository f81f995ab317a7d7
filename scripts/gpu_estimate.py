"""How long `relcomp reproduce --profile paper` should take on one GPU, before a GPU is at hand (#29).

The paper's CNN is tiny: at batch 64-128 a training step on a GPU is bound by how fast PyTorch can
launch its kernels, not by arithmetic. So the estimate measures, for one training step of each
model on this CPU, the time of a step whose arithmetic is negligible (batch 2): what Python and
PyTorch's dispatcher cost a step, which a GPU step costs too. It adds a CUDA launch for each kernel
the step launches (the leaf ATen operators that torch.profiler records, about one kernel each on
CUDA), and multiplies by the steps each run of the profile takes. With --jobs N the runs' processes launch in parallel; the GPU then
executes the kernels of all of them, so the wall time is bounded below by the longest run and by
the total GPU work divided by what the GPU overlaps.

    .venv/bin/python scripts/gpu_estimate.py [--profile paper] [--launch-us 2 5] [--jobs 10]

The dispatch time is measured; the CUDA launch cost a kernel is an assumption (a few microseconds on
a current CPU and driver), and so is the GPU overlapping the runs' kernels. Replace the estimate with
the real step times once a GPU has run the profile (the device script's metrics carry each run's).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from relcomp import TrainConfig
from relcomp.config import resolve
from relcomp.data.sources import MnistSource
from relcomp.lab.reproduce import load_profile
from relcomp.lab.studies.paper import plan
from relcomp.run import build_run_model


def step_of(cfg: TrainConfig, batch: int):
    """One training step of ``cfg``'s model at ``batch`` (forward, loss, backward, Adam foreach)."""
    run = resolve(cfg)
    model = build_run_model(run.cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(batch, 1, 28, 28)
    if run.model_cls.relational:
        inputs, target = (x, torch.randn(batch, 1, 28, 28)), torch.randint(0, 2, (batch,))
    else:
        inputs, target = (x,), torch.randint(0, 10, (batch,))

    def step() -> None:
        out = model(*inputs)
        loss = run.loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # Adam's state exists from here on, as in every later step
    return step


def kernels_per_step(cfg: TrainConfig) -> int:
    """Leaf ATen operators (about one CUDA kernel each) of one training step of ``cfg``'s model.
    Views and shape-only operators are counted too, so this errs high."""
    step = step_of(cfg, resolve(cfg).batch_size)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(leaf_kernels(e) for e in prof.events() if e.cpu_parent is None)


def dispatch_seconds(cfg: TrainConfig, steps: int = 200) -> float:
    """Measured seconds of one step at batch 2 on this CPU, one thread: the step's framework cost."""
    step = step_of(cfg, 2)
    for _ in range(10):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def leaf_kernels(event) -> int:
    """Kernels under one profiler event: a leaf ATen operator is one; a ``_foreach_`` operator
    (Adam's update of every tensor) is one on CUDA, where it is fused over the tensors."""
    if event.name.startswith("aten::_foreach_"):
        return 1
    below = sum(leaf_kernels(c) for c in event.cpu_children)
    return below if below else int(event.name.startswith("aten::"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--launch-us", type=float, nargs=2, default=(2.0, 5.0), metavar=("LOW", "HIGH"),
                    help="assumed CUDA launch cost a kernel, on top of the measured dispatch")
    ap.add_argument("--jobs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    prof = load_profile(args.profile)
    specs = plan(prof, seeds=list(range(len(prof.get("seeds") or [0]))))
    measured: dict[str, tuple[int, float]] = {}
    rows = []
    for spec in specs:
        cfg = spec.cfg
        key = f"{cfg.model}/{cfg.loss}"
        if key not in measured:
            small = TrainConfig(model=cfg.model, loss=cfg.loss, samples=1, data=MnistSource(train_subset=100))
            measured[key] = (kernels_per_step(small), dispatch_seconds(small))
        run = resolve(cfg)
        rows.append((f"{spec.key}-s{spec.seed}", math.ceil(run.budget(50_000) / run.batch_size), *measured[key]))
    print(f"profile {args.profile}: {len(rows)} runs (dispatch measured on this CPU, one thread, batch 2)")
    print(f"{'run':34} {'steps':>8} {'kernels/step':>13} {'dispatch ms/step':>17}")
    for name, steps, k, d in rows:
        print(f"{name:34} {steps:>8,} {k:>13} {d * 1e3:>17.2f}")
    for us in args.launch_us:
        per_run = [steps * (d + k * us * 1e-6) for _, steps, k, d in rows]
        serial = sum(per_run)
        parallel = max(max(per_run), serial / args.jobs)
        print(f"at {us:g} us a launch: one run at a time {serial / 60:.0f} min; --jobs {args.jobs}: at least "
              f"{parallel / 60:.0f} min (the longest run {max(per_run) / 60:.0f} min)")


if __name__ == "__main__":
    main()
