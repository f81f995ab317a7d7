"""A round's model as the page uses it: every image's output computed once, so that a pair's
prediction, the sorted view and the running agreement are look-ups."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from ..data.comparisons import GREATER, LESS
from ..errors import DataError
from ..inference import Predictor
from .log import JudgementLog, append_fsynced, csv_line, pair_key

RECENT = 50   # the running agreement reads the last 50 judgements the model had not seen


class LiveModel:
    """The model of round ``version`` (trained on ``trained_on`` judgements) over ``names``."""

    def __init__(self, run_dir: Path, items: str | Path, names: list[str], version: int, trained_on: int):
        self.run_dir, self.version, self.trained_on = Path(run_dir), version, trained_on
        self.time = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.predictor = Predictor(run_dir, device="cpu")
        found = self.predictor.load_set(items)
        where = {n: k for k, n in enumerate(found.names)}
        missing = [n for n in names if n not in where]
        if missing:
            raise DataError(f"{items}: the round's model does not know the image {missing[0]} "
                            f"({len(missing)} of {len(names)} missing)")
        with torch.no_grad():
            self.outs = self.predictor.outputs(found.images[[where[n] for n in names]]).float()
        self.row = {n: k for k, n in enumerate(names)}
        self.names = names
        self.score = self.predictor.scores(self.outs)
        self.classifies = self.predictor.model.classifies
        self.classes = self.outs.argmax(-1).numpy() if self.classifies else None

    def prob_greater(self, a: str, b: str) -> float:
        i, j = self.row[a], self.row[b]
        with torch.no_grad():
            return float(self.predictor.prob_greater(self.outs[[i]], self.outs[[j]])[0])

    def order(self, limit: int = 300) -> dict:
        """The images from least to greatest (at most ``limit``, evenly spaced), with each one's
        class where the model names classes."""
        order = np.argsort(self.score, kind="stable")
        shown = order[np.unique(np.linspace(0, len(order) - 1, min(limit, len(order))).round().astype(int))]
        classes = self.classes[shown].tolist() if self.classes is not None else None
        return {"version": self.version, "items": [self.names[k] for k in shown], "classes": classes,
                "total": len(order)}


class Agreement:
    """The model's prediction for each pair, recorded before its judgement is written
    (``<comparisons>.model.csv``: a, b, version, P(a > b)), and how often it agreed."""

    COLUMNS = ["a", "b", "version", "p_greater"]

    def __init__(self, path: Path, log: JudgementLog):
        self.path, self.log = path, log
        self.predicted: dict[tuple[str, str], tuple[str, int, float]] = {}
        self.generation, self.seen = -1, 0  # how far the log's rows are scored
        self.scored: list[tuple[int, bool]] = []
        self.tally: dict[int, tuple[int, int]] = {}  # version: (agreed, scored)
        if path.exists():
            self.read()
        else:
            append_fsynced(path, ",".join(self.COLUMNS) + "\n")

    def read(self) -> None:
        with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                try:
                    self.predicted[pair_key(row["a"], row["b"])] = (row["a"], int(row["version"]), float(row["p_greater"]))
                except (KeyError, TypeError, ValueError):
                    continue  # a torn last line: that judgement has no prediction

    def record(self, a: str, b: str, model: LiveModel) -> None:
        p = model.prob_greater(a, b)
        append_fsynced(self.path, csv_line([a, b, model.version, f"{p:.6f}"]))
        self.predicted[pair_key(a, b)] = (a, model.version, p)

    def outcomes(self) -> list[tuple[int, bool]]:
        """(version, the model agreed) for each judgement with a prediction, not a tie, in file
        order. Kept as the log grows, so that the status after each judgement scores only the new
        rows; scored anew when an undo rewrote the file."""
        rows = self.log.rows
        if self.log.generation != self.generation or len(rows) < self.seen:
            self.generation, self.seen, self.scored, self.tally = self.log.generation, 0, [], {}
        for a, b, outcome, _ in rows[self.seen:]:
            seen = self.predicted.get(pair_key(a, b))
            if seen is not None and outcome in GREATER | LESS:
                first, version, p = seen
                p_a = p if first == a else 1 - p   # P(this row's a > its b)
                ok = (p_a > 0.5) == (outcome in GREATER)
                self.scored.append((version, ok))
                agreed, n = self.tally.get(version, (0, 0))
                self.tally[version] = (agreed + ok, n + 1)
        self.seen = len(rows)
        return self.scored

    def recent(self) -> tuple[float | None, int]:
        last = self.outcomes()[-RECENT:]
        return (float(np.mean([ok for _, ok in last])) if last else None), len(last)

    def per_version(self) -> dict[int, float]:
        self.outcomes()
        return {v: agreed / n for v, (agreed, n) in self.tally.items()}
