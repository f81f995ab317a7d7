"""``relcomp embed``: write feature vectors of an image set, to train on with ``--features``.

Three embedders: ``pixels`` (the raw pixels, flattened, in [0, 1]), a trained run folder (its
backbone's 128-d embedding), or ``hf:<model>`` (a frozen Hugging Face model, see
:mod:`relcomp.backbones`; cached like ``--backbone hf:``). The image set is MNIST (70,000 items:
train, val, test, named ``train/<i>`` ...) or a folder / ``.npy`` of images (named as comparison
files name them).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import encode_images, hf_preprocess, is_hf
from .data.features import MNIST_SPLITS, check_features_path, save_features
from .data.images import ImageSet, load_images
from .data.mnist import load_mnist
from .data.splits import to_tensor
from .errors import ConfigError
from .metrics import item_outputs
from .run import load_run_model
from .utils import resolve_device


def mnist_items(data_dir: str | None = None) -> ImageSet:
    """MNIST's 70,000 images as one item set, in split order."""
    m = load_mnist(data_dir)
    splits = {"train": m.train, "val": m.val, "test": m.test}
    names = [f"{name}/{i}" for name, n in MNIST_SPLITS for i in range(n)]
    images = np.concatenate([splits[name].images for name, _ in MNIST_SPLITS])
    return ImageSet(names, images[:, None], "MNIST")


def embed(embedder: str, images: str | os.PathLike | None = None, data_dir: str | None = None,
          device: str = "auto", progress: bool = False) -> tuple[ImageSet, dict[str, Any]]:
    """Feature vectors of an image set (MNIST when ``images`` is None) and what it cost.

    Raises:
        ConfigError: an unknown embedder, or a run that cannot be loaded.
        DataError: unreadable images.
    """
    size, channels = 28, 1
    model = cfg = None
    if is_hf(embedder):
        size, channels = hf_preprocess(embedder).size, 3
    elif embedder != "pixels":
        if not Path(embedder).is_dir():
            raise ConfigError(f"--with must be pixels, hf:<model> or a run folder; {embedder!r} is none of them")
        model, cfg = load_run_model(embedder, resolve_device(device))
        if cfg.data.feature_dim is not None:
            raise ConfigError(f"{embedder} was trained on features; embed with a run that reads images")
        size, channels = cfg.data.image_size, cfg.data.channels
    items = mnist_items(data_dir) if images is None else load_images(images, size, channels, progress=progress)
    t = time.perf_counter()
    if is_hf(embedder):
        vectors = encode_images(embedder, items.images, progress=progress)
    elif model is not None:
        dev = next(model.parameters()).device
        vectors = item_outputs(model, to_tensor(items.images, dev), "fp32")[0].cpu().numpy()
    else:
        vectors = items.images.reshape(len(items), -1).astype(np.float32) / 255.0
    dt = time.perf_counter() - t
    return ImageSet(items.names, vectors, items.source), {"items": len(items), "dim": int(vectors.shape[1]),
                                                         "seconds": dt, "items_per_s": len(items) / max(dt, 1e-9)}


def write_embeddings(embedder: str, out: str | os.PathLike, images: str | os.PathLike | None = None,
                     data_dir: str | None = None, device: str = "auto", progress: bool = False) -> dict[str, Any]:
    """:func:`embed`, written to ``out`` (.npy, .npz or .parquet); returns what it cost.

    Raises:
        DataError: an output format that is none of those (checked before any work).
    """
    check_features_path(out)  # before any work
    items, info = embed(embedder, images, data_dir, device, progress)
    path = save_features(out, items.names, items.images)
    return {**info, "out": str(path)}
