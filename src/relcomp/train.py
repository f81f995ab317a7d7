"""One training loop for every relcomp model.

Reads top to bottom: resolve the config, load the data into one float tensor per split, build
the model and optimizer, resume if a checkpoint exists, then step through a fixed budget of
*samples* (images for the supervised model, pairs for relational ones), evaluating on the val
split at fixed intervals, keeping the best weights, and checkpointing after every evaluation.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import has_checkpoint, load_checkpoint, remove_orphans, save_checkpoint, save_weights
from .distributed import DistInfo, any_rank, barrier, gather_objects, gather_rows, local_slice, shard_range, sum_values
from .distributed import from_env as dist_from_env
from .distributed import setup as dist_setup
from .data.mnist import MNIST, Split, load_mnist
from .data.pairs import Pairs, make_pairs, mnist_pairs
from .errors import ConfigError, RelcompError
from .losses import WEAK_LOSSES, pair_predictions, relation_loss, weak_relation_loss
from .models import build_model, can_classify, is_relational
from .utils import (append_jsonl, parse_count, read_jsonl, resolve_device, resolve_precision,
                    seed_everything, write_json_atomic)


class TrainingError(RelcompError):
    """Training cannot go on (a non-finite loss, ...)."""


@dataclass
class TrainConfig:
    """Every setting of a training run; ``config.json`` in the run folder is this, resolved."""

    model: str = "weak"                 # supervised | siamese | weak | ranker
    pairs: str = "50k"                  # size of the train pair set (relational models)
    epochs: float | None = None         # budget in passes over the training set ...
    samples: int | None = None          # ... or in samples seen (images or pairs); one of the two
    batch_size: int | None = None       # None: 64 supervised, 128 relational (the paper)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "correct"               # weak model: correct | paper-code
    eval_every: int | None = None       # samples between evaluations; None: one epoch, at most 100k
    val_pairs: int = 20_000
    train_subset: int | None = None     # use only the first N train images (tests, smoke profile)
    val_subset: int | None = None       # use only the first N val images
    pair_seed: int = 42                 # seed of the pair sets (the data), separate from the model seed
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"             # auto | bf16 | fp32 (bf16 autocast, fp32 master weights)
    channels_last: bool = True          # NHWC activations: about 1.4x faster with bf16 on CPU, same math
    dropout: float = 0.2                # the paper's; 0 makes runs comparable step for step (tests)
    deterministic: bool = False
    num_classes: int = 10               # K ordered classes of the weak model (and the supervised head)
    data_dir: str | None = None
    progress: bool = True
    # A user's own data instead of MNIST (see relcomp.data.comparisons for the file formats).
    images: str | None = None           # image folder or .npy array
    comparisons: str | None = None      # CSV/Parquet: a, b, outcome[, annotator, weight]
    labels: str | None = None           # optional CSV/Parquet: item, label (evaluation and few-shot)
    image_size: int = 28                # every image is resized to image_size x image_size ...
    channels: int = 1                   # ... and converted to 1 (grayscale) or 3 (RGB) channels
    val_fraction: float = 0.1           # share of distinct compared pairs held out for validation
    contradictions: str = "keep"        # pairs judged both ways: keep | drop | majority
    # Beyond the paper.
    relation: str = "gt"                # gt (A > B, ties dropped) | ge (ties a third outcome) | same (same class?)
    flip_rate: float = 0.0              # corrupt this fraction of the train and val comparisons (seeded)
    noise_correction: str = "none"      # none | given (forward correction with flip_rate) | estimate (from val)

    def validate(self) -> None:
        """Raises: ConfigError on an impossible setting."""
        from .models import MODELS

        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        if self.loss not in WEAK_LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose from {', '.join(WEAK_LOSSES)}")
        if self.loss != "correct" and self.model != "weak":
            raise ConfigError("--loss paper-code applies to the weak model only")
        if self.epochs is not None and self.samples is not None:
            raise ConfigError("give --epochs or --samples, not both")
        for name in ("epochs", "samples", "batch_size", "eval_every", "train_subset", "val_subset"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        parse_count(self.pairs)
        if (self.images is None) != (self.comparisons is None):
            raise ConfigError("user data needs both --images and --comparisons")
        if self.labels is not None and self.images is None:
            raise ConfigError("--labels applies to user data (--images and --comparisons)")
        if self.images is not None and not self.relational:
            raise ConfigError(f"the {self.model} model needs labels for every image; train siamese or weak on comparisons")
        if self.image_size < 4 or self.image_size % 4:
            raise ConfigError(f"--image-size must be a positive multiple of 4, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"--channels must be 1 or 3, got {self.channels}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        from .data.comparisons import CONTRADICTIONS

        if self.contradictions not in CONTRADICTIONS:
            raise ConfigError(f"--contradictions must be one of {', '.join(CONTRADICTIONS)}")
        from .data.pairs import RELATIONS

        if self.relation not in RELATIONS:
            raise ConfigError(f"--relation must be one of {', '.join(RELATIONS)}, got {self.relation!r}")
        if self.relation != "gt" and (self.user_data or not self.relational):
            raise ConfigError("--relation ge/same applies to relational models on MNIST (user comparisons are A > B judgements)")
        if self.loss != "correct" and self.relation != "gt":
            raise ConfigError("--loss paper-code exists for the gt relation only")
        if not 0 <= self.flip_rate < 0.5:
            raise ConfigError(f"--flip-rate must be in [0, 0.5), got {self.flip_rate}")
        if self.noise_correction not in NOISE_CORRECTIONS:
            raise ConfigError(f"--noise-correction must be one of {', '.join(NOISE_CORRECTIONS)}")
        if self.noise_correction == "given" and self.flip_rate == 0:
            raise ConfigError("--noise-correction given uses --flip-rate as the noise rate; give a --flip-rate > 0")
        if self.noise_correction != "none" and self.loss != "correct":
            raise ConfigError("noise correction applies to the correct loss")
        if self.num_classes < 2:
            raise ConfigError(f"--classes must be at least 2, got {self.num_classes}")

    @property
    def user_data(self) -> bool:
        return self.images is not None

    @property
    def relational(self) -> bool:
        return is_relational(self.model)

    @property
    def n_pairs(self) -> int:
        return parse_count(self.pairs)

    def resolved_batch_size(self) -> int:
        return self.batch_size or (128 if self.relational else 64)


NOISE_CORRECTIONS = ("none", "given", "estimate")


def default_budget(cfg: TrainConfig, n_train: int) -> int:
    """Samples to train for: explicit --samples, else --epochs x set size, else 5 epochs
    (supervised) or 150k pairs (relational; about a minute on a 2-core CPU with bf16)."""
    if cfg.samples is not None:
        return int(cfg.samples)
    if cfg.epochs is not None:
        return int(round(cfg.epochs * n_train))
    return 5 * n_train if not cfg.relational else 150_000


# ----------------------------------------------------------------------------------------------
# Data: each split becomes one normalised float tensor; batches are index gathers into it.

@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    train_pairs: Pairs | None
    val_pairs: Pairs | None
    fingerprint: dict | None = None   # user data: hashes of the inputs, checked on resume
    report: dict | None = None        # user data: the validation report

    @property
    def n_train(self) -> int:
        return len(self.train_pairs) if self.train_pairs is not None else len(self.train_y)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def _subset(split: Split, n: int | None) -> Split:
    return split if n is None else Split(split.name, split.images[:n], split.labels[:n])


def prepare_data(cfg: TrainConfig, device: torch.device, mnist: MNIST | None = None) -> Data:
    if cfg.user_data:
        return _prepare_user_data(cfg, device)
    mnist = mnist or load_mnist(cfg.data_dir)
    train, val = _subset(mnist.train, cfg.train_subset), _subset(mnist.val, cfg.val_subset)
    train_pairs = val_pairs = None
    rel = cfg.relation
    if cfg.relational:
        if cfg.train_subset is None:
            train_pairs = mnist_pairs(mnist, "train", cfg.n_pairs, cfg.pair_seed, rel, data_dir=cfg.data_dir)
        else:  # a subset's pairs are cheap and not the paper's: make them in memory
            train_pairs = make_pairs(train.labels, cfg.n_pairs, cfg.pair_seed, rel)
    if cfg.val_subset is None:
        val_pairs = mnist_pairs(mnist, "val", cfg.val_pairs, cfg.pair_seed, rel, data_dir=cfg.data_dir)
    else:
        val_pairs = make_pairs(val.labels, cfg.val_pairs, cfg.pair_seed + 1, rel)
    if cfg.flip_rate > 0:
        # Noisy annotators everywhere but in the test set: train and val outcomes are corrupted.
        from .data.pairs import flip_outcomes

        train_pairs = flip_outcomes(train_pairs, cfg.flip_rate, cfg.pair_seed + 7, rel)
        val_pairs = flip_outcomes(val_pairs, cfg.flip_rate, cfg.pair_seed + 8, rel)
    return Data(to_tensor(train.images, device), torch.from_numpy(train.labels).to(device),
                to_tensor(val.images, device), torch.from_numpy(val.labels).to(device),
                train_pairs, val_pairs)


def load_user_data_for(cfg: TrainConfig):
    """The run's user data, loaded and validated as ``cfg`` says."""
    from .data.user import load_user_data

    return load_user_data(cfg.images, cfg.comparisons, cfg.labels, cfg.image_size, cfg.channels, cfg.val_fraction,
                          cfg.pair_seed, cfg.contradictions, cfg.num_classes if cfg.model == "weak" else None,
                          progress=cfg.progress)


