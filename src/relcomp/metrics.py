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
from .data.splits import pairs_to_device
from .errors import ConfigError, DataError
from .losses import Loss, pair_predictions

PAIR_CHUNK = 65_536
# Images per forward pass. Small enough that each layer's activations stay in the cache and in
# malloc's reused heap: 50k MNIST images in 1.4-1.6 s here at 256 (bf16, channels-last), 4.4-9 s
# at 2,048, whose 90-180 MB activations are mapped fresh from the kernel at every layer.
EVAL_BATCH = 256


@torch.no_grad()
def item_outputs(model: nn.Module, x: torch.Tensor, precision: str = "fp32",
                 batch: int = EVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, item outputs) for every image of ``x``, in fp32, in eval mode; images go in
    the memory format of the model's weights, as it trained (:func:`~relcomp.run.load_run_model`
    loads it so): NCHW images into channels-last weights, or the reverse, cost a conversion at
    every layer."""
    was_training = model.training
    model.eval()
    embs, outs = [], []
    layout = torch.channels_last if channels_last(model) else torch.contiguous_format
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=(precision == "bf16")):
        for k in range(0, len(x), batch):
            chunk = x[k:k + batch]
            e = model.embed(chunk.contiguous(memory_format=layout) if chunk.ndim == 4 else chunk)
            embs.append(e.float())
            outs.append(model.item_output(e).float())
    model.train(was_training)
    return torch.cat(embs), torch.cat(outs)


def channels_last(model: nn.Module) -> bool:
    """Whether the model's convolutions hold their weights channels-last (a 1-channel first layer
    is both formats at once, so it is the later layers that tell)."""
    return any(p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


@torch.no_grad()
def pair_outputs(model: nn.Module, loss: Loss, out: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """The outcome logits of every pair (the model's pair output read by ``loss``), from the item
    outputs ``out`` of the split."""
    i, j, _, _ = pairs_to_device(pairs, out.device)
    return torch.cat([loss.logits(model.pair_output(out[i[k:k + PAIR_CHUNK]], out[j[k:k + PAIR_CHUNK]]))
                      for k in range(0, len(i), PAIR_CHUNK)])


@torch.no_grad()
def score_outputs(model: nn.Module, loss: Loss, out: torch.Tensor, y: torch.Tensor,
                  pairs: Pairs | None) -> dict[str, Any]:
    """Relational accuracy on ``pairs`` and, where the model classifies, classification accuracy
    on the labelled items (``y >= 0``) and every item's predicted class (``pred``)."""
    result: dict[str, Any] = {}
    if pairs is not None and len(pairs):
        pred = pair_predictions(pair_outputs(model, loss, out, pairs))
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
        result["classes_used"] = classes_used(result["pred"], out.shape[1])
    return result


def classes_used(pred: np.ndarray, k: int) -> int:
    """How many of the K classes hold at least a tenth of an even share (1 / 10K) of the
    predictions: K for a model that uses them all, 1 for one whose classes collapsed into one."""
    share = np.bincount(pred, minlength=k) / max(len(pred), 1)
    return int((share >= 0.1 / k).sum())


def collapsed(used: int, k: int) -> bool:
    """Whether a model that predicts ``used`` of its ``k`` classes has collapsed: half of them or fewer."""
    return used <= k // 2


def cluster_accuracy(pred: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Accuracy after each predicted class is matched one-to-one to the label it overlaps most
    (Hungarian): how well the classes group the images, whatever their names. A diagnosis only."""
    mapping = match_clusters(pred, labels, k)
    return float((mapping[pred] == labels).mean())


def outcome_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) probabilities of the outcome codes from outcome logits: [P(z=0), P(z=1)] from a logit,
    the softmax of a ``ge`` model's three outputs."""
    if logits.ndim == 2:
        return logits.float().softmax(-1)
    p = torch.sigmoid(logits.float())
    return torch.stack([1 - p, p], -1)


def require_order(model: nn.Module) -> None:
    """Raises: ConfigError: a model trained on the ``same`` relation (it knows no order)."""
    if model.relation == "same":
        raise ConfigError("this model was trained on same/different comparisons: it has no order to compare or rank by")


@torch.no_grad()
def prob_greater(model: nn.Module, loss: Loss, out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
    """P(A > B) from rows of item outputs (for a ``ge`` model: the A > B share of the three outcomes).

    Raises:
        ConfigError: a model trained on the ``same`` relation (it knows no order).
    """
    require_order(model)
    return outcome_probabilities(loss.logits(model.pair_output(out_a, out_b)))[:, 1]


@torch.no_grad()
def prob_greater_grid(model: nn.Module, loss: Loss, out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
    """P(a > b) for every a of ``out_a`` and b of ``out_b``, shape (len(a), len(b)); raises as
    :func:`prob_greater` does."""
    require_order(model)
    grid = loss.logits(model.pair_output_grid(out_a, out_b))
    return outcome_probabilities(grid.reshape(-1, *grid.shape[2:]))[:, 1].view(len(out_a), len(out_b))


@torch.no_grad()
def item_scores(model: nn.Module, loss: Loss, out: torch.Tensor, references: int = 512, seed: int = 0,
                chunk: int = 65_536) -> np.ndarray:
    """Each item's score: a scoring model's own score; otherwise its mean P(item > reference) over
    ``references`` items sampled by ``seed`` (all items when there are no more than that), never
    comparing an item with itself."""
    if model.scores and model.relation == "gt":
        return out[:, 0].cpu().numpy()
    n = len(out)
    refs = np.arange(n) if n <= references else np.sort(np.random.default_rng(seed).choice(n, references, False))
    ref_t = torch.from_numpy(refs).to(out.device)
    ref_out, r = out[ref_t], len(refs)
    rows = max(1, chunk // r)
    result = []
    for k in range(0, n, rows):
        a = out[k:k + rows]
        p = prob_greater_grid(model, loss, a, ref_out)
        other = torch.arange(k, k + len(a), device=out.device)[:, None] != ref_t[None, :]
        result.append((p * other).sum(1) / other.sum(1).clamp(min=1))
    return torch.cat(result).cpu().numpy()


@torch.no_grad()
def mc_dropout_prob_greater(model: nn.Module, loss: Loss, xa: torch.Tensor, xb: torch.Tensor, samples: int = 100,
                            seed: int = 0) -> np.ndarray | None:
    """``samples`` draws of P(A > B) for one pair of inputs (each of shape (1, ...)) with the model's
    dropout layers active and everything else in eval mode (MC dropout); None for a model without
    dropout (e.g. the MLP on features)."""
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if not drops:
        return None
    was_training = model.training
    model.eval()
    for m in drops:
        m.train()
    try:
        torch.manual_seed(seed)
        x = torch.cat([xa.expand(samples, *xa.shape[1:]), xb.expand(samples, *xb.shape[1:])])
        out = model.item_output(model.embed(x)).float()
        return prob_greater(model, loss, out[:samples], out[samples:]).cpu().numpy()
    finally:
        model.train(was_training)


def ranking_metrics(score: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How well ``score`` orders items by their labels: Spearman's rho, Kendall's tau-b (both
    handle the many tied labels), and NDCG with the labels (0 .. K-1) as gains, over the whole
    list and its top 100."""
    from scipy.stats import kendalltau, spearmanr  # here: scipy.stats takes a second to import
    from sklearn.metrics import ndcg_score

    labels = np.asarray(labels, dtype=float)
    score = np.asarray(score, dtype=float)
    if np.ptp(score) == 0:  # one score for every item (collapsed classes): it orders nothing
        return {"spearman_rho": 0.0, "kendall_tau": 0.0,
                "ndcg": float(ndcg_score(labels[None], np.zeros((1, len(labels))))),
                "ndcg@100": float(ndcg_score(labels[None], np.zeros((1, len(labels))), k=100))}
    return {"spearman_rho": float(spearmanr(score, labels).statistic),
            "kendall_tau": float(kendalltau(score, labels).statistic),
            "ndcg": float(ndcg_score(labels[None], np.asarray(score, dtype=float)[None])),
            "ndcg@100": float(ndcg_score(labels[None], np.asarray(score, dtype=float)[None], k=100))}


def calibration(probs: np.ndarray, z: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Expected calibration error (ECE) of predicted outcome probabilities ``probs`` (N, C) on
    outcomes ``z``, over ``bins`` equal-width bins. Two outcomes: the calibration of P(z = 1)
    (P(A > B)) against the observed share of z = 1; more: of the top outcome's probability
    against how often it is right. ECE = sum over bins of (share of pairs) x |observed - predicted|."""
    probs, z = np.asarray(probs, dtype=float), np.asarray(z)
    if probs.shape[1] == 2:
        conf, hit, of = probs[:, 1], (z == 1).astype(float), "P(z=1)"
    else:
        conf, hit, of = probs.max(1), (probs.argmax(1) == z).astype(float), "top outcome"
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                         "predicted": float(conf[m].mean()), "observed": float(hit[m].mean())})
            ece += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return {"ece": float(ece), "of": of, "n": int(len(z)), "bins": rows}


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
