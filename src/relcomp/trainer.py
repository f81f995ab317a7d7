"""The training loop over one run's model, optimizer, data and state (:func:`relcomp.engine.train`
sets it up): every step is ``out = model(*inputs)``, ``loss = loss_fn(out, target, weight,
noise)``; after each validation the callbacks are told (:mod:`relcomp.callbacks`)."""
from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from .annotators import AnnotatorFlips
from .augment import augment
from .callbacks import Callback
from .checkpoint import save_checkpoint
from .config import Resolved, TrainConfig
from .data.splits import Data
from .distributed import DistInfo, any_rank, barrier, gather_objects, gather_rows, local_slice, shard_range, sum_values
from .errors import TrainingError, TrainingInterrupted
from .losses import pair_predictions
from .metrics import item_outputs, score_outputs
from .models import RelcompModel
from .run import model_metadata, run_files
from .unlabeled import Objective, get_objective, nearest_neighbours, objective_name, views
from .utils import write_json_atomic


@dataclass
class TrainState:
    """Everything the loop counts; saved with every checkpoint, so a resumed run continues exactly."""

    step: int = 0
    samples: int = 0
    best: float = -1.0
    best_samples: int = 0
    finished: bool = False
    stopped_early: bool = False
    elapsed: float = 0.0
    eval_time: float = 0.0
    noise: float = 0.0          # the flip rate the loss corrects for
    run_loss: float = 0.0       # sums over the current evaluation interval: saved too, so the logged
    run_correct: float = 0.0    # train_loss and train_acc do not depend on where a run was interrupted
    run_seen: float = 0.0
    annotator_logits: list[float] | None = None  # --annotator-model flip: the rates' logits (resumed exactly)

    @classmethod
    def from_saved(cls, d: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Plan:
    total: int        # samples to train for
    batch: int        # global batch
    eval_every: int
    n: int           # training set size (pairs or images)
    unlabeled: str | None = None  # the objective on the items nobody compared (--unlabeled resolved once); None: none


class Trainer:
    """The loop and its steps, over one run's model, optimizer, data and state."""

    def __init__(self, run: Resolved, run_dir: Path, model: RelcompModel, opt: torch.optim.Optimizer, data: Data,
                 plan: Plan, state: TrainState, info: DistInfo, device: torch.device, precision: str,
                 annotators: AnnotatorFlips | None = None, callbacks: Sequence[Callback] = (),
                 forward: Callable[..., torch.Tensor] | None = None):
        cfg = run.cfg
        self.cfg, self.run_dir, self.model, self.opt, self.data = cfg, run_dir, model, opt, data
        self.plan, self.state, self.info, self.device, self.precision = plan, state, info, device, precision
        self.callbacks = list(callbacks)
        self.files, self.metadata = run_files(run_dir), model_metadata(cfg)
        # what a step calls: the model, its DDP wrapper, or a compiled model (the bench's ablation)
        # `is not None`: a compiled model has no truth value (torch.compile's wrapper raises on len())
        self.fwd = forward if forward is not None else (DDP(model) if info.enabled else model)
        self.loss_fn, self.pair_loss = run.loss, run.pair_loss
        self.objective, self.neighbours = unlabeled_objective(cfg, data, plan.unlabeled, device, run_dir, info.main)
        self.order = BatchOrder(cfg.seed, plan, info, device)
        self.annotators = annotators  # --annotator-model flip: per-annotator flip rates, trained with the model
        self._t0 = 0.0

    def notify(self, event: str, **kw) -> None:
        """Tell every callback of ``event`` (a method name of :class:`~relcomp.callbacks.Callback`)."""
        for cb in self.callbacks:
            getattr(cb, event)(self, **kw)

    def run(self) -> None:
        st, plan = self.state, self.plan
        self.model.train()
        self._t0 = time.perf_counter() - st.elapsed
        bar = progress_bar(self, plan.total, st.samples)
        self.notify("on_train_begin")
        with sigint_flag() as interrupted:
            try:
                while st.samples < plan.total and not st.stopped_early:
                    idx, take = self.order.next(st.samples)
                    self.train_step(idx, take)
                    self.notify("on_step_end")
                    bar.update(take)
                    if st.step % 20 == 0:
                        bar.set_postfix(loss=f"{st.run_loss / st.run_seen:.4f}", acc=f"{st.run_correct / st.run_seen:.4f}")
                    interrupted["set"] = any_rank(interrupted["set"], self.info, self.device)
                    if st.samples % plan.eval_every == 0 or st.samples >= plan.total:
                        row = self.evaluate_and_log()
                        if not bar.disable:
                            bar.write(describe(row, plan.total))
                    if interrupted["set"]:
                        break
            finally:
                bar.close()  # before any message, so that it stands on its own line
        self.notify("on_train_end")
        if interrupted["set"] and not st.finished:
            st.elapsed = time.perf_counter() - self._t0
            self.checkpoint()
            raise TrainingInterrupted(f"interrupted after {st.samples:,} samples; checkpoint saved. "
                                      f"Continue with: relcomp train --resume {self.run_dir}")

    def train_step(self, idx: torch.Tensor, take: int) -> None:
        """One optimizer step on the samples ``idx`` (``take`` of them across all ranks)."""
        st = self.state
        inputs, target, weight = self.data.batch(idx)
        inputs = tuple(augment(x, self.cfg.augment) for x in inputs)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=(self.precision == "bf16")):
            out = self.fwd(*inputs)
            loss = self.loss_fn(out, target, weight, self.noise(idx))
            extra = unlabeled_loss(self.model, self.data, self.cfg, self.objective, self.neighbours)
        total = loss if extra is None else loss + extra
        # Each rank holds len(idx) of the take samples; scaling by world x share makes the DDP
        # average of the ranks' gradients equal to the gradient of the global mean.
        scaled = total * (len(idx) * self.info.world / take) if self.info.enabled else total
        if any_rank(not torch.isfinite(total).item(), self.info, self.device):
            raise TrainingError(f"loss became {total.item()} at step {st.step} ({st.samples} samples); "
                                f"the last good checkpoint is kept in {self.run_dir}")
        self.opt.zero_grad(set_to_none=True)
        scaled.backward()
        self.opt.step()
        st.step += 1
        st.samples += take
        st.run_loss += loss.item() * len(idx)
        st.run_correct += float((pair_predictions(self.loss_fn.logits(out.detach())) == target.long()).sum())
        st.run_seen += len(idx)

    def noise(self, idx: torch.Tensor) -> float | torch.Tensor:
        """The flip rate the loss corrects for: one rate (``--noise-correction``), or each pair's
        annotator's learned rate (``--annotator-model flip``)."""
        if self.annotators is None:
            return self.state.noise
        return self.annotators(self.data.annotators(idx))

    def evaluate_and_log(self) -> dict[str, Any]:
        """Validate, estimate noise, then tell the callbacks (log, keep the best weights,
        checkpoint, and the caller's). Returns the metrics row."""
        st = self.state
        t_eval = time.perf_counter()
        m = validate(self.model, self.pair_loss, self.data, self.info, self.precision)
        if self.cfg.noise_correction == "estimate" and m.get("rel_acc") is not None:
            st.noise = estimated_noise(m["rel_acc"])
        st.run_loss, st.run_correct, st.run_seen = sum_values([st.run_loss, st.run_correct, st.run_seen],
                                                              self.info, self.device)
        st.elapsed = time.perf_counter() - self._t0
        st.eval_time += time.perf_counter() - t_eval
        row = metrics_row(st, self.plan.n, m, self.cfg.noise_correction != "none")
        st.run_loss = st.run_correct = st.run_seen = 0.0
        st.finished = st.samples >= self.plan.total
        self.notify("on_eval", row=row)
        return row

    def checkpoint(self) -> None:
        if self.annotators is not None:
            self.state.annotator_logits = self.annotators.theta.detach().cpu().tolist()
        rng_states = gather_objects(torch.get_rng_state(), self.info)
        if self.info.main:
            save_checkpoint(self.run_dir, self.model, {"state": dataclasses.asdict(self.state),
                                                   "optimizer": self.opt.state_dict(), "torch_rng": rng_states[0],
                                                   "torch_rng_ranks": rng_states},
                            self.state.step, self.state.samples, self.metadata)
        barrier(self.info)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``: derived from (seed, epoch) alone, so a resumed run
    needs no saved sampler state and takes exactly the batches it would have taken, and every
    rank of a distributed run computes the same order without communicating."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


