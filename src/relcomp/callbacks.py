"""Callbacks: what happens around the training loop, as objects (skorch's ``notify``).

The trainer calls ``notify(event, **kw)`` at fixed points and each callback may answer it by a
method of that name. Events: ``on_train_begin(trainer)``, ``on_step_end(trainer)``,
``on_eval(trainer, row)`` after each validation (``row`` is the metrics row),
``on_best(trainer, path)`` when a new best model has been written to ``path``, and
``on_train_end(trainer)``.

Every run gets :func:`default_callbacks` (log the metrics, keep the best weights, checkpoint,
warn of collapsed classes), in that order; a caller's callbacks come after them, so that by the
time they see an evaluation it is logged and checkpointed. :class:`StopWhen` stops training on a
condition.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .annotators import annotator_counts
from .checkpoint import save_weights
from .metrics import collapsed
from .run import write_annotators, write_metrics

# What a callback is given: the engine's Trainer (its model, state, run_dir, files, info ...). Typed as
# Any so that this module, which the trainer imports, does not import the trainer back.
Trainer = Any


class Callback:
    """A no-op for every event; subclasses answer the events they need."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer) -> None:
        pass

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        pass

    def on_best(self, trainer: Trainer, path) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class LogMetrics(Callback):
    """``metrics.jsonl`` (no clock readings, so a rerun reproduces it byte for byte) and
    ``timing.jsonl``, one row per evaluation."""

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.info.main:
            write_metrics(trainer.run_dir, row)


class KeepBest(Callback):
    """``best.safetensors``: the weights with the best val selection metric so far (and, with an
    annotator model, ``annotators.json`` as at that point); then the ``on_best`` event."""

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        value, st = row[trainer.model.selection_metric], trainer.state
        if value is None or value <= st.best:
            return
        st.best, st.best_samples = value, st.samples
        if trainer.info.main:
            path = trainer.files.best
            save_weights(path, trainer.model, trainer.metadata)
            if trainer.annotators is not None:
                counts = annotator_counts(trainer.data.train_pairs, len(trainer.annotators.names))
                write_annotators(trainer.run_dir, trainer.cfg.annotator_model, trainer.annotators.report(counts))
            trainer.notify("on_best", path=path)


class Checkpoint(Callback):
    """A checkpoint (weights, optimizer, RNG, counters) after every evaluation, so a resumed run
    continues exactly."""

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        trainer.checkpoint()


class StopWhen(Callback):
    """Stop training after the evaluation at which ``condition(model, row)`` is true (the summary
    then says ``stopped_early``)."""

    def __init__(self, condition: Callable[[Any, dict[str, Any]], bool]):
        self.condition = condition

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.condition(trainer.model, row):
            trainer.state.stopped_early = True


class WarnCollapse(Callback):
    """Says on stderr, once per run, when the model's predictions on val use at most half of its
    classes: the classes collapsed (``val_classes_used`` in ``metrics.jsonl`` has the count)."""

    def __init__(self):
        self.said = False

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        used, k = row.get("val_classes_used"), trainer.cfg.num_classes
        if used is None or not collapsed(used, k) or self.said or not trainer.info.main:
            return
        self.said = True
        print(f"relcomp: warning: after {row['samples']:,} samples the model predicts only {used} of its {k} "
              "classes on val (they collapsed); more comparisons, --unlabeled balance or a lower "
              "--unlabeled-weight may help", file=sys.stderr)


def default_callbacks() -> list[Callback]:
    """What every run does after an evaluation, in this order."""
    return [LogMetrics(), KeepBest(), Checkpoint(), WarnCollapse()]
