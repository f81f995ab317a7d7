"""Studies: the paper's reproduction (:mod:`.paper`), what the paper names as future work
(:mod:`.beyond`) and annotation rounds with a simulated annotator (:mod:`.active`), each chosen by
a profile (``relcomp reproduce --profile NAME``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.mnist import fetch_mnist
from ..errors import ConfigError
from .active import run_active
from .baseline import run_baseline
from .beyond import run_beyond
from .common import load_profile, profile_names
from .crowd import run_crowd
from .likelihoods import run_losses
from .own import run_own
from .paper import format_console, reproduce_paper, time_text
from .ties import run_ties

# Every kind but the paper's (below); each takes the profile's seeds, or seeds 0 .. --seeds - 1.
RUNNERS = {"beyond": run_beyond, "crowd": run_crowd, "ties": run_ties, "bt": run_baseline, "loss": run_losses,
           "own": run_own, "active": run_active}


def command_line(profile: str, seeds: int | None, overrides: dict[str, Any] | None) -> str:
    """The ``relcomp reproduce`` command that runs this study (recorded in results files)."""
    flags = {"relational.samples": "--samples", "relational.sizes": "--sizes", "supervised.epochs": "--supervised-epochs",
             "fewshot.draws": "--draws", "flip_rate": "--flip-rate"}
    parts = ["relcomp", "reproduce", "--profile", str(profile)] + (["--seeds", str(seeds)] if seeds else [])
    for key, value in (overrides or {}).items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts += [flags.get(key, key), text]
    return " ".join(parts)


__all__ = ["format_console", "load_profile", "profile_names", "reproduce", "time_text"]


def reproduce(profile: str = "quick", out: str | os.PathLike | None = None, seeds: int | None = None,
              device: str = "auto",
              data_dir: str | None = None, overrides: dict[str, Any] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run the study of ``profile`` (a name or a .toml file) into ``out`` (default
    ``runs/reproduce-<profile>``); return the content of its ``results.json``.

    ``seeds``: train every model with seeds 0 .. seeds - 1 (default: the profile's seeds, or 1).
    ``overrides``: ``{"section.key": value}`` or ``{"key": value}`` for a top-level key.

    Raises:
        ConfigError: an unknown profile, a bad override or seeds < 1.
    """
    prof = load_profile(profile)
    for dotted, value in (overrides or {}).items():
        if "." in dotted:
            section, key = dotted.split(".")
            prof.setdefault(section, {})[key] = value
        else:
            prof[dotted] = value
    if seeds is not None and seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    if "flip_rate" in prof and prof.get("kind") != "active":
        raise ConfigError("--flip-rate applies to the annotation-rounds profiles (active-quick, active-smoke)")
    out = Path(out) if out else Path("runs") / f"reproduce-{prof['name']}"
    prof["command"] = command_line(profile, seeds, overrides)
    fetch_mnist(data_dir)  # says where MNIST came from and that it was verified
    if prof.get("kind") in RUNNERS:
        if seeds is not None:
            prof["seeds"] = list(range(seeds))
        return RUNNERS[prof["kind"]](prof, out, device, data_dir, progress)
    return reproduce_paper(prof, out, seeds or 1, device, data_dir, progress)