def _prepare_user_data(cfg: TrainConfig, device: torch.device) -> Data:
    """All images form one tensor that the train pairs index; validation embeds only the items
    that the held-out pairs (or the labels) touch, re-indexed."""
    ud = load_user_data_for(cfg)
    n = len(ud.images)
    y = ud.labels if ud.labels is not None else np.full(n, -1, np.int64)
    touched = np.zeros(n, bool)
    touched[ud.val.i] = touched[ud.val.j] = True
    rows = np.flatnonzero(touched | (y >= 0))
    remap = np.full(n, -1, np.int32)
    remap[rows] = np.arange(len(rows), dtype=np.int32)
    val = Pairs(remap[ud.val.i], remap[ud.val.j], ud.val.z, dict(ud.val.meta, split_size=len(rows)), ud.val.w)
    x = to_tensor(ud.images.images, device)
    yt = torch.from_numpy(y).to(device)
    return Data(x, yt, x[torch.from_numpy(rows).to(device)], yt[torch.from_numpy(rows).to(device)], ud.train, val,
                fingerprint=ud.fingerprint, report=ud.report())


def pairs_to_device(pairs: Pairs, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(i, j, z, w) tensors; ``w`` is None when the pairs carry no weights."""
    return (torch.from_numpy(pairs.i.astype(np.int64)).to(device),
            torch.from_numpy(pairs.j.astype(np.int64)).to(device),
            torch.from_numpy(pairs.z.astype(np.float32)).to(device),
            None if pairs.w is None else torch.from_numpy(pairs.w.astype(np.float32)).to(device))


# ----------------------------------------------------------------------------------------------
# Evaluation on a split: one backbone pass over its images, then cheap heads on the outputs.

@torch.no_grad()
def item_outputs(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32",
                 batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, item outputs) for every image of ``x``, in fp32, in eval mode."""
    was_training = model.training
    model.eval()
    embs, outs = [], []
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=(precision == "bf16")):
        for k in range(0, len(x), batch):
            e = model.embed(x[k:k + batch])
            embs.append(e.float())
            outs.append(model.item_output(e).float())
    model.train(was_training)
    return torch.cat(embs), torch.cat(outs)


