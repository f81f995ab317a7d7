"""Backbones: what turns a model's input into the 128-d embedding its head reads.

- ``paper``: the paper's CNN (:class:`relcomp.models.BaseModel`), for images; MNIST's default.
- ``mlp``: :class:`MLPBackbone`, for feature vectors (``--features``), one per item.
- ``hf:<model id or folder>``: a Hugging Face ``transformers`` vision model (DINOv2, CLIP vision,
  ViT, ResNet, ConvNeXt, ...), the optional extra ``relcomp[hf]``. Frozen by default: its
  embeddings of an image set are computed once (:func:`encode_images`), cached on disk, and an
  :class:`MLPBackbone` is trained on them. With ``--finetune`` the model is part of the network
  (:class:`HFBackbone`) and trained too.

Images reach an ``hf:`` model the way its own preprocessing says: RGB, resized to its input size
(square, no centre crop), normalised by its mean and std.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.splits import ENCODERS
from .errors import ConfigError, DataError
from .utils import atomic_path, default_data_dir, write_json_atomic

HF_PREFIX = "hf:"
BACKBONES = ("auto", "paper", "mlp", "hf:<model id or folder>")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
POOLING_VERSION = "pooler-or-mean/1"   # part of the cache key: change it when pooling changes


class MLPBackbone(nn.Module):
    """Standardise - Linear(D, 256) - ReLU - Linear(256, 128): a head's trunk for feature vectors.

    The first layer standardises each dimension by the training items' running mean and std (a
    BatchNorm without parameters), so raw pixels, CLIP vectors and a run's embeddings all arrive at
    the same scale (a per-item LayerNorm did worse). No dropout: with it the weak head on MNIST
    features named its classes shifted by one on some seeds, without it on none (CHANGELOG.md).
    """

    def __init__(self, in_dim: int, embed_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(in_dim, affine=False), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def is_hf(backbone: str) -> bool:
    return backbone.startswith(HF_PREFIX)


@dataclass(frozen=True)
class HFPreprocess:
    """What an ``hf:`` model expects: RGB images of ``size`` x ``size``, normalised by mean and std."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("--backbone hf:... needs Hugging Face transformers: pip install 'relcomp[hf]' "
                          "(without torchvision)") from None
    transformers.utils.logging.set_verbosity_error()   # relcomp reports what it loads itself
    transformers.utils.logging.disable_progress_bar()
    return transformers


def hf_source(backbone: str) -> str:
    """``hf:<ref>`` -> a local folder (absolute) or a model id."""
    ref = backbone[len(HF_PREFIX):].strip()
    if not ref:
        raise ConfigError("--backbone hf: needs a model id or a folder, e.g. hf:facebook/dinov2-small")
    local = Path(ref).expanduser()
    return str(local.resolve()) if local.is_dir() else ref


def hf_resolved(backbone: str) -> str:
    """``hf:<ref>`` as a run records it: a local folder as its absolute path (so that the run works
    from any directory), a model id as it is."""
    return HF_PREFIX + hf_source(backbone)