@contextmanager
def sigint_flag() -> Iterator[dict]:
    """While inside, Ctrl-C (SIGINT) only sets ``flag["set"]``: the loop stops at the next step
    boundary and checkpoints. Off the main thread signals cannot be caught; the flag stays False."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: flag.__setitem__("set", True))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def describe(row: dict, total: int) -> str:
    parts = [f"{row['samples']:>9,}/{total:,}", f"loss {row['train_loss']:.4f}"]
    if row["val_rel_acc"] is not None:
        parts.append(f"val rel {row['val_rel_acc']:.4f}")
    if row["val_cls_acc"] is not None:
        parts.append(f"val cls {row['val_cls_acc']:.4f}")
    parts.append(f"{row['time_s']:.0f}s")
    return "  ".join(parts)


def unlabeled_choice(cfg: TrainConfig, data: Data) -> str | None:
    """The objective the run uses on its unlabeled items (``--unlabeled auto`` resolved on this
    data), or None where there is none."""
    if data.unlabeled is None:
        return None
    comparisons = data.n_train if data.train_pairs is not None else 0
    return objective_name(cfg.unlabeled, len(data.unlabeled), comparisons, cfg.data.groups_measured)


def unlabeled_objective(cfg: TrainConfig, data: Data, name: str | None, device: torch.device, run_dir: Path,
                        main: bool) -> tuple[Objective | None, torch.Tensor | None]:
    """The objective ``name`` (the run's ``--unlabeled``, resolved: :attr:`Plan.unlabeled`), with
    its target class proportions (None: equal), prepared on the training items (what it records
    goes to ``unlabeled.json``), and for two views of feature vectors each unlabeled item's
    nearest neighbours."""
    props = cfg.class_proportions
    prior = None if props is None else torch.tensor(props, device=device) / sum(props)
    objective = get_objective(name, prior)
    if objective is None:
        return None, None
    if cfg.unlabeled == "auto" and name != "balance" and cfg.progress and main:
        print(f"relcomp: --unlabeled auto: {name} ({len(data.unlabeled):,} images nobody compared, "
              f"{data.n_train:,} comparisons); --unlabeled balance to only balance the classes", file=sys.stderr)
    record = objective.prepare(data, cfg.num_classes, cfg.seed, cfg.progress and main)
    if record is not None and main:
        write_json_atomic(run_files(run_dir).unlabeled, {"objective": name, **record})
    two_feature_views = objective.views > 1 and data.train_x.ndim == 2
    return objective, nearest_neighbours(data.train_x) if two_feature_views else None


def unlabeled_loss(model: RelcompModel, data: Data, cfg: TrainConfig, objective: Objective | None,
                   neighbours: torch.Tensor | None) -> torch.Tensor | None:
    """The ``--unlabeled`` objective (:mod:`relcomp.unlabeled`) on ``unlabeled_batch`` items drawn
    from ``data.unlabeled``, its views embedded in one batch; None where it is off."""
    pool = data.unlabeled
    if pool is None or objective is None:
        return None
    rows = pool[torch.randint(len(pool), (cfg.unlabeled_batch,)).to(pool.device)]
    parts = views(data.train_x, rows, objective.views, cfg.augment, neighbours)
    logits = model.item_output(model.embed(torch.cat(parts))).chunk(len(parts))
    return cfg.unlabeled_weight * objective(list(logits), rows)


def validate(model: RelcompModel, pair_loss, data: Data, info: DistInfo, precision: str) -> dict[str, Any]:
    """Val metrics; in a distributed run each rank embeds its own shard of the val images and the
    outputs are gathered (no padding duplicates), then every rank scores the same full set."""
    n = len(data.val_x)  # one process: the shard is the whole split and gathering is a no-op
    a, b = shard_range(n, info)
    _, out = item_outputs(model, data.val_x[a:b], precision)
    return score_outputs(model, pair_loss, gather_rows(out, n, info), data.val_y, data.val_pairs)


class BatchOrder:
    """Which samples each step takes: the permutation of each epoch (:func:`epoch_order`), cut into
    global batches that never cross an epoch end or an evaluation point."""

    def __init__(self, seed: int, plan: Plan, info: DistInfo, device: torch.device):
        self.seed, self.plan, self.info, self.device = seed, plan, info, device
        self.epoch, self.perm = -1, torch.empty(0, dtype=torch.long)

    def next(self, samples: int) -> tuple[torch.Tensor, int]:
        """This rank's sample indices of the next global batch after ``samples``, and the global
        batch size."""
        plan = self.plan
        epoch, offset = divmod(samples, plan.n)
        if epoch != self.epoch:  # one copy to the device an epoch, not one a step
            self.epoch, self.perm = epoch, epoch_order(self.seed, epoch, plan.n).to(self.device)
        next_eval = (samples // plan.eval_every + 1) * plan.eval_every
        take = min(plan.batch, plan.n - offset, plan.total - samples, next_eval - samples)
        return local_slice(self.perm[offset:offset + take], self.info), take


def estimated_noise(val_rel_acc: float) -> float:
    """``--noise-correction estimate``: the val outcomes are as noisy as the train ones; a model
    that is right on the clean relation disagrees with about a fraction e of them (capped)."""
    return min(max(1.0 - val_rel_acc, 0.0), 0.45)


def metrics_row(st: TrainState, n: int, m: dict[str, Any], with_noise: bool) -> dict[str, Any]:
    """An evaluation's row: counters, the interval's train loss and accuracy, the val metrics, the
    clock readings (which LogMetrics keeps out of metrics.jsonl) and the corrected noise rate."""
    row = {"step": st.step, "samples": st.samples, "epoch": st.samples / n,
           "train_loss": st.run_loss / max(st.run_seen, 1), "train_acc": st.run_correct / max(st.run_seen, 1),
           "val_rel_acc": m.get("rel_acc"), "val_cls_acc": m.get("cls_acc"),
           **({"val_classes_used": m["classes_used"]} if "classes_used" in m else {}),
           "time_s": round(st.elapsed, 3),  # wall time, evaluations included
           "train_time_s": round(st.elapsed - st.eval_time, 3)}  # steps only
    if with_noise:
        row["noise_rate"] = st.noise  # the rate the loss corrects for from here on
    return row


def progress_bar(trainer: Trainer, total: int, done: int) -> tqdm:
    return tqdm(total=total, initial=done, unit="pair" if trainer.data.train_pairs is not None else "img",
                unit_scale=True, disable=not (trainer.cfg.progress and trainer.info.main), desc=trainer.cfg.model,
                dynamic_ncols=True, leave=False)

