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

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .annotators import LR as ANNOTATOR_LR
from .annotators import build_annotators
from .callbacks import Callback, default_callbacks
from .checkpoint import checkpoint_samples, has_checkpoint, load_checkpoint, load_weights, remove_orphans
from .config import Resolved, TrainConfig, resolve
from .data.comparisons import ValidationReport
from .data.splits import Data
from .distributed import DistInfo, barrier
from .distributed import from_env as dist_from_env
from .distributed import setup as dist_setup
from .errors import ConfigError, DataError, WriteError
from .models import RelcompModel
from .plots import plot_curves
from .run import (
    build_run_model,
    load_config,
    read_metrics,
    read_resolved,
    run_files,
    run_title,
    truncate_metrics,
)
from .trainer import Plan, Trainer, TrainState, unlabeled_choice
from .unlabeled import OBJECTIVES
from .utils import keep_freed_memory, make_dir, resolve_device, resolve_precision, seed_everything, write_json_atomic


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
        WriteError: a write failed (disk full ...); the message says which checkpoint is intact.
        TrainingInterrupted: Ctrl-C (SIGINT); a checkpoint was saved first.

    A call that fails before the first checkpoint removes the run folder if it created it.
    """
    run, out, info = resolve(cfg), Path(out), dist_from_env()
    old_fingerprint = check_run_folder(run.cfg, out, resume)
    created = info.main and not out.exists()
    try:
        return train_into(run, out, resume, callbacks, info, old_fingerprint)
    except BaseException as e:
        if created and not has_checkpoint(out):  # failed before anything was trained: leave no debris
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, WriteError):
            raise WriteError(f"{e}; {how_to_go_on(out)}") from None
        raise


def train_into(run: Resolved, out: Path, resume: bool, callbacks: Sequence[Callback], info: DistInfo,
               old_fingerprint: dict | None) -> dict[str, Any]:
    """:func:`train` once the run folder is checked: the loop and what it needs."""
    cfg = run.cfg
    keep_freed_memory()  # no fresh pages for each step's activations (relcomp.utils.MALLOC_SETTINGS)
    seed_everything(cfg.seed + info.rank, cfg.deterministic)  # dropout masks differ across ranks
    device = dist_setup(info, resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    if info.main:
        make_dir(out)
    data = load_data(run, out, device, old_fingerprint, info.main)
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
    plan = Plan(run.budget(n), run.batch_size * info.world, run.eval_interval(n), n,
                unlabeled=kept_unlabeled_choice(cfg, data, out, resume))
    if info.main:
        write_json_atomic(run_files(out).config, {**cfg.to_dict(), "resolved": resolved(run, plan, info, device,
                                                                                        precision, data)})
    barrier(info)  # rank 0 may have created the folder; everyone now sees the same files
    state = restore(cfg, out, model, opt, info, resume)
    if annotators is not None and state.annotator_logits is not None:
        annotators.theta.data = torch.tensor(state.annotator_logits, device=device)
    if not state.finished:
        Trainer(run, out, model, opt, data, plan, state, info, device, precision, annotators,
                [*default_callbacks(), *callbacks]).run()
        if info.main:
            plot_curves(read_metrics(out), run_files(out).curves, title=run_title(cfg))
    return summary(out, state)


def how_to_go_on(out: Path) -> str:
    """What to do after a failed write, by what the run folder still holds."""
    samples = checkpoint_samples(out)
    if samples is None:
        return "nothing was trained yet; free space and run the same command again"
    return f"the last checkpoint ({samples:,} samples) is intact; free space and run `relcomp train --resume {out}`"


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
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out names a run folder")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"{out} is under {above}, which is a file; --out names a run folder")
    if not run_files(out).config.exists():
        return None
    if load_config(out).semantic() != cfg.semantic():
        raise ConfigError(f"{out} holds a run with another config; choose another --out or --resume it as it is")
    if has_checkpoint(out) and not resume:
        raise ConfigError(f"{out} already holds this run; pass --resume to continue it")
    return read_resolved(out).get("data_fingerprint")


def load_data(run: Resolved, out: Path, device: torch.device, old_fingerprint: dict | None, main: bool) -> Data:
    """The source's data on ``device``; a resumed run must find the data it started on."""
    cfg, cls = run.cfg, run.model_cls
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
        data.unlabeled = None  # the objectives on unlabeled images need a model that names classes
    elif cfg.unlabeled != "auto" and len(data.unlabeled if data.unlabeled is not None else ()) < cfg.num_classes:
        n = 0 if data.unlabeled is None else len(data.unlabeled)  # None: every image is in a compared pair
        raise DataError(f"--unlabeled {cfg.unlabeled} groups the unlabeled images into {cfg.num_classes} classes, "
                        f"but there are only {n} of them; use fewer --classes or more images")
    if cfg.channels_last and data.train_x.ndim == 4:
        data.train_x = data.train_x.contiguous(memory_format=torch.channels_last)
        data.val_x = data.val_x.contiguous(memory_format=torch.channels_last)
    return data


def kept_unlabeled_choice(cfg: TrainConfig, data: Data, out: Path, resume: bool) -> str | None:
    """The objective on the items nobody compared: ``--unlabeled`` resolved on this data, or for a
    resumed run the one it started with, which ``auto``'s rule may have changed since (a run
    started before ``config.json`` recorded it ran ``auto`` as the balance term).

    Raises:
        DataError: the run's config.json records an objective relcomp does not have.
    """
    choice = unlabeled_choice(cfg, data)
    if choice is None or not (resume and has_checkpoint(out)):
        return choice
    before = read_resolved(out).get("unlabeled", "balance" if cfg.unlabeled == "auto" else choice)
    if before not in OBJECTIVES:
        raise DataError(f"{run_files(out).config}: resolved.unlabeled is {before!r}, not one of {', '.join(OBJECTIVES)}")
    return before


def resolved(run: Resolved, plan: Plan, info: DistInfo, device: torch.device, precision: str,
             data: Data) -> dict[str, Any]:
    """What ``config.json`` records beside the config: the choices the trainer made."""
    return {"device": str(device), "precision": precision, "budget_samples": plan.total, "batch_size": plan.batch,
            "world_size": info.world, "eval_every": plan.eval_every, "n_train": plan.n,
            "selection_metric": run.model_cls.selection_metric, "torch": torch.__version__,
            "unlabeled": plan.unlabeled,
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


def summary(out: Path, state: TrainState) -> dict[str, Any]:
    return {"run_dir": str(out), "samples": state.samples, "steps": state.step, "best_val": state.best,
            "best_samples": state.best_samples, "finished": state.finished, "train_time_s": state.elapsed,
            "stopped_early": state.stopped_early}