def hf_folder(backbone: str) -> Path:
    """The folder holding the model's files: the local folder, or its snapshot in the Hugging Face
    cache. Never downloads.

    Raises:
        ConfigError: a model id that is not in the local cache, with how to get it.
    """
    _transformers()
    src = hf_source(backbone)
    if Path(src).is_dir():
        if not (Path(src) / "config.json").is_file():
            raise ConfigError(f"{src}: not a Hugging Face model folder (no config.json); save one with "
                              "model.save_pretrained(folder)")
        return Path(src)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(src, local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, ...
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        raise ConfigError(_not_cached(src))
    try:
        return Path(snapshot_download(src, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as e:  # noqa: BLE001 - no network, unknown id, gated model, ...
        raise ConfigError(f"{_not_cached(src)} (download failed: {type(e).__name__})") from None


def _not_cached(src: str) -> str:
    folder = Path(src).expanduser().resolve()
    return (f"hf:{src}: no folder {folder} here, and no model of that id in the local Hugging Face cache (it "
            f"cannot be downloaded here either); for a model id, on a machine with "
            f"internet run `hf download {src}` (huggingface_hub's CLI) and copy ~/.cache/huggingface here, or save the model "
            "to a folder and pass --backbone hf:/path/to/folder")


def hf_preprocess(backbone: str) -> HFPreprocess:
    """The model's input size, mean and std, from its ``preprocessor_config.json`` (or its config's
    ``image_size`` and ImageNet statistics where it has none)."""
    folder = hf_folder(backbone)
    pre = folder / "preprocessor_config.json"
    p = model_json(pre) if pre.exists() else {}
    try:
        size = _side(p.get("crop_size")) if p.get("do_center_crop") else None
        size = size or _side(p.get("size"))
        if size is None:
            cfg = model_json(folder / "config.json")
            size = cfg.get("image_size") or (cfg.get("vision_config") or {}).get("image_size") or 224
        mean = tuple(float(v) for v in p.get("image_mean") or IMAGENET_MEAN)
        std = tuple(float(v) for v in p.get("image_std") or IMAGENET_STD)
        return HFPreprocess(int(size), mean, std)
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{folder}: an unusable image size, mean or std in its preprocessor or model config "
                        f"({type(e).__name__}: {e})") from None


def model_json(path: Path) -> dict:
    """A Hugging Face model folder's JSON file, as an object.

    Raises:
        DataError: missing, unreadable or not a JSON object.
    """
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a JSON object")
    return d


def _side(size) -> int | None:
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        return size.get("height") or size.get("shortest_edge")
    return None


class HFBackbone(nn.Module):
    """A ``transformers`` vision model: float (B, C, H, W) in [0, 1] -> pooled embedding (B, D).

    Grayscale is repeated to RGB, other sizes are resized to the model's, then normalised. The
    embedding is the model's ``pooler_output`` where it has one (DINOv2: the normalised CLS token;
    ResNet, ConvNeXt: global average pool), else the mean of its last hidden states. Models with a
    text tower (CLIP, SigLIP) contribute their vision tower.
    """

    def __init__(self, backbone: str):
        super().__init__()
        transformers = _transformers()
        folder = hf_folder(backbone)
        self.prep = hf_preprocess(backbone)
        try:
            model = transformers.AutoModel.from_pretrained(str(folder))
        except Exception as e:  # noqa: BLE001 - unknown architecture, corrupt weights, missing files
            raise ConfigError(f"{backbone}: transformers cannot load it as a model ({type(e).__name__}: {e})") from None
        self.model = getattr(model, "vision_model", model)
        self.register_buffer("mean", torch.tensor(self.prep.mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(self.prep.std, dtype=torch.float32).view(1, -1, 1, 1), False)
        with torch.no_grad():
            self.dim = int(self.eval()(torch.zeros(1, 3, self.prep.size, self.prep.size)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        s = self.prep.size
        if x.shape[-2:] != (s, s):
            x = nn.functional.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        h = out.last_hidden_state
        return h.mean(1) if h.ndim == 3 else h.mean((2, 3))


def weights_hash(backbone: str) -> str:
    """SHA-256 over the model folder's config and weight files (names and contents)."""
    folder = hf_folder(backbone)
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin") and f.is_file():
            h.update(f.name.encode())
            with open(f.resolve(), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def model_key(backbone: str) -> list[str]:
    """What an embedding depends on besides the images: the model (source, weights hash) and the pooling."""
    return [hf_source(backbone), weights_hash(backbone), POOLING_VERSION]


def cache_key(backbone: str, images: np.ndarray) -> str:
    """Embeddings are keyed by the model, the pooling and the exact images."""
    h = hashlib.sha256(json.dumps([*model_key(backbone), list(images.shape), str(images.dtype)]).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:32]


def width_path(backbone: str) -> Path:
    key = hashlib.sha256(json.dumps(model_key(backbone)).encode()).hexdigest()[:32]
    return embedding_cache_dir() / f"{key}.width.json"


def hf_width(backbone: str) -> int:
    """D, the length of a frozen hf: model's embeddings: read from the embedding cache, where
    :func:`encode_images` (or an earlier call) recorded it; the model is built only the first time."""
    path = width_path(backbone)
    try:
        return int(json.loads(path.read_text())["dim"])
    except (OSError, ValueError, KeyError, TypeError):  # not cached yet, or an unreadable record: measure again
        pass
    return record_width(backbone, HFBackbone(backbone).dim)


def record_width(backbone: str, dim: int) -> int:
    write_json_atomic(width_path(backbone), {"backbone": hf_source(backbone), "dim": int(dim)})
    return int(dim)


def embedding_cache_dir() -> Path:
    return default_data_dir() / "embeddings"


def encode_images(backbone: str, images: np.ndarray, batch: int = 32, progress: bool = False,
                  cache: bool = True) -> np.ndarray:
    """float32 (N, D) embeddings of uint8 images (N, C, H, W) by a frozen ``hf:`` model, read from
    the cache (``<data dir>/embeddings``) when these images met this model before.

    Raises:
        ConfigError: transformers missing, or a model that cannot be found or loaded.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"an hf: backbone embeds images (uint8, N x C x H x W), got {images.dtype} {images.shape}")
    path = embedding_cache_dir() / f"{cache_key(backbone, images)}.npy" if cache else None
    if path is not None and path.exists():
        _say(f"{len(images):,} embeddings by {backbone} read from the cache {path}", progress)
        return np.load(path, allow_pickle=False)
    model = HFBackbone(backbone).eval()
    from tqdm.auto import tqdm

    t, parts = time.perf_counter(), []
    with torch.inference_mode():
        for k in tqdm(range(0, len(images), batch), desc=f"embedding with {backbone}", unit="batch",
                      disable=not progress, leave=False):
            x = torch.from_numpy(images[k:k + batch]).float().div_(255.0)
            parts.append(model(x).float().numpy())
    out = np.concatenate(parts)
    if cache:
        record_width(backbone, model.dim)
    dt = time.perf_counter() - t
    _say(f"embedded {len(images):,} images with {backbone} in {dt:.1f}s ({len(images) / max(dt, 1e-9):.1f} images/s)",
         progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, out)
    return out


def _say(text: str, progress: bool) -> None:
    if progress:
        print(f"relcomp: {text}", file=sys.stderr)


ENCODERS["hf"] = encode_images  # what the data sources embed a frozen hf: encoder's images with
