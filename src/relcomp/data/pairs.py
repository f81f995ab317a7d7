"""Relational pair sets, stored as indices into a split (never as copies of images).

A pair set is three arrays: ``i`` and ``j`` (int32 indices into one split) and ``z`` (uint8,
1 where ``labels[i] > labels[j]``), and optionally per-pair loss weights ``w`` (user comparisons). 5M pairs take 45 MB this way; the paper's original code
materialised them as 7.8 GB of uint8 images.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..errors import DataError, ProvenanceError
from ..utils import atomic_path, format_count

# gt: z = 1 where A > B, pairs with equal labels dropped (the paper). ge: ties kept as a third
# outcome, z = 0 (A < B), 1 (A > B) or 2 (tie). same: z = 1 where A and B share a class; these
# sets are balanced, half "same" and half "different": uniform pairs on MNIST are 90% "different",
# and every model we trained on them collapsed to always answering "different" (89.85% accuracy).
RELATIONS = ("gt", "ge", "same")
SCHEMES = {"gt": None, "ge": None, "same": "balanced"}  # how a relation's pairs are drawn (in the provenance)
FORMAT = "relcomp-pairs/1"


@dataclass(frozen=True)
class Pairs:
    """Index pairs into a split, their targets and where they came from."""

    i: np.ndarray
    j: np.ndarray
    z: np.ndarray
    meta: dict = field(default_factory=dict)
    w: np.ndarray | None = None   # per-pair loss weights (float32); None: all 1
    annotator: np.ndarray | None = None  # per-pair index into meta["annotators"] (user comparisons); None: unknown

    def __len__(self) -> int:
        return len(self.z)

    @property
    def nbytes(self) -> int:
        return self.i.nbytes + self.j.nbytes + self.z.nbytes + (0 if self.w is None else self.w.nbytes)


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of ``n`` items, the same for (i, j) and (j, i): lo * n + hi."""
    return np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j).astype(np.int64)


def make_pairs(labels: np.ndarray, n: int, seed: int, relation: str = "gt") -> Pairs:
    """Sample ``n`` pairs uniformly at random with ``i != j``; for ``gt`` equal labels are omitted
    (the paper), for ``ge`` and ``same`` they are kept (see :data:`RELATIONS` for the codes).

    Vectorised rejection sampling with a numpy ``Generator``: the same seed gives the same pairs
    on any machine.

    Raises:
        DataError: unknown relation, or fewer than two distinct labels to compare.
    """
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}; supported: {', '.join(RELATIONS)}")
    labels = np.asarray(labels)
    if n < 0:
        raise DataError(f"number of pairs must be >= 0, got {n}")
    if len(np.unique(labels)) < 2:
        raise DataError("need at least two distinct labels to make comparison pairs")
    rng = np.random.default_rng(seed)
    m = len(labels)
    if relation == "same":
        return _balanced_same_pairs(labels, n, rng, seed)
    parts_i, parts_j, have = [], [], 0
    while have < n:
        # Draw a little more than needed: about 10% of MNIST pairs share a label and are dropped.
        k = int((n - have) * 1.2) + 64
        i = rng.integers(0, m, size=k)
        j = rng.integers(0, m, size=k)
        keep = (i != j) & (labels[i] != labels[j]) if relation == "gt" else (i != j)
        parts_i.append(i[keep])
        parts_j.append(j[keep])
        have += int(keep.sum())
    i = np.concatenate(parts_i)[:n].astype(np.int32)
    j = np.concatenate(parts_j)[:n].astype(np.int32)
    li, lj = labels[i], labels[j]
    if relation == "gt":
        z = (li > lj).astype(np.uint8)
    elif relation == "ge":
        z = np.where(li > lj, 1, np.where(li < lj, 0, 2)).astype(np.uint8)
    else:
        z = (li == lj).astype(np.uint8)
    return Pairs(i, j, z, {"n": int(n), "seed": int(seed), "relation": relation, "split_size": int(m)})


