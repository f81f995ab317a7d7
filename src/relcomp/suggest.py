"""``relcomp suggest``: which pairs to have judged next.

One backbone pass gives every item's output; candidate pairs are drawn at random among the
run's items (never a pair already judged, in either order, never an item with itself) and
scored by a strategy; the best N are written as a comparisons file to judge (``a,b,score``),
items named exactly as the run's comparisons name them (file names, ``.npy`` row indices, or
MNIST train-split indices).

Strategies (:data:`STRATEGIES`):

- ``random``: uniform among the candidates: the baseline, and the right start of round one.
- ``uncertainty``: the pairs whose order the model is least sure of: P(A > B) closest to
  P(B > A). For a model that classifies, a pair the model thinks is a tie (both in one class)
  scores low, since a "greater" judgement of a tie teaches nothing under ``gt``.
- ``boundary``: like uncertainty, but among pairs the model puts in *adjacent* classes or
  scores (a sorting-style query: it sharpens where each class starts); for Siamese models it is
  uncertainty.

No item appears in more than ``max_per_item`` suggested pairs, so that N questions cover many
items rather than asking about one confusing image N times.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.pairs import pair_keys
from .data.splits import to_tensor
from .errors import ConfigError
from .metrics import item_outputs
from .run import load_run_model
from .utils import atomic_path, resolve_device, resolve_precision

STRATEGIES = ("uncertainty", "boundary", "random")


def candidate_pairs(n: int, m: int, judged: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``m`` distinct unordered pairs of ``n`` items, none of them ``judged`` (keys lo * n + hi)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, 2 * m + 64), rng.integers(0, n, 2 * m + 64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys = pair_keys(a, b, n)
    keep = (lo != hi) & ~np.isin(keys, judged)
    _, first = np.unique(keys[keep], return_index=True)
    first = np.sort(first)[:m]
    return lo[keep][first], hi[keep][first]


@torch.no_grad()
def pair_scores(model, out: torch.Tensor, a: np.ndarray, b: np.ndarray, strategy: str,
                rng: np.random.Generator) -> np.ndarray:
    """How much judging each pair (a[k], b[k]) should teach, by ``strategy`` (higher: ask first)."""
    if strategy == "random":
        return rng.random(len(a))
    oa, ob = out[torch.from_numpy(a)], out[torch.from_numpy(b)]
    if model.classifies:
        pa, pb = oa.softmax(-1), ob.softmax(-1)
        cdf_b = pb.cumsum(-1)
        p_gt = (pa[:, 1:] * cdf_b[:, :-1]).sum(-1)           # P(A > B) = sum_{i>j} pA[i] pB[j]
        p_lt = (pb[:, 1:] * pa.cumsum(-1)[:, :-1]).sum(-1)    # P(B > A)
        order = 1 - (p_gt - p_lt).abs() / (p_gt + p_lt).clamp_min(1e-9)
        score = order * (p_gt + p_lt)                          # uncertain order, and not a likely tie
        if strategy == "boundary":
            gap = (oa.argmax(-1) - ob.argmax(-1)).abs()
            score = score * (gap == 1).float() + 1e-3 * score  # adjacent classes first
        return score.cpu().numpy()
    logit = model.pair_output(oa, ob)
    p = torch.sigmoid(logit if logit.ndim == 1 else logit[:, 1] - logit[:, 0])
    score = 1 - (2 * p - 1).abs()
    if strategy == "boundary" and model.scores:
        s = out[:, 0]
        rank = torch.empty_like(s).scatter_(0, s.argsort(), torch.arange(len(s), dtype=s.dtype, device=s.device))
        near = (rank[torch.from_numpy(a)] - rank[torch.from_numpy(b)]).abs() <= max(1, len(s) // 100)
        score = score * near.float() + 1e-3 * score           # neighbours in the model's order first
    return score.cpu().numpy()


def pick(a: np.ndarray, b: np.ndarray, score: np.ndarray, n: int, max_per_item: int) -> np.ndarray:
    """Indices of the ``n`` best-scored pairs with no item in more than ``max_per_item`` of them."""
    used: dict[int, int] = {}
    chosen = []
    for k in np.argsort(-score, kind="stable"):
        if used.get(a[k], 0) < max_per_item and used.get(b[k], 0) < max_per_item:
            chosen.append(k)
            used[a[k]] = used.get(a[k], 0) + 1
            used[b[k]] = used.get(b[k], 0) + 1
            if len(chosen) == n:
                break
    return np.asarray(chosen, dtype=np.int64)


def suggest(run_dir: str | os.PathLike, n: int, strategy: str = "uncertainty", candidates: int | None = None,
            out: str | os.PathLike | None = None, seed: int = 0, max_per_item: int = 2,
            device: str = "auto") -> dict[str, Any]:
    """Write the ``n`` pairs to judge next as ``out`` (default ``<run_dir>/suggested.csv``).

    Raises:
        ConfigError: an unknown strategy, a model that is not relational, or ``n`` larger than the
            pool of candidates.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}")
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    if not model.relational:
        raise ConfigError(f"a {cfg.model} run learns from labels; suggest needs a run trained on comparisons")
    names, items, judged = cfg.data.train_items(cfg.relation)
    m = candidates if candidates is not None else max(20 * n, 50_000)
    a, b = candidate_pairs(len(names), m, judged, seed)
    if n > len(a):
        raise ConfigError(f"--n {n:,} is more than the {len(a):,} candidate pairs not judged yet; lower --n or "
                          "raise --candidates")
    x = to_tensor(cfg.data.prepare(items), dev)
    if x.ndim == 4:  # channels-last, and the run's precision: 50k MNIST images in 2-6 s here, not 17 s
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    _, outs = item_outputs(model, x, resolve_precision(cfg.precision, dev))
    score = pair_scores(model, outs.cpu(), a, b, strategy, np.random.default_rng(seed))
    chosen = pick(a, b, score, n, max_per_item)
    path = Path(out) if out else Path(run_dir) / "suggested.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "score"])
        w.writerows([names[a[k]], names[b[k]], f"{score[k]:.6f}"] for k in chosen)
    return {"csv": str(path), "n": len(chosen), "candidates": len(a), "strategy": strategy,
            "items": len(names)}
