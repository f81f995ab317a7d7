"""A run folder: ``config.json`` (the resolved :class:`~relcomp.config.TrainConfig`), the weights
(``best.safetensors``, checkpoints under ``ckpt/``), ``metrics.jsonl`` and plots.

Evaluation, inference and export read runs through this module and never touch the trainer.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .backbones import HFBackbone
from .checkpoint import load_weights
from .config import TrainConfig
from .errors import ConfigError
from .models import RelcompModel, build_model, default_loss, model_class

WEIGHTS_FORMAT = "relcomp-weights/1"


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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: corrupt ({e})") from None
    try:
        return TrainConfig.from_dict(d)
    except TypeError as e:
        raise ConfigError(f"{p}: not a relcomp config ({e})") from None


def read_resolved(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What the trainer resolved when the run started (device, budget, data fingerprint ...)."""
    p = Path(run_dir) / "config.json"
    return json.loads(p.read_text()).get("resolved") or {} if p.exists() else {}


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
                       trunk=HFBackbone(cfg.backbone) if cfg.finetune else None, loss=cfg.loss)


def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RelcompModel, TrainConfig]:
    """The model of a run folder with its best weights, in eval mode.

    Raises:
        ConfigError: not a run folder.
        CheckpointError: weights missing or unusable.
    """
    cfg = load_config(run_dir)
    model = build_run_model(cfg)
    load_weights(Path(run_dir) / "best.safetensors", model)
    return model.to(device).eval(), cfg


def run_title(cfg: TrainConfig) -> str:
    """A short description of a run for plot titles."""
    if cfg.data.kind == "user":
        return f"{cfg.model} on {Path(cfg.data.comparisons).name}"
    if not cfg.relational:
        return cfg.model
    default = default_loss(model_class(cfg.model), cfg.relation)
    return f"{cfg.model} ({cfg.data.pairs}{f', {cfg.loss} loss' if cfg.loss != default else ''})"


def run_tag(cfg: TrainConfig) -> str:
    """A default run-folder name part: model, data, and the settings that differ from the defaults."""
    parts = [cfg.model] + ([cfg.data.tag()] if cfg.relational else [])
    parts += [cfg.loss] if cfg.loss != default_loss(model_class(cfg.model), cfg.relation) else []
    parts += [cfg.relation] if cfg.relation != "gt" else []
    return "-".join(parts)
