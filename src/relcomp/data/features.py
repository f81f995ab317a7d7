"""Precomputed features: one vector per item, computed with any model the user likes.

Formats (the item names are what comparison and label files refer to):

- ``.npy``: a float array (N, D); item ``k`` is row ``k`` (named ``"0"``, ``"1"``, ...);
- ``.npz``: an array ``names`` (N,) of strings and an array ``vectors`` (N, D) (``features`` or
  ``embeddings`` are accepted for the second name);
- ``.parquet``: a column ``item`` (names) and a column ``vector`` of fixed-length lists of floats,
  or, instead of ``vector``, one numeric column per dimension.

Features are returned as an :class:`~relcomp.data.images.ImageSet` whose ``images`` are float32
(N, D): every reader of items (comparisons, labels, training, inference) takes them as they are.
For MNIST a features file holds the 70,000 items in the order train (50k), val (10k), test (10k),
or names them ``train/<i>``, ``val/<i>``, ``test/<i>``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import atomic_path, make_dir
from .images import ImageSet

FEATURE_FORMATS = (".npy", ".npz", ".parquet")
VECTOR_KEYS = ("vectors", "features", "embeddings")


def load_features(path: str | os.PathLike) -> ImageSet:
    """Read and validate a features file (see the module docstring).

    Raises:
        DataError: a missing or unreadable file, a shape that is not (N, D), a row count that does
            not match the names, duplicate names, NaN or Inf values (the first bad item is named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such features file")
    suffix = path.suffix.lower()
    if suffix not in FEATURE_FORMATS:
        raise DataError(f"{path}: features must be {', '.join(FEATURE_FORMATS)}, got {suffix or 'no extension'}")
    reader = {".npy": _read_npy, ".npz": _read_npz, ".parquet": _read_parquet}[suffix]
    names, x = reader(path)
    return ImageSet(names, _checked(path, names, x), str(path))


def _checked(path: Path, names: list[str], x: np.ndarray) -> np.ndarray:
    if x.ndim != 2 or 0 in x.shape:
        raise DataError(f"{path}: features must be a non-empty 2-D array (items, dimensions), got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: features must be numbers, got {x.dtype}")
    if len(names) != len(x):
        raise DataError(f"{path}: {len(names):,} item names but {len(x):,} feature rows; the counts must match")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise DataError(f"{path}: item {dup!r} appears more than once")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: {int(bad.sum()):,} item(s) have NaN or Inf features, the first {names[k]!r} (row {k})")
    return x


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - a bad header raises ValueError, SyntaxError, ...
        raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    return [str(k) for k in range(len(x))], x


def _read_npz(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            key = next((k for k in VECTOR_KEYS if k in keys), None)
            if "names" not in keys or key is None:
                raise DataError(f"{path}: a .npz of features needs arrays 'names' and 'vectors' (has: "
                                f"{', '.join(sorted(keys)) or 'none'})")
            names, x = z["names"], z[key]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, pickle refusal (object arrays), bad headers
        raise DataError(f"{path}: not a readable .npz of string names and numeric vectors ({type(e).__name__}: {e})") from None
    return [str(n) for n in names.tolist()], x


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'relcomp[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    cols = {c.lower(): c for c in table.column_names}
    if "item" not in cols:
        raise DataError(f"{path}: a Parquet file of features needs a column 'item' (has: {', '.join(table.column_names)})")
    names = [str(n) for n in table.column(cols["item"]).to_pylist()]
    if "vector" in cols:
        rows = table.column(cols["vector"]).to_pylist()
        lengths = {len(r) if r is not None else 0 for r in rows}
        if len(lengths) != 1:
            raise DataError(f"{path}: column 'vector' holds lists of different lengths ({sorted(lengths)[:5]})")
        return names, np.asarray(rows, dtype=np.float64)
    rest = [c for c in table.column_names if c != cols["item"]]
    if not rest:
        raise DataError(f"{path}: no feature columns beside 'item'")
    return names, np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in rest])


def check_features_path(path: str | os.PathLike) -> Path:
    """``path`` as a features file to write.

    Raises:
        DataError: an extension that is none of :data:`FEATURE_FORMATS`, or Parquet without pyarrow.
    """
    path = Path(path)
    if path.suffix.lower() not in FEATURE_FORMATS:
        raise DataError(f"{path}: features are written as {', '.join(FEATURE_FORMATS)}")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401 - checked before the work, not after it
        except ImportError:
            raise DataError(f"{path}: writing Parquet needs pyarrow: pip install 'relcomp[parquet]', "
                            "or write .npy or .npz") from None
    return path


def save_features(path: str | os.PathLike, names: list[str], vectors: np.ndarray) -> Path:
    """Write features in the format the extension names (atomically); the reverse of :func:`load_features`."""
    path = check_features_path(path)
    suffix = path.suffix.lower()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    make_dir(path.parent)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
        elif suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, names=np.asarray(names, dtype=str), vectors=vectors)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
            pq.write_table(pa.table({"item": names, "vector": vec}), tmp)
    return path


MNIST_SPLITS = (("train", 50_000), ("val", 10_000), ("test", 10_000))


def mnist_features(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The features of MNIST's three splits from one file: 70,000 rows in split order, or items
    named ``train/<i>``, ``val/<i>``, ``test/<i>``.

    Raises:
        DataError: a row count that does not match, or a missing item.
    """
    fs = load_features(path)
    total = sum(n for _, n in MNIST_SPLITS)
    if fs.names[0] == "0" and fs.names[-1] == str(len(fs) - 1):  # a plain array: rows in split order
        if len(fs) != total:
            raise DataError(f"{path}: MNIST features need {total:,} rows (train 50k, val 10k, test 10k, in that "
                            f"order), got {len(fs):,}")
        bounds = np.cumsum([0] + [n for _, n in MNIST_SPLITS])
        return {name: fs.images[bounds[k]:bounds[k + 1]] for k, (name, _) in enumerate(MNIST_SPLITS)}
    index = fs.index()
    out = {}
    for name, n in MNIST_SPLITS:
        wanted = [f"{name}/{i}" for i in range(n)]
        missing = [w for w in wanted if w not in index]
        if missing:
            raise DataError(f"{path}: {len(missing):,} MNIST item(s) have no features, the first {missing[0]!r}")
        out[name] = fs.images[[index[w] for w in wanted]]
    return out
