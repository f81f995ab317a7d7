"""The one harness every study runs through: this config -> this folder -> train or reuse ->
evaluate or reuse.

A study's run lives in ``<out>/runs/<tag>-<hash>``, where the hash covers every setting that
changes what is learned (:meth:`relcomp.TrainConfig.digest`): a rerun reuses finished runs and
continues interrupted ones, and two studies (or two cells of one) that need the same run share it.
Evaluations and few-shot results are cached in the run folder while they are newer than its best
weights. With ``jobs`` > 1 a study's independent runs are trained ahead of its loop, that many at
once (:meth:`Harness.prefetch`, :mod:`relcomp.lab.parallel`); the loop then reuses them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import evaluate_run, fewshot_eval, train
from ..evaluate import write_evaluation
from ..fewshot import write_fewshot
from ..run import cached_result, run_files
from .common import log
from .parallel import train_all


def train_in_worker(cfg, folder: str) -> dict[str, Any]:
    """One run of :meth:`Harness.prefetch`, trained (or resumed, or reused) in a worker process."""
    return train(cfg, folder, resume=True)


@dataclass
class Run:
    """A trained run of a study: its folder, training summary and test evaluation."""

    folder: Path
    summary: dict[str, Any]
    eval: dict[str, Any]


class Harness:
    """The runs of one study invocation, under ``out``, on ``device``."""

    def __init__(self, out: str | Path, device: str = "auto", progress: bool = True, jobs: int = 1,
                 threads: int | None = None):
        self.out, self.device, self.progress, self.jobs, self.threads = Path(out), device, progress, jobs, threads
        self.train_times: dict[str, float] = {}  # folder -> training seconds; a run shared by cells counts once

    def folder(self, tag: str, cfg) -> Path:
        return self.out / "runs" / f"{tag}-{cfg.digest()}"

    def train(self, cfg, tag: str, note: str = "") -> tuple[Path, dict[str, Any]]:
        """Train ``cfg`` into its folder, or reuse / resume what is there; (folder, summary)."""
        cfg = dataclasses.replace(cfg, progress=self.progress)
        folder = self.folder(tag, cfg)
        log(f"[{len(self.train_times) + 1}] {tag}{note} -> {folder}")
        summary = train(cfg, folder, resume=True)
        self.train_times[str(folder)] = summary["train_time_s"]
        return folder, summary

    def prefetch(self, runs: list[tuple[Any, str]]) -> None:
        """Train these runs (config, tag), which do not depend on each other, ``jobs`` at once before
        the study's loop comes to them. With one job, nothing: the loop trains each in turn."""
        if self.jobs > 1 and len(runs) > 1:
            log(f"training {len(runs)} runs, {self.jobs} at once")
            train_all(train_in_worker,
                      [(dataclasses.replace(cfg, progress=False), self.folder(tag, cfg), tag) for cfg, tag in runs],
                      self.jobs, self.progress, self.threads)

    def evaluate(self, folder: str | Path) -> dict[str, Any]:
        """The run's test evaluation: its ``eval.json`` while newer than its weights, else computed
        and written."""
        found = cached_result(run_files(folder).eval)
        if found is None:
            found = evaluate_run(folder, device=self.device)
            write_evaluation(folder, found)
        return found

    def run(self, cfg, tag: str, note: str = "") -> Run:
        """Train (or reuse) and evaluate (or reuse)."""
        folder, summary = self.train(cfg, tag, note)
        return Run(folder, summary, self.evaluate(folder))

    def fewshot(self, folder: str | Path, shots: list[int], draws: int, seed: int, method: str = "linear",
                check=lambda r: True, **kw) -> dict[str, Any]:
        """Few-shot results of a run: its cached file when it answers the same question
        (``check``), else computed and written."""
        found = cached_result(run_files(folder).fewshot(method),
                              lambda r: r["draws"] == draws and r.get("seed") == seed and check(r))
        if found is None:
            found = fewshot_eval(folder, shots=shots, draws=draws, seed=seed, device=self.device, method=method, **kw)
            write_fewshot(folder, found)
        return found

    @property
    def train_time_total(self) -> float:
        return round(sum(self.train_times.values()), 1)
