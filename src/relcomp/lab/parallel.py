"""``relcomp reproduce --jobs N``: a study's independent runs trained side by side, each in its own
process and its own run folder, exactly as the sequential path trains them.

The study itself stays sequential: it hands the harness the runs it will need
(:meth:`~relcomp.lab.harness.Harness.prefetch`), they are trained here N at a time, and the study's
own loop then finds each one finished and reuses it. So a study's numbers do not depend on N: every
run is seeded by its config alone, and an interrupted run resumes from its checkpoint either way.
On a CPU the number of threads a run computes in does change its float sums in the last digits, so
equal numbers need equal threads per run (``relcomp reproduce --threads``).

One small CNN leaves a GPU mostly idle (kernel launches dominate at batch 128), so on CUDA the
runs share the device; on a CPU each process gets an equal share of the cores.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .common import log


def worker_init(threads: int) -> None:
    """Each worker computes in its share of the cores (set before torch starts its thread pool)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def threads_per_job(jobs: int) -> int:
    """The cores each of ``jobs`` processes may use: this process's torch threads shared out."""
    import torch

    return max(1, torch.get_num_threads() // jobs)


def train_all(work: Callable[[Any, str], dict], items: list[tuple[Any, Path, str]], jobs: int,
              progress: bool = True, threads: int | None = None) -> dict[str, dict]:
    """``work(config, folder)`` (the harness's training of one run, returning its summary) for each of
    ``items`` (config, folder, tag), up to ``jobs`` at once, each in ``threads`` CPU threads
    (default: :func:`threads_per_job`); {folder: summary}.

    The first run to fail stops the others' queue (those already training finish or save a
    checkpoint) and its error is raised here, as the sequential path would raise it.
    """
    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
    done: dict[str, dict] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=worker_init,
                             initargs=(threads or threads_per_job(jobs),)) as pool:
        futures = {pool.submit(work, cfg, str(folder)): (folder, tag) for cfg, folder, tag in items}
        bar = tqdm(total=len(futures), desc=f"runs ({jobs} at once)", unit="run", disable=not progress)
        try:
            for fut in as_completed(futures):
                folder, tag = futures[fut]
                done[str(folder)] = fut.result()
                bar.update(1)
                if progress:
                    bar.write(f"relcomp: {tag} done ({done[str(folder)]['train_time_s']:.0f} s of training, "
                              f"{time.perf_counter() - t0:.0f} s since the first began)")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
    log(f"{len(items)} runs trained, {jobs} at once, in {time.perf_counter() - t0:.0f} s")
    return done
