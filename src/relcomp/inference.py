"""Use a trained run on new images: predict a class, compare two images, rank a folder.

Images are converted exactly as in training (the run's image size and channel count; a frozen
``hf:`` backbone embeds them first). A run trained on ``--features`` takes features files
instead of images, with vectors of the length it was trained on. Ranking
needs one score per image; every relational model defines P(A > B), so the score of an image is
its mean P(image > reference) over a set of reference images (the folder itself, or a seeded
sample of it): a Borda count, which orders images the way the model's pairwise judgements do.
A ranker's own score is used as it is.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import pair_loss
from .data.comparisons import load_labels
from .data.features import load_features
from .data.images import ImageSet, load_images, load_inputs
from .data.splits import to_tensor
from .errors import ConfigError, DataError
from .metrics import item_outputs, item_scores, mc_dropout_prob_greater, prob_greater, ranking_metrics
from .run import load_run_model
from .utils import atomic_path, make_dir, resolve_device, write_json_atomic


class Predictor:
    """A run's best model, ready for inference on images in the run's format."""

    def __init__(self, run_dir: str | os.PathLike, device: str = "auto"):
        self.device = resolve_device(device)
        self.model, self.cfg = load_run_model(run_dir, self.device)
        self.loss = pair_loss(self.cfg)  # reads the model's pair outputs as outcome probabilities
        # fp32 even where training used bf16: a bf16 score has 8 significant bits, and ranking
        # thousands of images on it would make ties.
        self.precision = "fp32"

    @property
    def takes_features(self) -> bool:
        return bool(self.cfg.data.features)

    def load(self, paths: Sequence[str | os.PathLike]) -> ImageSet:
        """Image files, folders and .npy arrays, converted to the run's input format; for a run
        trained on features, features files (items named ``file[item]``).

        Raises:
            DataError: unreadable input, or features of another length than the run's.
        """
        if not self.takes_features:
            return load_inputs(paths, self.cfg.data.image_size, self.cfg.data.channels)
        sets = [self.load_set(p) for p in paths]
        if not sets:
            raise DataError("no features files given")
        names = [f"{s.source}[{n}]" for s in sets for n in s.names]
        return ImageSet(names, np.concatenate([s.images for s in sets]), ", ".join(map(str, paths)))

    def load_set(self, path: str | os.PathLike) -> ImageSet:
        """A folder (or .npy) of images, or for a features run one features file, named as the
        run's comparisons would name its items."""
        if not self.takes_features:
            return load_images(path, self.cfg.data.image_size, self.cfg.data.channels)
        fs = load_features(path)
        if fs.images.shape[1] != self.cfg.data.feature_dim:
            raise DataError(f"{path}: features have D = {fs.images.shape[1]}, but this run was trained on "
                            f"D = {self.cfg.data.feature_dim}")
        return fs

    def outputs(self, images: np.ndarray) -> torch.Tensor:
        """Item outputs (class logits, or embeddings for the Siamese model) of uint8 images or of
        feature vectors."""
        x = to_tensor(self.cfg.data.prepare(images), self.device)
        return item_outputs(self.model, x, self.precision)[1]

    def prob_greater(self, out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
        """P(A > B) for rows of item outputs (see :func:`relcomp.metrics.prob_greater`)."""
        return prob_greater(self.model, self.loss, out_a, out_b)

    def scores(self, out: torch.Tensor, references: int = 512, seed: int = 0) -> np.ndarray:
        """Each item's score (see :func:`relcomp.metrics.item_scores`)."""
        return item_scores(self.model, self.loss, out, references, seed)


def predict(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], device: str = "auto") -> list[dict[str, Any]]:
    """Class and class probabilities per image (for models that classify).

    Raises:
        ConfigError: the run's model does not classify (Siamese).
        DataError: an unreadable image.
    """
    p = Predictor(run_dir, device)
    if not p.model.classifies:
        raise ConfigError(f"a {p.cfg.model} model outputs relations, not classes; use `relcomp compare` or "
                          "`relcomp rank`, or `relcomp fewshot` with a few labels")
    items = p.load(images)
    probs = p.outputs(items.images).softmax(1).cpu().numpy()
    return [{"item": name, "class": int(pr.argmax()), "probabilities": [round(float(v), 6) for v in pr]}
            for name, pr in zip(items.names, probs)]


def compare(run_dir: str | os.PathLike, a: str | os.PathLike, b: str | os.PathLike, device: str = "auto",
            features: str | os.PathLike | None = None) -> float:
    """P(A > B) from a relational run (or a classifier, through its class distributions). With
    ``features`` (runs trained on features), A and B are item names in that file.

    Raises:
        DataError: an unreadable image, or an item not in ``features``.
    """
    return compare_interval(run_dir, a, b, device, features, samples=0)["p"]