@torch.no_grad()
def split_metrics(model: torch.nn.Module, kind: str, x: torch.Tensor, y: torch.Tensor,
                  pairs: Pairs | None, precision: str = "fp32") -> dict[str, Any]:
    """Relational accuracy on ``pairs`` and, where the model classifies, classification accuracy."""
    _, out = item_outputs(model, x, precision)
    return score_outputs(model, kind, out, y, pairs)


@torch.no_grad()
def score_outputs(model: torch.nn.Module, kind: str, out: torch.Tensor, y: torch.Tensor,
                  pairs: Pairs | None) -> dict[str, Any]:
    """Metrics from every image's item outputs: the pairs are scored by gathering rows of ``out``."""
    result: dict[str, Any] = {}
    if pairs is not None and len(pairs):
        i, j, z, _ = pairs_to_device(pairs, out.device)
        pred = torch.cat([pair_predictions(model.pair_logit(out[i[k:k + 65536]], out[j[k:k + 65536]]))
                          for k in range(0, len(i), 65536)])
        result["rel_acc"] = float((pred == z.long()).float().mean())
    if can_classify(kind):
        pred = out.argmax(1)
        labelled = y >= 0  # user data may label only some items (or none)
        if getattr(model, "relation", "gt") == "same":
            # Same/different comparisons identify classes only up to a permutation: map each
            # predicted cluster to the class it overlaps most (a one-to-one best matching).
            from .analysis import match_clusters

            mapping = match_clusters(pred[labelled].cpu().numpy(), y[labelled].cpu().numpy(), out.shape[1])
            pred = torch.from_numpy(mapping).to(pred.device)[pred]
        if labelled.any():
            result["cls_acc"] = float((pred[labelled] == y[labelled]).float().mean())
        result["pred"] = pred.cpu().numpy()
    return result


