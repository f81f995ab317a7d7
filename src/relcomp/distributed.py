"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

relcomp reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``), joins the process group (NCCL on GPUs, gloo on CPUs) and
otherwise runs exactly the single-process loop: every rank computes the same global batch
indices and trains on its own contiguous slice of them, so N processes with ``--batch-size B``
take the same steps as one process with batch ``N x B``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError
from .utils import exit_with_parent


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process writes logs, metrics and checkpoints."""
        return self.rank == 0


def from_env() -> DistInfo:
    """The process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device.

    Raises:
        ConfigError: CUDA asked for but fewer GPUs than local ranks.
    """
    if not info.enabled:
        return device
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise ConfigError(f"local rank {info.local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        exit_with_parent(1, f"relcomp: rank {info.rank}: the torchrun launcher is gone; stopping "
                            "(the last checkpoint is intact: relcomp train --resume RUN_DIR)")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_slice(global_idx: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous part of a global batch (the parts differ by at most one item)."""
    if not info.enabled:
        return global_idx
    return torch.tensor_split(global_idx, info.world)[info.rank]


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous shard of ``n`` items (no padding, no duplicates)."""
    base, extra = divmod(n, info.world)
    start = info.rank * base + min(info.rank, extra)
    return start, start + base + (1 if info.rank < extra else 0)


def gather_rows(t: torch.Tensor, n: int, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's shard (from :func:`shard_range`) into the full (n, ...) tensor on
    every rank. Shards are padded for the collective and trimmed back: no duplicates survive."""
    if not info.enabled:
        return t
    sizes = [shard_range(n, DistInfo(r, info.world)) for r in range(info.world)]
    longest = max(b - a for a, b in sizes)
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, sizes)])


def sum_values(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (for logging losses and counts)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on any (a stop request, a non-finite loss)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out
