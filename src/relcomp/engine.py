"""One training loop for every relcomp model.

``train`` reads top to bottom: check the run folder, load the data, build the model and
optimizer, resume if a checkpoint exists, then step through a fixed budget of *samples* (images
for the supervised model, pairs for relational ones), evaluating on the val split at fixed
intervals. Every step is the same for every model: ``out = model(*inputs)`` and
``loss = loss_fn(out, target, weight, noise)`` (see :mod:`relcomp.models` for the contract).

What happens around the loop is a list of callbacks (:mod:`relcomp.callbacks`): after each
evaluation the default ones log the metrics, keep the best weights (and announce a new best model
on disk) and checkpoint; a caller's callbacks follow, e.g. :class:`~relcomp.callbacks.StopWhen`.
"""
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

from .annotators import LR as ANNOTATOR_LR
from .annotators import AnnotatorFlips, annotator_counts, build_annotators
from .augment import augment
from .callbacks import Callback, default_callbacks
from .checkpoint import has_checkpoint, load_checkpoint, load_weights, remove_orphans, save_checkpoint
from .config import TrainConfig, run_loss
from .data.comparisons import ValidationReport
from .data.sources import Data
from .distributed import DistInfo, any_rank, barrier, gather_objects, gather_rows, local_slice, shard_range, sum_values
from .distributed import from_env as dist_from_env
from .distributed import setup as dist_setup
from .errors import ConfigError, TrainingError, TrainingInterrupted
from .losses import balance_loss, pair_predictions
from .metrics import item_outputs, score_outputs
from .models import RelcompModel, model_class
from .plots import plot_curves
from .run import (
    build_run_model,
    load_config,
    model_metadata,
    read_metrics,
    read_resolved,
    run_files,
    run_title,
    truncate_metrics,
)
from .utils import resolve_device, resolve_precision, seed_everything, write_json_atomic


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