def selection_metric(kind: str) -> str:
    """The val metric that picks the best checkpoint: classification for the supervised model,
    relational accuracy for models trained on pairs (so they never see a label)."""
    return "val_cls_acc" if kind == "supervised" else "val_rel_acc"


# ----------------------------------------------------------------------------------------------
# The loop.

def _loss_and_correct(model, cfg: TrainConfig, data: Data, idx: torch.Tensor, pair_t, raw=None, noise: float = 0.0):
    """Forward one batch; return (loss, number correct). ``raw`` is the unwrapped model when
    ``model`` is a DistributedDataParallel wrapper; ``noise`` the forward-correction rate."""
    raw = raw or model
    if not cfg.relational:
        x, y = data.train_x[idx], data.train_y[idx]
        logits = model(x)
        return F.cross_entropy(logits.float(), y), (logits.argmax(1) == y).sum()
    pi, pj, pz, pw = pair_t
    a, b, z = pi[idx], pj[idx], pz[idx]
    w = None if pw is None else pw[idx]
    xa, xb = data.train_x[a], data.train_x[b]
    if cfg.model != "weak":  # Siamese and ranker: forward gives the pair output
        out = model(xa, xb)
        loss = relation_loss(out, z, noise, w)
        return loss, (pair_predictions(out.detach()) == z.long()).sum()
    la, lb = model(xa, xb)
    if cfg.relation == "gt" and noise == 0:  # the paper's relation: the log-space loss (or the paper's bug)
        loss = weak_relation_loss(la, lb, z, cfg.loss, w)
        with torch.no_grad():
            out = raw.pair_logit(la, lb)
    else:
        out = raw.pair_logit(la, lb)
        loss = relation_loss(out, z, noise, w)
    return loss, (pair_predictions(out.detach()) == z.long()).sum()


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``: derived from (seed, epoch) alone, so a resumed run
    needs no saved sampler state and takes exactly the batches it would have taken, and every
    rank of a distributed run computes the same order without communicating."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def model_metadata(cfg: TrainConfig) -> dict[str, Any]:
    return {"relcomp_model": cfg.model, "num_classes": cfg.num_classes, "in_channels": cfg.channels,
            "image_size": cfg.image_size, "relation": cfg.relation, "format": "relcomp-weights/1"}


def build_run_model(cfg: TrainConfig) -> torch.nn.Module:
    """The (untrained) model a config describes."""
    return build_model(cfg.model, cfg.num_classes, in_channels=cfg.channels, image_size=cfg.image_size,
                       dropout=cfg.dropout, relation=cfg.relation)


