"""How long `relcomp reproduce --profile paper` should take on one GPU, before a GPU is at hand (#29).

The paper's CNN is tiny: at batch 64-128 a training step on a GPU is bound by how fast PyTorch can
launch its kernels, not by arithmetic. So the estimate counts, for one training step of each model,
the kernels it launches (the leaf ATen operators that torch.profiler records on this CPU, which on
CUDA are one kernel each, or fewer once fused), multiplies by a per-launch cost, and by the steps
each run of the profile takes. With --jobs N the runs' processes launch in parallel; the GPU then
executes the kernels of all of them, so the wall time is bounded below by the longest run and by
the total GPU work divided by what the GPU overlaps.

    .venv/bin/python scripts/gpu_estimate.py [--profile paper] [--launch-us 6 12] [--jobs 10]

The per-launch costs are assumptions, not measurements: about 5-10 us is what PyTorch's eager
dispatch plus a CUDA launch costs per operator on a current CPU. Replace them with a measured
step time once a GPU has run the profile (the device script's metrics carry each run's time).
"""
from __future__ import annotations

import argparse
import math

import torch

from relcomp import TrainConfig
from relcomp.config import resolve
from relcomp.data.sources import MnistSource
from relcomp.lab.reproduce import load_profile
from relcomp.lab.studies.paper import plan
from relcomp.run import build_run_model


def kernels_per_step(cfg: TrainConfig) -> int:
    """Leaf ATen operators (about one CUDA kernel each) of one training step of ``cfg``'s model:
    forward, loss, backward and Adam (foreach). Views and shape-only operators are counted too, so
    this errs high."""
    run = resolve(cfg)
    model = build_run_model(run.cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    b = run.batch_size
    x = torch.randn(b, 1, 28, 28)
    if run.model_cls.relational:
        inputs, target = (x, torch.randn(b, 1, 28, 28)), torch.randint(0, 2, (b,))
    else:
        inputs, target = (x,), torch.randint(0, 10, (b,))

    def step() -> None:
        out = model(*inputs)
        loss = run.loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # Adam's state exists from here on, as in every later step
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(leaf_kernels(e) for e in prof.events() if e.cpu_parent is None)


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
    ap.add_argument("--launch-us", type=float, nargs=2, default=(6.0, 12.0), metavar=("LOW", "HIGH"))
    ap.add_argument("--jobs", type=int, default=10)
    args = ap.parse_args()
    prof = load_profile(args.profile)
    specs = plan(prof, seeds=list(range(len(prof.get("seeds") or [0]))))
    counted: dict[str, int] = {}
    rows = []
    for spec in specs:
        cfg = spec.cfg
        key = f"{cfg.model}/{cfg.loss}"
        if key not in counted:
            counted[key] = kernels_per_step(TrainConfig(model=cfg.model, loss=cfg.loss, samples=1,
                                                        data=MnistSource(train_subset=100)))
        run = resolve(cfg)
        n = 50_000 if cfg.model == "supervised" else None
        total = cfg.samples if cfg.samples else int(cfg.epochs * n)
        steps = math.ceil(total / run.batch_size)
        rows.append((f"{spec.key}-s{spec.seed}", steps, counted[key]))
    print(f"profile {args.profile}: {len(rows)} runs")
    print(f"{'run':34} {'steps':>8} {'kernels/step':>13}")
    for name, steps, k in rows:
        print(f"{name:34} {steps:>8,} {k:>13}")
    for us in args.launch_us:
        per_run = [steps * k * us * 1e-6 for _, steps, k in rows]
        serial = sum(per_run)
        parallel = max(max(per_run), serial / args.jobs)
        print(f"at {us:g} us a kernel: one at a time {serial / 60:.0f} min; --jobs {args.jobs}: at least "
              f"{parallel / 60:.0f} min (the longest run {max(per_run) / 60:.0f} min)")


if __name__ == "__main__":
    main()