def train(cfg: TrainConfig, out: str | Path, resume: bool = False,
          callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out``; return the final summary.

    With ``resume=True`` an existing checkpoint in ``out`` is continued to the same budget.
    ``callbacks`` (:class:`~relcomp.callbacks.Callback`) are told of the loop's events after the
    default ones (:func:`~relcomp.callbacks.default_callbacks`); :class:`~relcomp.callbacks.StopWhen`
    stops training at an evaluation (the summary then says ``stopped_early``).

    Under torchrun (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel,
    ``batch_size`` is per process (the global batch is ``world x batch_size``), budgets count
    global samples, and only rank 0 writes into ``out``.

    Raises:
        ConfigError: invalid settings, or an existing run folder with another config.
        TrainingError: a non-finite loss.
        TrainingInterrupted: Ctrl-C (SIGINT); a checkpoint was saved first.
    """
    cfg.validate()
    cfg = cfg.resolved()
    out, info = Path(out), dist_from_env()
    old_fingerprint = check_run_folder(cfg, out, resume)
    seed_everything(cfg.seed + info.rank, cfg.deterministic)  # dropout masks differ across ranks
    device = dist_setup(info, resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg, out, device, old_fingerprint, info.main)
    model = build_run_model(cfg).to(device)
    if cfg.init_from:
        init_weights(cfg, model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    annotators = build_annotators(cfg.annotator_model, data.train_pairs, info.world)
    groups = [{"params": model.parameters()}]
    if annotators is not None:
        annotators.to(device)
        groups.append({"params": annotators.parameters(), "lr": ANNOTATOR_LR, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = data.n_train
    plan = Plan(cfg.budget(n), cfg.resolved_batch_size() * info.world, cfg.eval_every or min(n, 100_000), n)
    if info.main:
        write_json_atomic(run_files(out).config, {**cfg.to_dict(), "resolved": resolved(cfg, plan, info, device,
                                                                                        precision, data)})
    barrier(info)  # rank 0 may have created the folder; everyone now sees the same files
    state = restore(cfg, out, model, opt, info, resume)
    if annotators is not None and state.annotator_logits is not None:
        annotators.theta.data = torch.tensor(state.annotator_logits, device=device)
    if not state.finished:
        Trainer(cfg, out, model, opt, data, plan, state, info, device, precision, annotators,
                [*default_callbacks(), *callbacks]).run()
        if info.main:
            plot_curves(read_metrics(out), run_files(out).curves, title=run_title(cfg))
    return summary(out, state)


def init_weights(cfg: TrainConfig, model: RelcompModel) -> None:
    """``--init-from RUN``: start from that run's best weights (the same model and input).

    Raises:
        ConfigError: the run is not there, or holds another model or input.
    """
    other = load_config(cfg.init_from)
    if (other.model, other.relation, other.num_classes, other.data.input_shape(), other.backbone) != (
            cfg.model, cfg.relation, cfg.num_classes, cfg.data.input_shape(), cfg.backbone):
        raise ConfigError(f"--init-from {cfg.init_from}: that run is a {other.model} ({other.relation}, "
                          f"{other.num_classes} classes, input {other.data.input_shape()}, backbone {other.backbone}); "
                          "it must match the one being trained")
    load_weights(run_files(cfg.init_from).best, model)


def check_run_folder(cfg: TrainConfig, out: Path, resume: bool) -> dict | None:
    """Refuse a folder that holds another run (or this one, without ``resume``); return the data
    fingerprint the existing run was started on."""
    if not run_files(out).config.exists():
        return None
    if load_config(out).semantic() != cfg.semantic():
        raise ConfigError(f"{out} holds a run with another config; choose another --out or --resume it as it is")
    if has_checkpoint(out) and not resume:
        raise ConfigError(f"{out} already holds this run; pass --resume to continue it")
    return read_resolved(out).get("data_fingerprint")


def load_data(cfg: TrainConfig, out: Path, device: torch.device, old_fingerprint: dict | None, main: bool) -> Data:
    """The source's data on ``device``; a resumed run must find the data it started on."""
    cls = model_class(cfg.model)
    data = cfg.data.load(device, cls.relational, cfg.relation, cfg.num_classes if cls.classifies else None,
                         cfg.progress)
    if old_fingerprint is not None and data.fingerprint != old_fingerprint:
        changed = [k for k in data.fingerprint if data.fingerprint.get(k) != old_fingerprint.get(k)]
        raise ConfigError(f"{out}: the {', '.join(changed)} changed since this run started; "
                          "train a new run (another --out) on the new data")
    if data.report is not None and main:
        write_json_atomic(run_files(out).validation, data.report)
        if cfg.progress:
            print(ValidationReport(**data.report).text(), file=sys.stderr)
    if cfg.unlabeled == "off" or not (cls.relational and cls.classifies):
        data.unlabeled = None  # the class-balance term needs a model that names classes
    if cfg.channels_last and data.train_x.ndim == 4:
        data.train_x = data.train_x.contiguous(memory_format=torch.channels_last)
        data.val_x = data.val_x.contiguous(memory_format=torch.channels_last)
    return data


def resolved(cfg: TrainConfig, plan: Plan, info: DistInfo, device: torch.device, precision: str,
             data: Data) -> dict[str, Any]:
    """What ``config.json`` records beside the config: the choices the trainer made."""
    return {"device": str(device), "precision": precision, "budget_samples": plan.total, "batch_size": plan.batch,
            "world_size": info.world, "eval_every": plan.eval_every, "n_train": plan.n,
            "selection_metric": model_class(cfg.model).selection_metric, "torch": torch.__version__,
            "data_fingerprint": data.fingerprint}


def restore(cfg: TrainConfig, out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, info: DistInfo,
            resume: bool) -> TrainState:
    """A fresh state, or the checkpoint's (weights, optimizer, RNG and counters) when resuming."""
    if not (resume and has_checkpoint(out)):
        if info.main:
            truncate_metrics(out, None)
        return TrainState(noise=cfg.flip_rate if cfg.noise_correction == "given" else 0.0)
    if info.main:
        remove_orphans(out)  # files of a write that a kill interrupted
    saved = load_checkpoint(out, model)
    opt.load_state_dict(saved["optimizer"])
    rng = saved.get("torch_rng_ranks") or [saved["torch_rng"]]
    if len(rng) == info.world:
        torch.set_rng_state(rng[info.rank])
    state = TrainState.from_saved(saved["state"])
    if info.main:  # metrics written after the checkpoint belong to work that will be redone
        truncate_metrics(out, state.samples)
    return state


class Trainer:
    """The loop and its steps, over one run's model, optimizer, data and state."""

    def __init__(self, cfg: TrainConfig, out: Path, model: RelcompModel, opt: torch.optim.Optimizer, data: Data,
                 plan: Plan, state: TrainState, info: DistInfo, device: torch.device, precision: str,
                 annotators: AnnotatorFlips | None = None, callbacks: Sequence[Callback] = (),
                 forward: Callable[..., torch.Tensor] | None = None):
        self.cfg, self.out, self.model, self.opt, self.data = cfg, out, model, opt, data
        self.plan, self.state, self.info, self.device, self.precision = plan, state, info, device, precision
        self.callbacks = list(callbacks)
        self.files, self.metadata = run_files(out), model_metadata(cfg)
        # what a step calls: the model, its DDP wrapper, or a compiled model (the bench's ablation)
        self.fwd = forward or (DDP(model) if info.enabled else model)
        self.loss_fn, self.pair_loss = run_loss(cfg), run_loss(cfg, pairs=True)
        props = cfg.class_proportions
        self.prior = None if props is None else torch.tensor(props, device=device) / sum(props)
        self._order: tuple[int, torch.Tensor] | None = None
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
        bar = tqdm(total=plan.total, initial=st.samples, unit="pair" if self.data.train_pairs is not None else "img",
                   unit_scale=True, disable=not (self.cfg.progress and self.info.main), desc=self.cfg.model,
                   dynamic_ncols=True, leave=False)
        self.notify("on_train_begin")
        with sigint_flag() as interrupted:
            try:
                while st.samples < plan.total and not st.stopped_early:
                    idx, take = self.next_batch()
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
                                      f"Continue with: relcomp train --resume {self.out}")

    def next_batch(self) -> tuple[torch.Tensor, int]:
        """This rank's sample indices of the next global batch, and the global batch size. A batch
        never crosses an epoch end or an evaluation point."""
        st, plan = self.state, self.plan
        epoch, offset = divmod(st.samples, plan.n)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.cfg.seed, epoch, plan.n))
        next_eval = (st.samples // plan.eval_every + 1) * plan.eval_every
        take = min(plan.batch, plan.n - offset, plan.total - st.samples, next_eval - st.samples)
        return local_slice(self._order[1][offset:offset + take], self.info).to(self.device), take

    def train_step(self, idx: torch.Tensor, take: int) -> None:
        """One optimizer step on the samples ``idx`` (``take`` of them across all ranks)."""
        st = self.state
        inputs, target, weight = self.data.batch(idx)
        inputs = tuple(augment(x, self.cfg.augment) for x in inputs)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=(self.precision == "bf16")):
            out = self.fwd(*inputs)
            loss = self.loss_fn(out, target, weight, self.noise(idx))
            extra = self.unlabeled_loss()
        total = loss if extra is None else loss + extra
        # Each rank holds len(idx) of the take samples; scaling by world x share makes the DDP
        # average of the ranks' gradients equal to the gradient of the global mean.
        scaled = total * (len(idx) * self.info.world / take) if self.info.enabled else total
        if any_rank(not torch.isfinite(total).item(), self.info, self.device):
            raise TrainingError(f"loss became {total.item()} at step {st.step} ({st.samples} samples); "
                                f"the last good checkpoint is kept in {self.out}")
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

    def unlabeled_loss(self) -> torch.Tensor | None:
        """The class-balance term (:func:`relcomp.losses.balance_loss`) on ``unlabeled_batch``
        images drawn from ``data.unlabeled``, augmented as the pairs are; None where it is off."""
        pool = self.data.unlabeled
        if pool is None:
            return None
        rows = pool[torch.randint(len(pool), (self.cfg.unlabeled_batch,)).to(pool.device)]
        x = augment(self.data.train_x[rows], self.cfg.augment)
        logits = self.model.item_output(self.model.embed(x))
        return self.cfg.unlabeled_weight * balance_loss(logits, self.prior)

    def evaluate(self) -> dict[str, Any]:
        """Val metrics; in a distributed run each rank embeds its own shard of the val images and the
        outputs are gathered (no padding duplicates), then every rank scores the same full set."""
        n = len(self.data.val_x)  # one process: the shard is the whole split and gathering is a no-op
        a, b = shard_range(n, self.info)
        _, out = item_outputs(self.model, self.data.val_x[a:b], self.precision)
        return score_outputs(self.model, self.pair_loss, gather_rows(out, n, self.info), self.data.val_y, self.data.val_pairs)

    def evaluate_and_log(self) -> dict[str, Any]:
        """Validate, estimate noise, then tell the callbacks (log, keep the best weights,
        checkpoint, and the caller's). Returns the metrics row."""
        st = self.state
        t_eval = time.perf_counter()
        m = self.evaluate()
        self.estimate_noise(m)
        st.run_loss, st.run_correct, st.run_seen = sum_values([st.run_loss, st.run_correct, st.run_seen],
                                                              self.info, self.device)
        st.elapsed = time.perf_counter() - self._t0
        st.eval_time += time.perf_counter() - t_eval
        row = self.metrics_row(m)
        st.run_loss = st.run_correct = st.run_seen = 0.0
        st.finished = st.samples >= self.plan.total
        self.notify("on_eval", row=row)
        return row

    def estimate_noise(self, m: dict[str, Any]) -> None:
        """``--noise-correction estimate``: the val outcomes are as noisy as the train ones; a model
        that is right on the clean relation disagrees with about a fraction e of them (capped)."""
        if self.cfg.noise_correction == "estimate" and m.get("rel_acc") is not None:
            self.state.noise = min(max(1.0 - m["rel_acc"], 0.0), 0.45)

    def metrics_row(self, m: dict[str, Any]) -> dict[str, Any]:
        st = self.state
        row = {"step": st.step, "samples": st.samples, "epoch": st.samples / self.plan.n,
               "train_loss": st.run_loss / max(st.run_seen, 1), "train_acc": st.run_correct / max(st.run_seen, 1),
               "val_rel_acc": m.get("rel_acc"), "val_cls_acc": m.get("cls_acc"),
               "time_s": round(st.elapsed, 3),  # wall time, evaluations included
               "train_time_s": round(st.elapsed - st.eval_time, 3)}  # steps only
        if self.cfg.noise_correction != "none":
            row["noise_rate"] = st.noise  # the rate the loss corrects for from here on
        return row

    def annotator_report(self) -> dict[str, Any]:
        """Each annotator's learned flip rate, judgements and flag (``--annotator-model flip``)."""
        counts = annotator_counts(self.data.train_pairs, len(self.annotators.names))
        return self.annotators.report(counts)

    def checkpoint(self) -> None:
        if self.annotators is not None:
            self.state.annotator_logits = self.annotators.theta.detach().cpu().tolist()
        rng_states = gather_objects(torch.get_rng_state(), self.info)
        if self.info.main:
            save_checkpoint(self.out, self.model, {"state": dataclasses.asdict(self.state),
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


def summary(out: Path, state: TrainState) -> dict[str, Any]:
    return {"run_dir": str(out), "samples": state.samples, "steps": state.step, "best_val": state.best,
            "best_samples": state.best_samples, "finished": state.finished, "train_time_s": state.elapsed,
            "stopped_early": state.stopped_early}
