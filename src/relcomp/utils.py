"""Small shared helpers: atomic writes, hashing, seeding, device choice, JSON lines."""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    A crash or exception at any point leaves either the old file or no file under the final
    name, never a half-written one. The temp file is removed on failure.
    """
    path = Path(path)
    make_dir(path.parent)
    with write_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~UMASK)  # as open() would create it, not mkstemp's owner-only 0600
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with write_errors(path):
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn a failed write (``OSError``: disk full, permission denied, read-only disk) into one
    :class:`~relcomp.errors.WriteError` line naming the file."""
    from .errors import WriteError

    try:
        yield
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        raise WriteError(f"{reason} while writing {path}") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and its parents) to write into, with one-line errors.

    Raises:
        WriteError: ``path`` or a folder above it is a file, or the folder cannot be made.
    """
    from .errors import WriteError

    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {p}, which is a file"
                raise WriteError(f"{path} {where}; name a folder to write into")
            break
    with write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line left by a crash."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    with write_errors(Path(path)), open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    from .errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX512-BF16 or AMX), so autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return ("avx512_bf16" in flags) or ("amx_bf16" in flags)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware computes it natively, else fp32."""
    from .errors import ConfigError

    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"unknown precision {precision!r}; use auto, bf16 or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def parse_count(text: str | int) -> int:
    """Parse counts like ``50k``, ``5M``, ``1_000`` or ``150000``."""
    from .errors import ConfigError

    if isinstance(text, int):
        return text
    s = str(text).strip().replace("_", "").lower()
    mult = 1
    if s.endswith("k"):
        mult, s = 1_000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1_000_000, s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise ConfigError(f"not a count: {text!r} (examples: 50k, 5M, 150000)") from None
    if value < 0 or value != int(value):
        raise ConfigError(f"not a whole non-negative count: {text!r}")
    return int(value)


def format_count(n: int) -> str:
    """Inverse of :func:`parse_count` for round numbers: 50000 -> '50k'."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def default_data_dir() -> Path:
    """``$RELCOMP_DATA_DIR`` if set, else ``~/.cache/relcomp``."""
    env = os.environ.get("RELCOMP_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "relcomp"


def exit_with_parent(code: int, message: str | None = None, poll_s: float = 1.0) -> None:
    """Exit this process (``code``, after ``message`` on stderr) once its parent is gone.

    A parent killed by SIGKILL tells its children nothing: torchrun starts each rank in a session
    of its own, and ``annotate --learn`` its trainer, so they would go on writing a run folder that
    a resume then writes too. A daemon thread polls the parent's pid."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        if message:
            print(message, file=sys.stderr, flush=True)
        os._exit(code)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# glibc's malloc serves blocks above a threshold (128 KiB, raised as blocks are freed) by mmap and
# gives them back at once, and trims its heap above 128 KiB free: a training step's activations
# then come back as fresh pages, zeroed by the kernel, on every step. Measured on a 2-core Xeon
# (bf16): the weak model at batch 256 ran at 2,500-3,000 pairs/s, changing by up to 26% from one
# bench to the next, and at 4,300-4,550 with these settings; batch 128 (about 4,100) did not move.
# (PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for the same reason.)
MALLOC_SETTINGS = {-3: 32 << 20,   # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's maximum) from the heap
                   -1: 1 << 30,    # M_TRIM_THRESHOLD: keep up to 1 GiB freed for reuse
                   -2: 64 << 20}   # M_TOP_PAD: grow the heap 64 MiB at a time


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (:data:`MALLOC_SETTINGS`); the process may
    hold up to 1 GiB more than it uses. Returns False where there is no glibc (macOS, musl)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(libc.mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS.items())
    except (OSError, AttributeError):
        return False
