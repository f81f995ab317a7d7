"""A run folder, owned by this module: the one place its files are named (:class:`RunFiles`).

``config.json`` (the resolved :class:`~relcomp.config.TrainConfig`), the weights
(``best.safetensors``; checkpoints, whose format :mod:`relcomp.checkpoint` owns), ``metrics.jsonl``
and ``timing.jsonl``, ``eval.json``, ``fewshot.json``, plots. Evaluation, inference and export read
runs through this module and never touch the trainer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbones import HFBackbone
from .checkpoint import load_weights
from .config import TrainConfig
from .errors import ConfigError
from .models import RelcompModel, build_model, default_loss, model_class
from .utils import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic

WEIGHTS_FORMAT = "relcomp-weights/1"
TIMING = ("time_s", "train_time_s")  # clock readings: in timing.jsonl, never in metrics.jsonl


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run folder's files."""

    root: Path

    config = property(lambda self: self.root / "config.json")
    best = property(lambda self: self.root / "best.safetensors")          # the best val weights
    metrics = property(lambda self: self.root / "metrics.jsonl")          # one row per evaluation
    timing = property(lambda self: self.root / "timing.jsonl")            # the same rows' clock readings
    validation = property(lambda self: self.root / "validation.json")     # a user's data check
    annotators = property(lambda self: self.root / "annotators.json")     # learned flip rates
    unlabeled = property(lambda self: self.root / "unlabeled.json")       # --unlabeled clusters: the groups' names
    eval = property(lambda self: self.root / "eval.json")                 # test-split metrics
    curves = property(lambda self: self.root / "curves.png")
    confusion = property(lambda self: self.root / "confusion.png")
    reliability = property(lambda self: self.root / "reliability.png")

    def fewshot_confusion(self, slug: str) -> Path:
        """A few-shot confusion matrix, e.g. ``confusion-3shot.png``."""
        return self.root / f"confusion-{slug}.png"

    def fewshot(self, method: str = "linear") -> Path:
        return self.root / ("fewshot.json" if method == "linear" else f"fewshot-{method}.json")


def run_files(run_dir: str | os.PathLike) -> RunFiles:
    return RunFiles(Path(run_dir))


def write_metrics(run_dir: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append an evaluation's row: ``metrics.jsonl`` without clock readings (so that a rerun
    reproduces it byte for byte), ``timing.jsonl`` with them."""
    f = run_files(run_dir)
    append_jsonl(f.metrics, {k: v for k, v in row.items() if k not in TIMING})
    append_jsonl(f.timing, {k: row[k] for k in ("step", "samples", *TIMING)})


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    return read_jsonl(run_files(run_dir).metrics)


def truncate_metrics(run_dir: str | os.PathLike, samples: int | None) -> None:
    """Drop the rows logged after ``samples`` (work a resume will redo); None: remove both logs."""
    f = run_files(run_dir)
    for path in (f.metrics, f.timing):
        if samples is None:
            path.unlink(missing_ok=True)
        else:
            rows = [r for r in read_jsonl(path) if r["samples"] <= samples]
            write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_annotators(run_dir: str | os.PathLike, model: str, report: dict[str, Any]) -> None:
    """``annotators.json``: each annotator's learned flip rate, judgements and flag."""
    write_json_atomic(run_files(run_dir).annotators, {"model": model, "annotators": report})


