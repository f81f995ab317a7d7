"""A strict reader for the IDX format of MNIST (no torchvision).

Layout: two zero bytes, one dtype byte, one byte with the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order. Every deviation is a
:class:`~relcomp.errors.DataError` that names the file and what is wrong.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a numpy array (native byte order).

    Raises:
        DataError: wrong magic, unknown dtype, or a size that does not match the header.
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad magic number {data[:4].hex()} (IDX files start with 0000)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: {what}: header says shape {dims} of {dtype.name} ({expected} bytes), "
            f"file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``).

    Raises:
        DataError: the file is missing, unreadable or malformed.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def read_idx_images(path: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """Read an IDX image file: uint8, shape (N, H, W).

    Raises:
        DataError: not uint8, not 3-D, or not ``count`` images.
    """
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise DataError(f"{path}: expected uint8 images of shape (N, H, W), got {arr.dtype} {arr.shape}")
    if count is not None and arr.shape[0] != count:
        raise DataError(f"{path}: expected {count} images, found {arr.shape[0]}")
    return arr


def read_idx_labels(path: str | os.PathLike, num_classes: int = 10, count: int | None = None) -> np.ndarray:
    """Read an IDX label file: uint8 of shape (N,), each value below ``num_classes``; returns int64.

    Raises:
        DataError: not uint8, not 1-D, wrong count, or a label out of range.
    """
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise DataError(f"{path}: expected uint8 labels of shape (N,), got {arr.dtype} {arr.shape}")
    if count is not None and arr.shape[0] != count:
        raise DataError(f"{path}: expected {count} labels, found {arr.shape[0]}")
    bad = np.flatnonzero(arr >= num_classes)
    if bad.size:
        raise DataError(
            f"{path}: label {int(arr[bad[0]])} at index {int(bad[0])} is outside 0..{num_classes - 1}"
            f" ({bad.size} such labels)"
        )
    return arr.astype(np.int64)


def write_idx(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write a uint8 array as IDX (used by tests and by users preparing their own files)."""
    arr = np.ascontiguousarray(arr)
    codes = {v: k for k, v in _DTYPES.items()}
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    header = bytes([0, 0, codes[np.dtype(dt)], arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(dt).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