def _val_metrics(model, cfg: TrainConfig, data: Data, precision: str, info: DistInfo) -> dict[str, Any]:
    """Val metrics; in a distributed run each rank embeds its own shard of the val images and the
    outputs are gathered (no padding duplicates), then every rank scores the same full set."""
    n = len(data.val_x)  # one process: the shard is the whole split and gathering is a no-op
    a, b = shard_range(n, info)
    _, out = item_outputs(model, data.val_x[a:b], precision)
    return score_outputs(model, cfg.model, gather_rows(out, n, info), data.val_y, data.val_pairs)


def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool = False, mnist: MNIST | None = None,
          on_eval: Callable[[torch.nn.Module, dict], bool] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out``; return the final summary.

    With ``resume=True`` an existing checkpoint in ``out`` is continued to the same budget.
    ``on_eval(model, row)`` is called after each validation with its metrics row; returning True
    stops training there (the summary then says ``stopped_early``).

    Under torchrun (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel,
    ``batch_size`` is per process (the global batch is ``world x batch_size``), budgets count
    global samples, and only rank 0 writes into ``out``.

    Raises:
        ConfigError: invalid settings, or an existing run folder with another config.
        TrainingError: a non-finite loss.
    """
    cfg.validate()
    if cfg.user_data:  # a run folder must not depend on the working directory it was started from
        from .data.user import absolute

        cfg = dataclasses.replace(cfg, images=absolute(cfg.images), comparisons=absolute(cfg.comparisons),
                                  labels=absolute(cfg.labels))
    info = dist_from_env()
    out = Path(out)
    config_path = out / "config.json"
    cfg_dict = dataclasses.asdict(cfg)
    old_fingerprint = None
    if config_path.exists():
        # A setting missing from an older config.json takes its default.
        old = {**dataclasses.asdict(TrainConfig()), **json.loads(config_path.read_text())}
        old_fingerprint = (old.get("resolved") or {}).get("data_fingerprint")
        same = {k: v for k, v in old.items() if k in cfg_dict and k not in _NON_SEMANTIC} == \
               {k: v for k, v in cfg_dict.items() if k not in _NON_SEMANTIC}
        if not same:
            raise ConfigError(f"{out} holds a run with another config; choose another --out or --resume it as it is")
        if has_checkpoint(out) and not resume:
            raise ConfigError(f"{out} already holds this run; pass --resume to continue it")
    seed_everything(cfg.seed + info.rank, cfg.deterministic)  # dropout masks differ across ranks
    device = dist_setup(info, resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    main = info.main
    if main:
        out.mkdir(parents=True, exist_ok=True)

    data = prepare_data(cfg, device, mnist)
    if old_fingerprint is not None and data.fingerprint != old_fingerprint:
        changed = [k for k in data.fingerprint if data.fingerprint.get(k) != old_fingerprint.get(k)]
        raise ConfigError(f"{out}: the {', '.join(changed)} changed since this run started; "
                          "train a new run (another --out) on the new data")
    if data.report is not None and main:
        write_json_atomic(out / "validation.json", data.report)
        if cfg.progress:
            from .data.comparisons import ValidationReport

            print(ValidationReport(**data.report).text(), file=sys.stderr)
    if cfg.channels_last:
        data.train_x = data.train_x.contiguous(memory_format=torch.channels_last)
        data.val_x = data.val_x.contiguous(memory_format=torch.channels_last)
    n = data.n_train
    total = default_budget(cfg, n)
    bs = cfg.resolved_batch_size() * info.world  # global batch
    eval_every = cfg.eval_every or min(n, 100_000)
    pair_t = pairs_to_device(data.train_pairs, device) if cfg.relational else None

    model = build_run_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    metric_name = selection_metric(cfg.model)

    resolved = dict(cfg_dict, resolved={"device": str(device), "precision": precision, "budget_samples": total,
                                        "batch_size": bs, "world_size": info.world, "eval_every": eval_every,
                                        "n_train": n, "selection_metric": metric_name, "torch": torch.__version__,
                                        "data_fingerprint": data.fingerprint})
    if main:
        write_json_atomic(config_path, resolved)

    state = {"step": 0, "samples": 0, "best": -1.0, "best_samples": 0, "finished": False, "elapsed": 0.0,
             "eval_time": 0.0, "noise": cfg.flip_rate if cfg.noise_correction == "given" else 0.0}
    barrier(info)  # rank 0 may have created the folder; everyone now sees the same files
    if resume and has_checkpoint(out):
        if main:
            remove_orphans(out)  # files of a write that a kill interrupted
        saved = load_checkpoint(out, model)
        opt.load_state_dict(saved["optimizer"])
        rng = saved.get("torch_rng_ranks") or [saved["torch_rng"]]
        if len(rng) == info.world:
            torch.set_rng_state(rng[info.rank])
        state = saved["state"]
        if main:  # metrics written after the checkpoint belong to work that will be redone
            for name in ("metrics.jsonl", "timing.jsonl"):
                rows = [r for r in read_jsonl(out / name) if r["samples"] <= state["samples"]]
                _rewrite_jsonl(out / name, rows)
    elif main:
        for name in ("metrics.jsonl", "timing.jsonl"):
            (out / name).unlink(missing_ok=True)
    if state["finished"]:
        return _summary(out, state)
    fwd = DDP(model) if info.enabled else model

    def checkpoint() -> None:
        rng_states = gather_objects(torch.get_rng_state(), info)
        if main:
            save_checkpoint(out, model, {"state": dict(state), "optimizer": opt.state_dict(),
                                         "torch_rng": rng_states[0], "torch_rng_ranks": rng_states},
                            state["step"], state["samples"], model_metadata(cfg))
        barrier(info)

    interrupted = {"flag": False}
    stop = False

    def on_sigint(signum, frame):  # stop at the next step boundary, after a checkpoint
        interrupted["flag"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    model.train()
    bar = tqdm(total=total, initial=state["samples"], unit="pair" if cfg.relational else "img",
               unit_scale=True, disable=not (cfg.progress and main), desc=f"{cfg.model}", dynamic_ncols=True,
               leave=False)
    run_loss = run_correct = run_seen = 0.0
    t0 = time.perf_counter() - state["elapsed"]
    try:
        while state["samples"] < total and not interrupted["flag"] and not stop:
            epoch, offset = divmod(state["samples"], n)
            order = _epoch_order(cfg.seed, epoch, n)
            next_eval = (state["samples"] // eval_every + 1) * eval_every
            while offset < n and state["samples"] < total:
                take = min(bs, n - offset, total - state["samples"], next_eval - state["samples"])
                idx = local_slice(order[offset:offset + take], info).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(precision == "bf16")):
                    loss, correct = _loss_and_correct(fwd, cfg, data, idx, pair_t, raw=model,
                                                      noise=state.get("noise", 0.0))
                # Each rank holds len(idx) of the take samples; scaling by world x share makes the
                # DDP average of the ranks' gradients equal to the gradient of the global mean.
                scaled = loss * (len(idx) * info.world / take) if info.enabled else loss
                if any_rank(not torch.isfinite(loss).item(), info, device):
                    raise TrainingError(f"loss became {loss.item()} at step {state['step']} "
                                        f"({state['samples']} samples); the last good checkpoint is kept in {out}")
                opt.zero_grad(set_to_none=True)
                scaled.backward()
                opt.step()
                offset += take
                state["step"] += 1
                state["samples"] += take
                run_loss += loss.item() * len(idx)
                run_correct += float(correct)
                run_seen += len(idx)
                bar.update(take)
                if state["step"] % 20 == 0:
                    bar.set_postfix(loss=f"{run_loss / run_seen:.4f}", acc=f"{run_correct / run_seen:.4f}")
                interrupted["flag"] = any_rank(interrupted["flag"], info, device)
                if state["samples"] >= next_eval or state["samples"] >= total or interrupted["flag"]:
                    break
            if state["samples"] % eval_every == 0 or state["samples"] >= total:
                t_eval = time.perf_counter()
                m = _val_metrics(model, cfg, data, precision, info)
                if cfg.noise_correction == "estimate" and m.get("rel_acc") is not None:
                    # The val outcomes are as noisy as the train ones; a model that is right on the
                    # clean relation disagrees with about a fraction e of them (capped below 1/2).
                    state["noise"] = min(max(1.0 - m["rel_acc"], 0.0), 0.45)
                run_loss, run_correct, run_seen = sum_values([run_loss, run_correct, run_seen], info, device)
                state["elapsed"] = time.perf_counter() - t0
                state["eval_time"] = state.get("eval_time", 0.0) + time.perf_counter() - t_eval
                row = {"step": state["step"], "samples": state["samples"], "epoch": state["samples"] / n,
                       "train_loss": run_loss / max(run_seen, 1), "train_acc": run_correct / max(run_seen, 1),
                       "val_rel_acc": m.get("rel_acc"), "val_cls_acc": m.get("cls_acc"),
                       "time_s": round(state["elapsed"], 3),  # wall time, evaluations included
                       "train_time_s": round(state["elapsed"] - state["eval_time"], 3)}  # steps only
                if cfg.noise_correction != "none":
                    row["noise_rate"] = state["noise"]  # the rate the loss corrects for from here on
                if main:  # metrics.jsonl holds no clock readings, so a rerun reproduces it byte for byte
                    append_jsonl(out / "metrics.jsonl", {k: v for k, v in row.items() if k not in _TIMING})
                    append_jsonl(out / "timing.jsonl", {k: row[k] for k in ("step", "samples", *_TIMING)})
                run_loss = run_correct = run_seen = 0.0
                if row[metric_name] is not None and row[metric_name] > state["best"]:
                    state["best"], state["best_samples"] = row[metric_name], state["samples"]
                    if main:
                        save_weights(out / "best.safetensors", model, model_metadata(cfg))
                state["finished"] = state["samples"] >= total
                checkpoint()
                bar.write(_describe(row, total)) if cfg.progress and main else None
                if on_eval is not None and on_eval(model, row):
                    stop = state["stopped_early"] = True
        if interrupted["flag"] and not state["finished"]:
            state["elapsed"] = time.perf_counter() - t0
            checkpoint()
            if main:
                print(f"relcomp: interrupted after {state['samples']} samples; checkpoint saved. "
                      f"Continue with: relcomp train --resume {out}", file=sys.stderr)
            raise KeyboardInterrupt
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if main:
        from .plots import plot_curves

        plot_curves(read_jsonl(out / "metrics.jsonl"), out / "curves.png", title=run_title(cfg))
    return _summary(out, state)


_TIMING = ("time_s", "train_time_s")

# Settings that do not change what is learned; a run may be resumed with other values.
_NON_SEMANTIC = {"progress", "device", "data_dir", "resolved"}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    from .utils import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _describe(row: dict, total: int) -> str:
    parts = [f"{row['samples']:>9,}/{total:,}", f"loss {row['train_loss']:.4f}"]
    if row["val_rel_acc"] is not None:
        parts.append(f"val rel {row['val_rel_acc']:.4f}")
    if row["val_cls_acc"] is not None:
        parts.append(f"val cls {row['val_cls_acc']:.4f}")
    parts.append(f"{row['time_s']:.0f}s")
    return "  ".join(parts)


def run_title(cfg: TrainConfig) -> str:
    """A short description of a run for plot titles."""
    if cfg.user_data:
        return f"{cfg.model} on {Path(cfg.comparisons).name}"
    if not cfg.relational:
        return cfg.model
    return f"{cfg.model} ({cfg.pairs}{', paper-code loss' if cfg.loss != 'correct' else ''})"


def _summary(out: Path, state: dict) -> dict[str, Any]:
    return {"run_dir": str(out), "samples": state["samples"], "steps": state["step"], "best_val": state["best"],
            "best_samples": state["best_samples"], "finished": state["finished"], "train_time_s": state["elapsed"],
            "stopped_early": state.get("stopped_early", False)}


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder.

    Raises:
        ConfigError: no or unreadable ``config.json``.
    """
    p = Path(run_dir) / "config.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: not a relcomp run folder (no config.json)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: corrupt ({e})") from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in names})