def read_annotators(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = run_files(run_dir).annotators
    if not p.exists():
        return None
    d = read_json(p)
    if not (isinstance(d, dict) and isinstance(d.get("annotators"), dict)):
        raise ConfigError(f"{p}: not an annotators file (expected an object with an annotators object)")
    return d["annotators"]


def read_json(path: Path) -> Any:
    """A JSON file of a run folder.

    Raises:
        ConfigError: unreadable or not JSON, in one line naming the file.
    """
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    except OSError as e:
        raise ConfigError(f"{path}: unreadable ({e.strerror or e})") from None


def cached_result(path: Path, check=lambda d: True) -> dict | None:
    """A result file of a run (``eval.json``, ``fewshot.json``) if it is newer than the run's best
    weights, readable and passes ``check``; else None (compute it again)."""
    best = run_files(Path(path).parent).best
    if path.exists() and best.exists() and path.stat().st_mtime >= best.stat().st_mtime:
        try:
            d = json.loads(path.read_text())
            return d if isinstance(d, dict) and check(d) else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
            return None  # computed again
    return None


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder.

    Raises:
        ConfigError: no or unreadable ``config.json``, or one with a field of the wrong type or out
            of range (the message names the file, the field and the value).
    """
    p = run_files(run_dir).config
    if not p.is_file():
        raise ConfigError(f"{run_dir}: not a relcomp run folder (no config.json)")
    d = read_json(p)
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: not a relcomp config (a JSON {type(d).__name__}, not an object)")
    try:
        cfg = TrainConfig.from_dict(upgrade(d), str(p))
        cfg.validate()
    except ConfigError as e:
        text = str(e)
        raise ConfigError(text if text.startswith(str(p)) else f"{p}: {text}") from None
    return cfg


def upgrade(d: Any) -> Any:
    """A run folder's ``config.json`` of any earlier relcomp as today's ``TrainConfig.to_dict()``
    output: every compatibility shim for old run folders, in one place (CHANGELOG.md says when each
    name or field changed). Not a dict: returned as it is, for the caller to refuse."""
    if not isinstance(d, dict):
        return d
    d = dict(d)
    if "data" not in d:  # one flat dict, the data settings beside the rest
        d["data"] = {"source": "user" if d.get("images") else "mnist", **{k: v for k, v in d.items() if k != "data"}}
    d.setdefault("backbone", "paper")  # before hf: and mlp backbones there was only the paper's CNN
    if d.get("loss") == "correct":  # the unconditional loss's first name
        d["loss"] = "unconditional"
    return d


def read_resolved(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What the trainer resolved when the run started (device, budget, data fingerprint ...)."""
    p = run_files(run_dir).config
    d = read_json(p) if p.exists() else {}
    resolved = d.get("resolved") if isinstance(d, dict) else None
    return resolved if isinstance(resolved, dict) else {}


def model_metadata(cfg: TrainConfig) -> dict[str, Any]:
    """What the safetensors metadata of a run's weights says about the model."""
    return {"relcomp_model": cfg.model, "num_classes": cfg.num_classes, "in_channels": cfg.data.channels,
            "image_size": cfg.data.image_size, "relation": cfg.relation, "format": WEIGHTS_FORMAT,
            "backbone": cfg.backbone, "finetune": cfg.finetune, "input_dim": cfg.data.feature_dim}


def build_run_model(cfg: TrainConfig) -> RelcompModel:
    """The (untrained) model a resolved config describes: a fine-tuned hf: backbone is loaded from
    its folder or the Hugging Face cache, a frozen one is not part of the model (its embeddings are
    the input)."""
    return build_model(cfg.model, cfg.num_classes, in_channels=cfg.data.channels, image_size=cfg.data.image_size,
                       dropout=cfg.dropout, relation=cfg.relation, input_dim=cfg.data.feature_dim,
                       trunk=HFBackbone(cfg.backbone) if cfg.finetune else None)


def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RelcompModel, TrainConfig]:
    """The model of a run folder with its best weights, in eval mode.

    Raises:
        ConfigError: not a run folder.
        CheckpointError: weights missing or unusable.
    """
    cfg = load_config(run_dir)
    model = build_run_model(cfg)
    load_weights(run_files(run_dir).best, model)
    if cfg.channels_last:  # as it trained: 3-5x faster inference with bf16 here, the same values
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval(), cfg


def run_title(cfg: TrainConfig) -> str:
    """A short description of a run for plot titles."""
    if cfg.data.source == "user":
        return f"{cfg.model} on {Path(cfg.data.comparisons).name}"
    cls = model_class(cfg.model)
    if not cls.relational:
        return cfg.model
    default = default_loss(cls, cfg.relation)
    return f"{cfg.model} ({cfg.data.pairs}{f', {cfg.loss} loss' if cfg.loss != default else ''})"


def run_tag(cfg: TrainConfig) -> str:
    """A default run-folder name part: model, data, and the settings that differ from the defaults."""
    cls = model_class(cfg.model)
    parts = [cfg.model] + ([cfg.data.tag()] if cls.relational else [])
    parts += [cfg.loss] if cfg.loss != default_loss(cls, cfg.relation) else []
    parts += [cfg.relation] if cfg.relation != "gt" else []
    return "-".join(parts)
