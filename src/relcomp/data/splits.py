"""What every data source gives and shares: :class:`Data` for training (one float tensor per split;
batches are index gathers into it), :class:`TestSplit` for evaluation, :class:`ShotPool` for
few-shot transfer, the :class:`DataSource` protocol, and :class:`Inputs` (images, features or
embeddings of a frozen encoder)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch

from ..errors import ConfigError
from .pairs import Pairs

# The widest feature vector a run may declare: wider than any backbone's, and a config.json that
# says more would have the model builder ask for gigabytes before anything else fails.
MAX_FEATURE_DIM = 65_536

# How a run's frozen encoder embeds images: relcomp.backbones registers its encode_images here when
# it is imported (relcomp's __init__ imports it), so that the data layer never imports the models'
# side: (backbone, uint8 images (N, C, H, W), progress=) -> float32 (N, D).
ENCODERS: dict[str, Callable[..., np.ndarray]] = {}


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Model input: uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1];
    float feature vectors (N, D) -> float32 (N, D) as they are."""
    if images.dtype.kind == "f":
        return torch.from_numpy(np.require(images, np.float32, ["C", "W"])).to(device)
    x = torch.from_numpy(np.require(images, requirements=["C", "W"]))  # a memory-mapped .npy is read-only: copied
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def pairs_to_device(pairs: Pairs, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(i, j, z, w) tensors; ``w`` is None when the pairs carry no weights."""
    return (torch.from_numpy(pairs.i.astype(np.int64)).to(device),
            torch.from_numpy(pairs.j.astype(np.int64)).to(device),
            torch.from_numpy(pairs.z.astype(np.float32)).to(device),
            None if pairs.w is None else torch.from_numpy(pairs.w.astype(np.float32)).to(device))


@dataclass
class Data:
    """What the training loop consumes: images as float tensors, train pairs (or labels) and the
    val split it selects the best checkpoint on."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    train_pairs: Pairs | None         # None: the model learns from the labels train_y
    val_pairs: Pairs | None
    fingerprint: dict | None = None   # hashes of the input files (None: none read), checked on resume
    report: dict | None = None        # user data: the validation report
    unlabeled: torch.Tensor | None = None  # rows of train_x for the class-balance term (MNIST: those no
    #                                         train pair touches; your data: every image)
    _index: tuple | None = dataclasses.field(default=None, repr=False)
    _annotators: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    @property
    def n_train(self) -> int:
        return len(self.train_pairs) if self.train_pairs is not None else len(self.train_y)

    def batch(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor | None]:
        """(model inputs, targets, weights) of the training samples ``idx``: an image pair and its
        outcome code, or an image and its label."""
        if self.train_pairs is None:
            return (self.train_x[idx],), self.train_y[idx], None
        if self._index is None:
            self._index = pairs_to_device(self.train_pairs, self.train_x.device)
        i, j, z, w = self._index
        a, b = i[idx], j[idx]
        return (self.train_x[a], self.train_x[b]), z[idx], None if w is None else w[idx]

    def annotators(self, idx: torch.Tensor) -> torch.Tensor | None:
        """Who judged the training pairs ``idx`` (indices into ``train_pairs.meta["annotators"]``),
        or None where the pairs do not say."""
        ann = None if self.train_pairs is None else self.train_pairs.annotator
        if ann is None:
            return None
        if self._annotators is None:
            self._annotators = torch.from_numpy(ann.astype(np.int64)).to(self.train_x.device)
        return self._annotators[idx]


def untouched(n: int, pairs: Pairs | None, device: torch.device) -> torch.Tensor | None:
    """Rows of a split of ``n`` items that no pair touches; None without pairs or without such rows."""
    if pairs is None:
        return None
    free = np.ones(n, bool)
    free[pairs.i] = free[pairs.j] = False
    rows = np.flatnonzero(free)
    return torch.from_numpy(rows).to(device) if len(rows) else None


@dataclass
class TestSplit:
    """What a run is evaluated on: uint8 images, labels (-1 where unknown) and pairs."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    pairs: Pairs


@dataclass
class ShotPool:
    """Labelled images to draw k shots per class from, and those to test on. ``same_pool``: the
    shots come from the test items themselves (a user's few labels)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    same_pool: bool


class DataSource(Protocol):
    source: ClassVar[str]
    pair_seed: int

    @property
    def channels(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    features: str | None
    encoder: str | None
    feature_dim: int | None

    def input_shape(self) -> tuple[int, ...]: ...

    def read_feature_dim(self) -> int: ...

    def for_images(self, size: int, channels: int) -> DataSource: ...

    def train_items(self, relation: str = "gt") -> tuple[list[str], np.ndarray, Pairs]: ...

    def prepare(self, images: np.ndarray, progress: bool = False) -> np.ndarray: ...

    def validate(self, relational: bool, relation: str) -> None: ...

    def resolved(self) -> DataSource: ...

    def load(self, device: torch.device, relational: bool, relation: str, num_classes: int | None,
             progress: bool) -> Data: ...

    def test_split(self, relation: str) -> TestSplit: ...

    def shot_pool(self, labels: str | None = None) -> ShotPool: ...

    def tag(self) -> str: ...


class Inputs:
    """What both sources share about their model inputs: images, precomputed features
    (``features``), or images embedded by a frozen ``hf:`` model (``encoder``). The resolved
    config stores ``feature_dim`` so a run's model can be rebuilt without reading the data."""

    features: str | None
    encoder: str | None
    feature_dim: int | None

    def check_feature_dim(self) -> None:
        d = self.feature_dim
        if d is not None and (not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= MAX_FEATURE_DIM):
            raise ConfigError(f"data: feature_dim must be an integer from 1 to {MAX_FEATURE_DIM:,}, got {d!r}")

    @property
    def groups_measured(self) -> bool:
        """Whether how well this data's unlabeled items group was measured against its labels
        (``--unlabeled auto`` groups them only then): MNIST's raw pixels alone so far, which UMAP
        and a Gaussian mixture group 97.2% right (50k train images; 95.7% of 20k). Features and
        hf: embeddings of MNIST, and your own images, were not measured."""
        return getattr(self, "source", None) == "mnist" and self.features is None and self.encoder is None

    def input_shape(self) -> tuple[int, ...]:
        """(D,) for feature vectors, else (C, H, W)."""
        if self.feature_dim is not None:
            return (self.feature_dim,)
        return (self.channels, self.image_size, self.image_size)

    def prepare(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """Items as the model takes them: uint8 images embedded by the frozen ``encoder`` where the
        run has one, anything else as it is."""
        if self.encoder is None or images.dtype.kind == "f":
            return images
        return ENCODERS["hf"](self.encoder, images if images.ndim == 4 else images[:, None], progress=progress)


def absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())
