"""A user's dataset: images + comparisons (+ optional labels), validated and split into train/val."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..utils import sha256_file
from .comparisons import Comparisons, load_comparisons, load_labels
from .images import ImageSet, load_images
from .pairs import Pairs


@dataclass
class UserData:
    images: ImageSet
    labels: np.ndarray | None        # int64 (N,), -1 where unknown; None without a labels file
    comparisons: Comparisons
    train: Pairs
    val: Pairs
    fingerprint: dict[str, str]      # SHA-256 of the decoded images, the comparisons and labels files

    def report(self) -> dict:
        r = self.comparisons.report.to_json()
        r["stats"] = dict(r["stats"], train_comparisons=len(self.train), val_comparisons=len(self.val),
                          labelled_items=int((self.labels >= 0).sum()) if self.labels is not None else 0)
        return r


def load_user_data(images: str | os.PathLike | ImageSet, comparisons: str | os.PathLike, labels: str | os.PathLike | None = None,
                   image_size: int = 28, channels: int = 1, val_fraction: float = 0.1, seed: int = 42,
                   contradictions: str = "keep", num_classes: int | None = None, progress: bool = False,
                   relation: str = "gt") -> UserData:
    """Load, validate and split a user's data. Nothing is trained on before every file passed.
    Under ``relation`` ``gt`` tie judgements are dropped (and counted); ``ge`` keeps them.

    ``images`` is a folder or ``.npy`` of images (converted to ``image_size`` and ``channels``), or
    items already loaded (features, see :mod:`relcomp.data.features`).

    Raises:
        DataError: any invalid input (a :class:`~relcomp.data.comparisons.ValidationError` carries the report).
    """
    image_set = images if isinstance(images, ImageSet) else load_images(images, image_size, channels, progress=progress)
    comps = load_comparisons(comparisons, image_set, contradictions)
    if relation == "gt":
        comps = comps.without_ties()
        if len(comps) == 0:
            raise DataError(f"{comparisons}: every judgement is a tie; train with --relation ge")
    y = load_labels(labels, image_set) if labels is not None else None
    if y is not None and num_classes is not None and y.max() >= num_classes:
        bad = int(np.flatnonzero(y >= num_classes)[0])
        raise DataError(f"{labels}: item {image_set.names[bad]!r} has label {y[bad]}, but --classes is "
                        f"{num_classes} (labels must be 0..{num_classes - 1})")
    train, val = comps.split(val_fraction, seed)
    h = hashlib.sha256()
    h.update("\n".join(image_set.names).encode())
    h.update(image_set.images.tobytes())
    fingerprint = {"images": h.hexdigest(), "comparisons": sha256_file(comparisons)}
    if labels is not None:
        fingerprint["labels"] = sha256_file(labels)
    return UserData(image_set, y, comps, train, val, fingerprint)

