"""Data sources: where a run's images, pairs and (optional) labels come from.

A source is the ``data`` part of a :class:`~relcomp.config.TrainConfig` *and* knows how to load
itself, so training, evaluation, few-shot transfer and the CLI never ask which source they have:

- :class:`MnistSource`: the paper's MNIST splits and pair sets (optionally with simulated noise);
- :class:`UserSource`: a user's image folder or ``.npy`` and comparisons file (+ optional labels).

Each gives :class:`~relcomp.data.splits.Data` for training, a :class:`~relcomp.data.splits.TestSplit`
for evaluation and a :class:`~relcomp.data.splits.ShotPool` for few-shot transfer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError
from ..schema import check_fields, short
from ..utils import parse_count, sha256_file
from .comparisons import CONTRADICTIONS, load_comparisons, load_labels
from .features import load_features, mnist_features
from .images import ImageSet, load_images
from .mnist import MNIST, Split, load_mnist
from .pairs import Pairs, flip_outcomes, make_pairs, mnist_pairs
from .splits import Data, Inputs, ShotPool, TestSplit, absolute, to_tensor, untouched
from .user import UserData, load_user_data

N_TEST_PAIRS = 20_000
MAX_IMAGE_SIZE = 1024   # the side images are resized to; beyond it one image alone fills memory
MAX_VAL_PAIRS = 10_000_000


def _subset(split: Split, n: int | None) -> Split:
    return split if n is None else Split(split.name, split.images[:n], split.labels[:n])


@dataclass
class MnistSource(Inputs):
    """The paper's MNIST: 50k train / 10k val / 10k test images, pair sets stored as indices."""

    source: ClassVar[str] = "mnist"
    pairs: str = "50k"                  # size of the train pair set, or a comparisons file (.csv/.parquet)
    val_pairs: int = 20_000
    train_subset: int | None = None     # use only the first N train images (tests, smoke profile)
    val_subset: int | None = None       # use only the first N val images
    test_subset: int | None = None      # evaluate on the first N test images (2N random pairs among them)
    pair_seed: int = 42                 # seed of the pair sets, separate from the model seed
    flip_rate: float = 0.0              # simulated annotators: flip this share of train and val outcomes
    data_dir: str | None = None         # MNIST and pair cache (default $RELCOMP_DATA_DIR or ~/.cache/relcomp)
    features: str | None = None         # features file: 70k rows train, val, test (see relcomp.data.features)
    encoder: str | None = None          # hf:<model>: the images embedded by this frozen model (set from --backbone)
    feature_dim: int | None = None      # D of the feature vectors (resolved)

    channels: ClassVar[int] = 1
    image_size: ClassVar[int] = 28

    @property
    def pairs_file(self) -> bool:
        """``pairs`` names a comparisons file (train-split indices as items) instead of a size."""
        return Path(self.pairs).suffix.lower() in (".csv", ".parquet")

    @property
    def n_pairs(self) -> int:
        return parse_count(self.pairs)

    def validate(self, relational: bool, relation: str) -> None:
        if self.pairs_file:
            if relation == "same" or self.flip_rate:
                raise ConfigError("--pairs FILE holds judgements of which item is greater (and ties): --relation gt "
                                  "or ge, no --flip-rate")
        else:
            parse_count(self.pairs)
        for name in ("val_pairs", "train_subset", "val_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                where = f"--{name.replace('_', '-')} (a profile's [data] {name})"
                raise ConfigError(f"{where} must be a positive integer, got {v!r}")
        if self.val_pairs > MAX_VAL_PAIRS or not 0 <= self.pair_seed < 2**63:
            raise ConfigError(f"--val-pairs must be at most {MAX_VAL_PAIRS:,} and --pair-seed from 0 to 2^63 - 1, "
                              f"got {self.val_pairs:,} and {self.pair_seed}")
        if not 0 <= self.flip_rate < 0.5:
            raise ConfigError(f"--flip-rate must be in [0, 0.5), got {self.flip_rate}")

    def resolved(self) -> MnistSource:
        pairs = absolute(self.pairs) if self.pairs_file else self.pairs
        return dataclasses.replace(self, features=absolute(self.features), pairs=pairs)

    def read_feature_dim(self) -> int:
        return mnist_features(self.features)["train"].shape[1]

    def for_images(self, size: int, channels: int) -> MnistSource:
        return self  # 28 x 28 grayscale; an hf: model resizes and repeats channels itself

    def mnist(self, progress: bool = False) -> MNIST:
        """MNIST with each split's images replaced by its features, or by its embeddings."""
        m = load_mnist(self.data_dir)
        if self.features is None and self.encoder is None:
            return m
        feats = mnist_features(self.features) if self.features else {}
        splits = {name: Split(name, feats[name] if feats else self.prepare(sp.images, progress), sp.labels)
                  for name, sp in (("train", m.train), ("val", m.val), ("test", m.test))}
        return dataclasses.replace(m, **splits)

    def load(self, device: torch.device, relational: bool, relation: str, num_classes: int | None = None,
             progress: bool = False) -> Data:
        mnist = self.mnist(progress)
        train, val = _subset(mnist.train, self.train_subset), _subset(mnist.val, self.val_subset)
        train_pairs = None
        if relational:
            train_pairs = (self.judged(train, relation) if self.pairs_file else
                           split_pairs(self, mnist, train, "train", self.n_pairs, self.train_subset, relation))
        val_pairs = split_pairs(self, mnist, val, "val", self.val_pairs, self.val_subset, relation)
        if self.flip_rate > 0:
            # Noisy annotators everywhere but in the test set: train and val outcomes are corrupted.
            train_pairs = flip_outcomes(train_pairs, self.flip_rate, self.pair_seed + 7, relation)
            val_pairs = flip_outcomes(val_pairs, self.flip_rate, self.pair_seed + 8, relation)
        return Data(to_tensor(train.images, device), torch.from_numpy(train.labels).to(device),
                    to_tensor(val.images, device), torch.from_numpy(val.labels).to(device), train_pairs, val_pairs,
                    unlabeled=untouched(len(train.labels), train_pairs, device), fingerprint=file_hashes(self))

    def judged(self, train: Split | None = None, relation: str = "ge") -> Pairs:
        """The train pairs of a comparisons file whose items are train-split indices ("0" ... "49999"),
        as ``relcomp suggest`` names them; ``gt`` drops the ties."""
        train = train or _subset(load_mnist(self.data_dir).train, self.train_subset)
        items = ImageSet([str(k) for k in range(len(train.labels))], train.images, "MNIST train")
        comps = load_comparisons(self.pairs, items)
        return (comps.without_ties() if relation == "gt" else comps).pairs(meta={"file": self.pairs})

    def train_items(self, relation: str = "gt") -> tuple[list[str], np.ndarray, Pairs]:
        """(names, model inputs, the judged pairs) of the train items, named by their train-split
        index: what `relcomp suggest` draws new pairs from."""
        mnist = self.mnist()
        train = _subset(mnist.train, self.train_subset)
        pairs = self.judged(train) if self.pairs_file else split_pairs(
            self, mnist, train, "train", self.n_pairs, self.train_subset, relation)
        return [str(k) for k in range(len(train.labels))], train.images, pairs

    def test_split(self, relation: str) -> TestSplit:
        mnist = self.mnist()
        n = self.test_subset
        if n is None:
            pairs = mnist_pairs(mnist, "test", N_TEST_PAIRS, self.pair_seed, relation, data_dir=self.data_dir)
            return TestSplit("MNIST test", mnist.test.images, mnist.test.labels, pairs)
        labels = mnist.test.labels[:n]  # a subset's pairs are not the paper's: made in memory
        return TestSplit(f"MNIST test[:{n}]", mnist.test.images[:n], labels,
                         make_pairs(labels, 2 * n, self.pair_seed + 2, relation))

    def shot_pool(self, labels: str | None = None) -> ShotPool:
        if labels is not None:
            raise ConfigError("--labels applies to runs trained on your own data")
        m = self.mnist()
        tr, te = self.train_subset, self.test_subset
        return ShotPool(m.train.images[:tr], m.train.labels[:tr], m.test.images[:te], m.test.labels[:te], same_pool=False)

    def tag(self) -> str:
        base = Path(self.pairs).stem if self.pairs_file else self.pairs
        return base + (f"-flip{self.flip_rate:g}" if self.flip_rate else "")


@dataclass
class UserSource(Inputs):
    """A user's images and pairwise judgements (see :mod:`relcomp.data.comparisons` for the formats)."""

    source: ClassVar[str] = "user"
    images: str = ""                    # image folder or .npy array
    comparisons: str = ""               # CSV/Parquet: a, b, outcome[, annotator, weight]
    labels: str | None = None           # optional CSV/Parquet: item, label (evaluation and few-shot)
    image_size: int = 28                # every image is resized to image_size x image_size ...
    channels: int = 1                   # ... and converted to 1 (grayscale) or 3 (RGB) channels
    val_fraction: float = 0.1           # share of distinct compared pairs held out for validation
    contradictions: str = "keep"        # pairs judged differently: keep | drop | majority
    pair_seed: int = 42                 # seed of the train/val split
    features: str | None = None         # instead of images: a features file (.npy, .npz, .parquet)
    encoder: str | None = None          # hf:<model>: the images embedded by this frozen model (set from --backbone)
    feature_dim: int | None = None      # D of the feature vectors (resolved)

    def validate(self, relational: bool, relation: str) -> None:
        if self.images and self.features:
            raise ConfigError("give --images or --features, not both")
        if not (self.images or self.features) or not self.comparisons:
            raise ConfigError("your own data needs --comparisons and either --images or --features")
        if not relational:
            raise ConfigError("this model needs labels for every image; train a relational model on comparisons")
        if relation == "same":
            raise ConfigError("--relation same applies to MNIST; your comparisons say which item is greater "
                              "(gt), or that too with ties (ge)")
        if not 4 <= self.image_size <= MAX_IMAGE_SIZE or self.image_size % 4:
            raise ConfigError(f"--image-size must be a multiple of 4 from 4 to {MAX_IMAGE_SIZE}, got {self.image_size}")
        if not 0 <= self.pair_seed < 2**63:
            raise ConfigError(f"--pair-seed must be from 0 to 2^63 - 1, got {self.pair_seed}")
        if self.channels not in (1, 3):
            raise ConfigError(f"--channels must be 1 or 3, got {self.channels}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.contradictions not in CONTRADICTIONS:
            raise ConfigError(f"--contradictions must be one of {', '.join(CONTRADICTIONS)}")

    def resolved(self) -> UserSource:
        """The same source with absolute paths: a run folder must not depend on the directory it
        was started from."""
        return dataclasses.replace(self, images=absolute(self.images or None) or "", labels=absolute(self.labels),
                                   comparisons=absolute(self.comparisons), features=absolute(self.features))

    def read_feature_dim(self) -> int:
        return self.items().images.shape[1]

    def for_images(self, size: int, channels: int) -> UserSource:
        return dataclasses.replace(self, image_size=size, channels=channels)

    def items(self, progress: bool = False) -> ImageSet:
        """The items as the model takes them: features, images, or images embedded by the encoder."""
        if self.features:
            return load_features(self.features)
        s = load_images(self.images, self.image_size, self.channels, progress=progress)
        return ImageSet(s.names, self.prepare(s.images, progress), s.source) if self.encoder else s

    def read(self, num_classes: int | None = None, progress: bool = False, relation: str = "gt") -> UserData:
        """The user's data, loaded and validated (ties dropped under ``gt``)."""
        return load_user_data(self.items(progress), self.comparisons, self.labels, val_fraction=self.val_fraction,
                              seed=self.pair_seed, contradictions=self.contradictions, num_classes=num_classes,
                              progress=progress, relation=relation)

    def load(self, device: torch.device, relational: bool, relation: str, num_classes: int | None = None,
             progress: bool = False) -> Data:
        """All images form one tensor that the train pairs index; validation embeds only the items
        that the held-out pairs (or the labels) touch, re-indexed."""
        ud = self.read(num_classes, progress, relation)
        n = len(ud.images)
        y = ud.labels if ud.labels is not None else np.full(n, -1, np.int64)
        touched = np.zeros(n, bool)
        touched[ud.val.i] = touched[ud.val.j] = True
        rows = np.flatnonzero(touched | (y >= 0))
        remap = np.full(n, -1, np.int32)
        remap[rows] = np.arange(len(rows), dtype=np.int32)
        val = dataclasses.replace(ud.val, i=remap[ud.val.i], j=remap[ud.val.j], meta=dict(ud.val.meta, split_size=len(rows)))
        x = to_tensor(ud.images.images, device)
        yt = torch.from_numpy(y).to(device)
        keep = torch.from_numpy(rows).to(device)
        return Data(x, yt, x[keep], yt[keep], ud.train, val, fingerprint=ud.fingerprint, report=ud.report(),
                    unlabeled=torch.arange(n, device=device))  # every image: compared ones are unlabeled too

    def train_items(self, relation: str = "gt") -> tuple[list[str], np.ndarray, Pairs]:
        """(names, model inputs, the judged pairs, outcome codes 0/1/2) of every item; every
        judgement (train and held-out) counts as judged."""
        ud = self.read(relation="ge")  # a pair judged a tie is judged, whatever the relation
        return ud.images.names, ud.images.images, ud.comparisons.pairs()

    def test_split(self, relation: str) -> TestSplit:
        """The held-out comparisons (the val split, which picked the best checkpoint: the figure is
        slightly optimistic) and the labelled items (never seen in training)."""
        ud = self.read(relation=relation)
        labels = ud.labels if ud.labels is not None else np.full(len(ud.images), -1, np.int64)
        return TestSplit("held-out comparisons and labelled items", ud.images.images, labels, ud.val)

    def shot_pool(self, labels: str | None = None) -> ShotPool:
        """A user's labelled items are both the shot pool and the test set (each draw is scored on
        the items it did not train on)."""
        labels = labels or self.labels
        if labels is None:
            raise ConfigError("this run was trained without a labels file; pass --labels FILE (columns item,label)")
        items = self.items()
        y_all = load_labels(labels, items)
        have = np.flatnonzero(y_all >= 0)
        return ShotPool(items.images[have], y_all[have], items.images[have], y_all[have], same_pool=True)

    def tag(self) -> str:
        return Path(self.comparisons).stem + ("-features" if self.features else "")


SOURCES: dict[str, type] = {"mnist": MnistSource, "user": UserSource}


def file_hashes(src: MnistSource) -> dict[str, str] | None:
    """The SHA-256 of the comparisons and features files an MNIST run reads (None: it reads none), so
    that a run resumed or reused on a file that has changed since says so (a study's comparisons
    written again after a change to ``suggest``)."""
    found = {"comparisons": sha256_file(src.pairs)} if src.pairs_file else {}
    if src.features:
        found["features"] = sha256_file(src.features)
    return found or None


def split_pairs(src: MnistSource, mnist: MNIST, split: Split, name: str, n: int, subset: int | None,
                relation: str) -> Pairs:
    """The pair set of an MNIST split: the paper's, stored and cached, or for a subset made in
    memory (cheap, and not the paper's)."""
    if subset is None:
        return mnist_pairs(mnist, name, n, src.pair_seed, relation, data_dir=src.data_dir)
    return make_pairs(split.labels, n, src.pair_seed + (name == "val"), relation)


def source_to_dict(source: Any) -> dict[str, Any]:
    return {"source": source.source, **dataclasses.asdict(source)}


def source_from_dict(d: dict[str, Any], where: str = "data") -> MnistSource | UserSource:
    """The source a ``config.json`` describes, each field checked against its type.

    Raises:
        ConfigError: not an object, an unknown source name, or a field of another type.
    """
    name = d.get("source", "mnist") if isinstance(d, dict) else None
    if isinstance(d, dict) and not (isinstance(name, str) and name in SOURCES):
        raise ConfigError(f"{where}: unknown data source {short(name)}; choose from {', '.join(SOURCES)}")
    cls = SOURCES.get(name, MnistSource)
    return cls(**check_fields(cls, d, where))