def _balanced_same_pairs(labels: np.ndarray, n: int, rng: np.random.Generator, seed: int) -> Pairs:
    """n // 2 pairs of different classes, then the rest from the same class (i != j), shuffled."""
    diff = make_pairs(labels, n // 2, seed, "gt")   # i != j, labels differ
    order = np.argsort(labels, kind="stable")
    classes, start, count = np.unique(labels[order], return_index=True, return_counts=True)
    if (count < 2).all():
        raise DataError("the same relation needs a class with at least two items")
    cls_of = np.searchsorted(classes, labels)
    parts_i, parts_j, have, need = [], [], 0, n - n // 2
    while have < need:
        k = int((need - have) * 1.1) + 64
        i = rng.integers(0, len(labels), size=k)
        c = cls_of[i]
        j = order[start[c] + (rng.random(k) * count[c]).astype(np.int64)]
        keep = i != j
        parts_i.append(i[keep])
        parts_j.append(j[keep])
        have += int(keep.sum())
    i = np.concatenate([diff.i, np.concatenate(parts_i)[:need].astype(np.int32)])
    j = np.concatenate([diff.j, np.concatenate(parts_j)[:need].astype(np.int32)])
    perm = rng.permutation(n)
    i, j = i[perm], j[perm]
    z = (labels[i] == labels[j]).astype(np.uint8)
    return Pairs(i, j, z, {"n": int(n), "seed": int(seed), "relation": "same", "split_size": int(len(labels)),
                           "scheme": SCHEMES["same"]})


def flip_outcomes(pairs: Pairs, rate: float, seed: int, relation: str = "gt") -> Pairs:
    """Corrupt exactly ``round(rate * n)`` outcomes chosen at random by ``seed``: a binary outcome
    is inverted, a three-way (``ge``) one replaced by one of the other two at random.

    Raises:
        DataError: a rate outside [0, 0.5).
    """
    if not 0 <= rate < 0.5:
        raise DataError(f"flip rate must be in [0, 0.5), got {rate}")
    rng = np.random.default_rng(seed)
    n = len(pairs)
    idx = rng.choice(n, size=int(round(rate * n)), replace=False)
    z = pairs.z.copy()
    if relation == "ge":
        z[idx] = (z[idx] + rng.integers(1, 3, size=len(idx))) % 3
    else:
        z[idx] = 1 - z[idx]
    return Pairs(pairs.i, pairs.j, z, dict(pairs.meta, flip_rate=rate, flip_seed=seed), pairs.w)


def save_pairs(path: str | os.PathLike, pairs: Pairs) -> None:
    """Write a pair set atomically as an uncompressed ``.npz`` with its provenance as JSON."""
    meta = dict(pairs.meta, format=FORMAT)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, i=pairs.i, j=pairs.j, z=pairs.z, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def load_pairs(path: str | os.PathLike, expect: dict | None = None) -> Pairs:
    """Load a pair set (no pickle) and check its provenance against ``expect``.

    Raises:
        DataError: the file is missing or malformed.
        ProvenanceError: a provenance field differs from ``expect`` (another dataset, split, ...).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            i, j, z = f["i"], f["j"], f["z"]
            meta = json.loads(bytes(f["meta"]).decode())
    except FileNotFoundError:
        raise DataError(f"{path}: pair file not found") from None
    except Exception as e:  # noqa: BLE001 - zip, key and json errors all mean a bad file
        raise DataError(f"{path}: not a valid relcomp pair file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: unknown pair-file format {meta.get('format')!r}")
    if not (len(i) == len(j) == len(z) == meta.get("n")) or i.dtype != np.int32 or z.dtype != np.uint8:
        raise DataError(f"{path}: arrays do not match the header (n={meta.get('n')})")
    for key, want in (expect or {}).items():
        if meta.get(key) != want:
            raise ProvenanceError(
                f"{path}: built for {key}={meta.get(key)!r}, but {key}={want!r} is needed here; "
                "rebuild it with `relcomp data pairs` or delete it"
            )
    size = meta.get("split_size", 0)
    if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= size):
        raise DataError(f"{path}: indices fall outside the split of {size} items")
    return Pairs(i, j, z, meta)


# Seeds of the paper's standard pair sets: one offset per split so val/test pairs differ from train.
_SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def pair_file(data_dir: str | os.PathLike, split: str, n: int, seed: int, relation: str = "gt") -> Path:
    return Path(data_dir) / "pairs" / f"mnist-{split}-{format_count(n)}-{relation}-seed{seed}.npz"


def mnist_pairs(data, split: str, n: int, seed: int = 42, relation: str = "gt", data_dir=None) -> Pairs:
    """The standard MNIST pair set for ``split`` of size ``n``: loaded from the cache if present and
    valid for this dataset, else built and cached (under a file lock, atomically).

    ``data`` is an :class:`~relcomp.data.mnist.MNIST`.
    """
    from .mnist import default_data_dir

    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    split_obj = data.split(split)
    expect = {"dataset_sha256": data.sha256, "split": split, "n": int(n), "relation": relation,
              "seed": int(seed) + _SPLIT_SEED_OFFSET[split], "split_size": len(split_obj),
              **({"scheme": SCHEMES[relation]} if SCHEMES.get(relation) else {})}
    path = pair_file(data_dir, split, n, seed, relation)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                return load_pairs(path, expect)
            except DataError:
                path.unlink()  # stale or corrupt: rebuild below
        pairs = make_pairs(split_obj.labels, n, expect["seed"], relation)
        pairs = Pairs(pairs.i, pairs.j, pairs.z, dict(pairs.meta, dataset="mnist",
                                                       dataset_sha256=data.sha256, split=split))
        save_pairs(path, pairs)
        return pairs

