"""Checkpoints: weights as safetensors, training state via ``torch.load(weights_only=True)``.

A run folder holds ``checkpoint.json``, a small pointer naming the current weights and state
files. Both files are written atomically first, then the pointer is replaced atomically: a kill
at any moment leaves the previous checkpoint complete and loadable.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from .errors import CheckpointError, WriteError
from .utils import atomic_path, write_json_atomic

POINTER = "checkpoint.json"


def save_weights(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Write a model's weights as safetensors, atomically. ``metadata`` values are JSON-encoded."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(canonical(save(tensors, metadata=meta)))


def canonical(blob: bytes) -> bytes:
    """A safetensors file with its JSON header in sorted key order: safetensors writes the
    metadata in hash-map order, which differs from process to process, so identical weights
    would give different files. The tensor bytes and their offsets are unchanged."""
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file: (tensors, decoded metadata).

    Raises:
        CheckpointError: missing, truncated or not safetensors.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read for the tensors and the metadata
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            raw = f.metadata() or {}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors weights file ({e})") from None
    return tensors, meta


def load_weights(path: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` (strict) and return the file's metadata.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit this model.
    """
    tensors, meta = read_weights(path)
    expected = model.state_dict()
    for name, t in tensors.items():
        want = expected.get(name)
        if want is not None and t.dtype != want.dtype:
            raise CheckpointError(f"{path}: tensor {name} is {str(t.dtype).removeprefix('torch.')}, but the model's is "
                                  f"{str(want.dtype).removeprefix('torch.')}; not weights relcomp wrote")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values; these weights are "
                                  "unusable (retrain, or resume from a checkpoint)")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit a {type(model).__name__} ({first})") from None
    return meta


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write training state (optimizer, RNG, counters) atomically with ``torch.save``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load training state with ``weights_only=True``: a file that would run code is refused.

    Raises:
        CheckpointError: missing, corrupt, or holding objects other than tensors and plain data.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols, and advises weights_only=False
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: state file not found") from None
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: refused or corrupt training state ({msg})") from None


def save_checkpoint(run_dir: str | os.PathLike, model: nn.Module, state: dict[str, Any], step: int,
                    samples: int, metadata: dict[str, Any] | None = None) -> None:
    """Write ``ckpt/<tag>.safetensors`` and ``ckpt/<tag>.state.pt``, then point ``checkpoint.json`` at them.

    Raises:
        WriteError: a write failed (disk full, permission denied); the previous checkpoint,
            which ``checkpoint.json`` still names, is intact.
    """
    run_dir = Path(run_dir)
    tag = f"step{int(step):09d}"
    weights = run_dir / "ckpt" / f"{tag}.safetensors"
    state_path = run_dir / "ckpt" / f"{tag}.state.pt"
    try:
        save_weights(weights, model, metadata)
        save_state(state_path, state)
        previous = _read_pointer(run_dir)
        write_json_atomic(run_dir / POINTER, {"weights": str(weights.relative_to(run_dir)),
                                              "state": str(state_path.relative_to(run_dir)),
                                              "step": int(step), "samples": int(samples)})
    except (OSError, WriteError) as e:
        named = checkpoint_files(run_dir)
        for p in (weights, state_path):  # this checkpoint's files, unless the pointer names them: free the space
            if p not in named:
                p.unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        raise WriteError(f"{(e.strerror or type(e).__name__).lower()} while writing a checkpoint into {run_dir}") from None
    # Only now is the old checkpoint obsolete.
    if previous and previous.get("weights") != str(weights.relative_to(run_dir)):
        for key in ("weights", "state"):
            (run_dir / previous[key]).unlink(missing_ok=True)


def remove_orphans(run_dir: str | os.PathLike) -> list[Path]:
    """Delete checkpoint files that ``checkpoint.json`` does not name and temp files left by a
    killed write; return what was removed."""
    run_dir = Path(run_dir)
    pointer = _read_pointer(run_dir) or {}  # a corrupt pointer raises: then nothing is removed
    keep = {run_dir / pointer[k] for k in ("weights", "state") if k in pointer}
    removed = []
    for p in list((run_dir / "ckpt").glob("*")) + list(run_dir.glob(".*.tmp")):
        if p.is_file() and p not in keep:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def checkpoint_files(run_dir: Path) -> set[Path]:
    """The weights and state files the pointer names (none without a readable pointer)."""
    try:
        pointer = _read_pointer(run_dir) or {}
    except CheckpointError:
        return set()
    return {run_dir / pointer[k] for k in ("weights", "state") if isinstance(pointer.get(k), str)}


def _read_pointer(run_dir: Path) -> dict | None:
    p = run_dir / POINTER
    if not p.exists():
        return None
    try:
        pointer = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{p}: corrupt checkpoint pointer ({type(e).__name__})") from None
    if not (isinstance(pointer, dict) and all(isinstance(pointer.get(k), str) for k in ("weights", "state"))
            and isinstance(pointer.get("samples"), int)):
        raise CheckpointError(f"{p}: corrupt checkpoint pointer (expected weights, state and samples)")
    return pointer


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / POINTER).exists()


def checkpoint_samples(run_dir: str | os.PathLike) -> int | None:
    """The samples seen at the run's current checkpoint; None without one (or with a corrupt pointer)."""
    try:
        pointer = _read_pointer(Path(run_dir))
    except CheckpointError:
        return None
    return pointer.get("samples") if isinstance(pointer, dict) else None


def load_checkpoint(run_dir: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Load the run's current checkpoint into ``model``; return the training state.

    Raises:
        CheckpointError: no checkpoint, or a corrupt one.
    """
    run_dir = Path(run_dir)
    pointer = _read_pointer(run_dir)
    if pointer is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    load_weights(run_dir / pointer["weights"], model)
    return load_state(run_dir / pointer["state"])
