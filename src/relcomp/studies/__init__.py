"""Studies: the paper's reproduction (:mod:`.paper`) and what the paper names as future work
(:mod:`.beyond`), each chosen by a profile (``relcomp reproduce --profile NAME``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.mnist import fetch_mnist
from ..errors import ConfigError
from .beyond import run_beyond
from .common import load_profile, profile_names
from .paper import format_console, reproduce_paper, time_text

__all__ = ["format_console", "load_profile", "profile_names", "reproduce", "time_text"]


def reproduce(profile: str = "quick", out: str | os.PathLike | None = None, seeds: int = 1, device: str = "auto",
              data_dir: str | None = None, overrides: dict[str, Any] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run the study of ``profile`` (a name or a .toml file) into ``out`` (default
    ``runs/reproduce-<profile>``); return the content of its ``results.json``.

    Raises:
        ConfigError: an unknown profile, a bad override or seeds < 1.
    """
    prof = load_profile(profile)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        prof.setdefault(section, {})[key] = value
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    out = Path(out) if out else Path("runs") / f"reproduce-{prof['name']}"
    fetch_mnist(data_dir)  # says where MNIST came from and that it was verified
    if prof.get("kind") == "beyond":
        return run_beyond(prof, out, device, data_dir, progress)
    return reproduce_paper(prof, out, seeds, device, data_dir, progress)
