"""A user's images: a folder of image files or one ``.npy`` array, as uint8 (N, C, H, W).

Every image is converted to one size and channel count (the model's input), so a folder may mix
sizes, grayscale and colour. Items are named by their path relative to the folder (``cats/1.png``)
or, for an array, by their row index (``"0"``, ``"1"``, ...); comparison and label files refer to
items by these names.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """Images and their item names; ``images`` is uint8 (N, C, H, W)."""

    names: list[str]
    images: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        """Item name -> row."""
        return {n: i for i, n in enumerate(self.names)}


def _check_shape(size: int, channels: int) -> None:
    if size < 4 or size % 4:
        raise DataError(f"image size must be a positive multiple of 4, got {size}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def _to_model_input(img, size: int, channels: int) -> np.ndarray:
    """A PIL image -> uint8 (C, size, size): converted to L or RGB, resized with antialiasing."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB") if img.mode not in WIDE else eight_bit(img)
    if channels == 3 and img.mode == "L":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # one channel of more than 8 bits


def eight_bit(img):
    """A 16-bit (or 32-bit integer) grayscale image scaled to 8 bits, 65535 -> 255. PIL's own
    ``convert("L")`` clips these to 0 or 255 instead of scaling.

    Raises:
        DataError: a floating-point image (its range is unknown; save it as 8 or 16 bits).
    """
    from PIL import Image

    if img.mode == "F":
        raise DataError("32-bit floating-point images have no known range; save them as 8- or 16-bit PNG")
    a = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")


def load_image_file(path: str | os.PathLike, size: int = 28, channels: int = 1) -> np.ndarray:
    """One image file as uint8 (C, size, size).

    Raises:
        DataError: missing or unreadable file (named in the message).
    """
    from PIL import Image

    _check_shape(size, channels)
    try:
        with Image.open(path) as img:
            img.load()
            return _to_model_input(img, size, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused, too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001 - decoders of damaged files raise OSError, ValueError, zlib.error, ...
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder and its subfolders, sorted; hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def load_images(path: str | os.PathLike, size: int = 28, channels: int = 1, progress: bool = False) -> ImageSet:
    """Load a folder of images (searched recursively; hidden files skipped) or a ``.npy`` array.

    An array may be (N, H, W) or (N, C, H, W) with C in {1, 3}, uint8 in [0, 255] or float in [0, 1].

    Raises:
        DataError: missing path, no images, unreadable images (all of them listed), a bad array.
    """
    _check_shape(size, channels)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        from tqdm.auto import tqdm

        out = np.empty((len(files), channels, size, size), np.uint8)
        bad: list[str] = []
        for k, f in enumerate(tqdm(files, desc="images", unit="img", disable=not progress, leave=False)):
            try:
                out[k] = load_image_file(f, size, channels)
            except DataError as e:
                bad.append(str(e))
        if bad:
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(f"{len(bad)} unreadable image(s) in {path}:\n  " + "\n  ".join(bad[:20]) + more)
        return ImageSet([f.relative_to(path).as_posix() for f in files], out, str(path))
    if path.suffix.lower() == ".npy":
        return ImageSet(*_load_array(path, size, channels), str(path))
    raise DataError(f"{path}: images must be a folder of image files or a .npy array")


def _load_array(path: Path, size: int, channels: int) -> tuple[list[str], np.ndarray]:
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as e:  # noqa: BLE001 - a bad header raises ValueError, SyntaxError, TokenError, ...
        raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3) or 0 in a.shape:
        raise DataError(f"{path}: expected shape (N, H, W) or (N, C, H, W) with C in {{1, 3}}, got {a.shape}")
    if a.dtype == np.uint8:
        u8 = np.asarray(a)
    elif a.dtype.kind == "f":
        f = np.asarray(a, dtype=np.float32)
        if not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
            raise DataError(f"{path}: float images must be finite and in [0, 1]")
        u8 = np.round(f * 255).astype(np.uint8)
    else:
        raise DataError(f"{path}: images must be uint8 or float, got {a.dtype}")
    if u8.shape[1:] != (channels, size, size):
        u8 = _convert(u8, size, channels)
    return [str(k) for k in range(len(u8))], np.ascontiguousarray(u8)


def _convert(u8: np.ndarray, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(u8), channels, size, size), np.uint8)
    for k, img in enumerate(u8):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        out[k] = _to_model_input(pil, size, channels)
    return out


def load_inputs(paths: Sequence[str | os.PathLike], size: int = 28, channels: int = 1) -> ImageSet:
    """Images named on a command line: image files, folders and ``.npy`` arrays, in order.

    Names are the paths as given (``folder/x.png``, ``arr.npy[3]``).

    Raises:
        DataError: any path that cannot be read.
    """
    names: list[str] = []
    parts: list[np.ndarray] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() or p.suffix.lower() == ".npy":
            s = load_images(p, size, channels)
            names += [(p / n).as_posix() if p.is_dir() else f"{p}[{n}]" for n in s.names]
            parts.append(s.images)
        else:
            names.append(str(p))
            parts.append(load_image_file(p, size, channels)[None])
    if not parts:
        raise DataError("no images given")
    return ImageSet(names, np.concatenate(parts), ", ".join(map(str, paths)))