def compare_interval(run_dir: str | os.PathLike, a: str | os.PathLike, b: str | os.PathLike, device: str = "auto",
                     features: str | os.PathLike | None = None, samples: int = 100, level: float = 0.9,
                     seed: int = 0) -> dict[str, Any]:
    """P(A > B) as :func:`compare` gives it, and a ``level`` interval of it from ``samples`` MC
    dropout draws (the model's dropout layers left on): ``{"p", "interval": (lo, hi) or None,
    "samples", "level", "method"}``. The interval is None for a model without dropout.

    Raises:
        ConfigError: ``level`` outside (0, 1), or as :func:`compare`.
        DataError: as :func:`compare`.
    """
    if not 0 < level < 1:
        raise ConfigError(f"--level must be in (0, 1), got {level}")
    p = Predictor(run_dir, device)
    if p.takes_features != (features is not None):
        raise ConfigError("this run was trained on features: give --features FILE and two item names" if p.takes_features
                          else "--features applies to runs trained on features; give two image files")
    items = p.load([a, b]) if features is None else _pick(p.load_set(features), [str(a), str(b)])
    if len(items) != 2:
        raise ConfigError("compare takes exactly two image files")
    out = p.outputs(items.images)
    result = {"p": float(p.prob_greater(out[:1], out[1:])), "interval": None, "samples": samples, "level": level,
              "method": "mc-dropout"}
    if samples > 0:
        x = to_tensor(p.cfg.data.prepare(items.images), p.device)
        draws = mc_dropout_prob_greater(p.model, p.loss, x[:1], x[1:], samples, seed)
        if draws is not None:
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
            result["interval"] = (float(lo), float(hi))
    return result


def rank(run_dir: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike | None = None,
         references: int = 512, seed: int = 0, device: str = "auto", sheet_max: int = 256,
         labels: str | os.PathLike | None = None) -> dict[str, Any]:
    """Sort a folder of images by the model's score, greatest first; write ``ranking.csv`` and a
    contact sheet ``ranking.png`` into ``out`` (default: ``<run_dir>/rank-<folder name>``). For a
    run trained on features, ``folder`` is a features file and no contact sheet is drawn. With a
    ``labels`` file (columns ``item``, ``label``) the result has the ranking's Spearman rho,
    Kendall tau and NDCG against the labelled items (``metrics``).

    Raises:
        DataError: a missing folder or unreadable images, or a bad labels file.
    """
    if sheet_max < 1:
        raise ConfigError(f"--sheet-max must be at least 1, got {sheet_max}")
    p = Predictor(run_dir, device)
    if not p.model.relational and not p.model.classifies:
        raise ConfigError(f"cannot rank with a {p.cfg.model} model")
    items = p.load_set(folder)
    outs = p.outputs(items.images)
    score = p.scores(outs, references, seed)
    order = np.argsort(-score, kind="stable")
    out = Path(out) if out else Path(run_dir) / f"rank-{Path(folder).resolve().name}"
    make_dir(out)
    extra: dict[str, np.ndarray] = {}
    if p.model.classifies:
        prob = outs.softmax(1)
        extra["expected_class"] = (prob * torch.arange(prob.shape[1], device=prob.device)).sum(1).cpu().numpy()
        extra["predicted_class"] = prob.argmax(1).cpu().numpy()
    with atomic_path(out / "ranking.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "item", "score", *extra])
        for r, k in enumerate(order, 1):
            w.writerow([r, items.names[k], f"{score[k]:.6f}",
                        *(f"{v[k]:.4f}" if v.dtype.kind == "f" else int(v[k]) for v in extra.values())])
    shown = None
    if not p.takes_features:
        shown = contact_sheet(items, order, score, out / "ranking.png", sheet_max)
    metrics = None
    if labels is not None:
        y = load_labels(labels, items)
        known = y >= 0
        if len(np.unique(y[known])) < 2:
            raise DataError(f"{labels}: fewer than two distinct labels among the ranked items")
        metrics = {**ranking_metrics(score[known], y[known]), "n_labelled": int(known.sum())}
        write_json_atomic(out / "ranking-metrics.json", metrics)
    return {"csv": str(out / "ranking.csv"), "png": None if p.takes_features else str(out / "ranking.png"),
            "n": len(items), "sheet_items": shown, "metrics": metrics,
            "ranking": [(items.names[k], float(score[k])) for k in order]}


def _pick(items: ImageSet, names: list[str]) -> ImageSet:
    index = items.index()
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(f"{items.source}: no item {missing[0]!r}")
    return ImageSet(names, items.images[[index[n] for n in names]], items.source)


def contact_sheet(items: ImageSet, order: np.ndarray, score: np.ndarray, path: Path, max_images: int = 256,
                  cols: int = 16) -> int:
    """A grid of thumbnails in rank order, each captioned with its rank and score; with more than
    ``max_images`` images, an evenly spaced sample of the ranking (captions keep the true ranks).
    Returns how many images it shows."""
    from PIL import Image, ImageDraw

    ranks = np.arange(len(order))
    if len(order) > max_images:
        ranks = np.unique(np.linspace(0, len(order) - 1, max_images).round().astype(int))
    side = max(64, items.images.shape[-1])
    cap = 22
    cols = min(cols, len(ranks))
    rows = -(-len(ranks) // cols)
    sheet = Image.new("RGB", (cols * (side + 4) + 4, rows * (side + cap + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for n, r in enumerate(ranks):
        k = order[r]
        img = items.images[k]
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).convert("RGB")
        x, y = 4 + (n % cols) * (side + 4), 4 + (n // cols) * (side + cap + 4)
        sheet.paste(pil.resize((side, side), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 1, y + side + 1), f"#{r + 1}", fill="black")
        draw.text((x + 1, y + side + 11), f"{score[k]:.3f}", fill="dimgray")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return len(ranks)
