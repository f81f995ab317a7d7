"""Metrics on a split: one backbone pass over its images, then cheap heads on the item outputs.

Evaluating 20k pairs costs one pass over the split's images, not 40k image forwards: the pairs are
scored by gathering rows of the item outputs (see :mod:`relcomp.models` for the contract).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .analysis import match_clusters
from .data.pairs import Pairs
from .data.sources import pairs_to_device
from .errors import DataError
from .losses import pair_predictions

PAIR_CHUNK = 65_536


@torch.no_grad()
def item_outputs(model: nn.Module, x: torch.Tensor, precision: str = "fp32",
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
def pair_outputs(model: nn.Module, out: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """The model's pair output for every pair, from the item outputs ``out`` of the split."""
    i, j, _, _ = pairs_to_device(pairs, out.device)
    return torch.cat([model.pair_logit(out[i[k:k + PAIR_CHUNK]], out[j[k:k + PAIR_CHUNK]])
                      for k in range(0, len(i), PAIR_CHUNK)])


@torch.no_grad()
def score_outputs(model: nn.Module, out: torch.Tensor, y: torch.Tensor, pairs: Pairs | None) -> dict[str, Any]:
    """Relational accuracy on ``pairs`` and, where the model classifies, classification accuracy
    on the labelled items (``y >= 0``) and every item's predicted class (``pred``)."""
    result: dict[str, Any] = {}
    if pairs is not None and len(pairs):
        pred = pair_predictions(pair_outputs(model, out, pairs))
        z = torch.from_numpy(pairs.z.astype(np.int64)).to(pred.device)
        result["rel_acc"] = float((pred == z).float().mean())
    if model.classifies:
        pred = out.argmax(1)
        labelled = y >= 0  # user data may label only some items (or none)
        if model.relation == "same":
            # Same/different comparisons identify classes only up to a permutation: map each
            # predicted cluster to the class it overlaps most (a one-to-one best matching).
            mapping = match_clusters(pred[labelled].cpu().numpy(), y[labelled].cpu().numpy(), out.shape[1])
            pred = torch.from_numpy(mapping).to(pred.device)[pred]
        if labelled.any():
            result["cls_acc"] = float((pred[labelled] == y[labelled]).float().mean())
        result["pred"] = pred.cpu().numpy()
    return result


def draw_shots(labels: np.ndarray, k: int, num_classes: int, seed: int | tuple) -> np.ndarray:
    """Indices of ``k`` examples of each class, drawn without replacement by ``seed``.

    Raises:
        DataError: a class has fewer than ``k`` examples.
    """
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise DataError(f"class {c} has {len(pool)} labelled examples, fewer than the {k} asked for")
        picks.append(rng.choice(pool, size=k, replace=False))
    return np.concatenate(picks)
