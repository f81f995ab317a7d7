"""``relcomp reproduce``: run the study a profile names (``configs/<name>.toml``, its ``kind``
one of :data:`~relcomp.lab.studies.STUDIES`; no kind: the paper's) through one harness."""
from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.mnist import fetch_mnist
from ..errors import ConfigError
from .common import busy_cpu_warning, log
from .harness import Harness
from .studies import STUDIES
from .studies.paper_report import format_console, time_text


def command_line(profile: str, seeds: int | None, overrides: dict[str, Any] | None) -> str:
    """The ``relcomp reproduce`` command that runs this study (recorded in results files)."""
    flags = {"relational.samples": "--samples", "relational.sizes": "--sizes", "supervised.epochs": "--supervised-epochs",
             "fewshot.draws": "--draws", "flip_rate": "--flip-rate"}
    parts = ["relcomp", "reproduce", "--profile", str(profile)] + (["--seeds", str(seeds)] if seeds else [])
    for key, value in (overrides or {}).items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts += [flags.get(key, key), text]
    return " ".join(parts)


__all__ = ["beside_reference", "format_console", "load_profile", "profile_names", "reproduce", "time_text"]


def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("relcomp").joinpath("configs").iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name: str) -> dict[str, Any]:
    """A named profile (``quick``, ``paper``, ``smoke``) or the path of a TOML file, checked by its
    study (``check_profile``, where the study has one).

    Raises:
        ConfigError: unknown name or kind, unreadable file or missing keys.
    """
    path = Path(name)
    try:
        if path.suffix == ".toml" and path.exists():
            text = path.read_text()
        elif name in profile_names():
            text = resources.files("relcomp").joinpath("configs", f"{name}.toml").read_text()
        else:
            raise ConfigError(f"unknown profile {name!r}; choose from {', '.join(profile_names())} or give a .toml file")
        prof = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"profile {name}: invalid TOML ({e})") from None
    prof["name"] = path.stem if path.suffix == ".toml" else name
    kind = prof.setdefault("kind", "paper")
    if kind not in STUDIES:
        raise ConfigError(f"profile {name}: unknown kind {kind!r}; choose from {', '.join(STUDIES)}")
    if hasattr(STUDIES[kind], "prepare_profile"):
        STUDIES[kind].prepare_profile(prof)
    return prof


def reproduce(profile: str = "quick", out: str | os.PathLike | None = None, seeds: int | None = None,
              device: str = "auto",
              data_dir: str | None = None, overrides: dict[str, Any] | None = None,
              progress: bool = True, jobs: int = 1, threads: int | None = None) -> dict[str, Any]:
    """Run the study of ``profile`` (a name or a .toml file) into ``out`` (default
    ``runs/reproduce-<profile>``); return the content of its ``results.json``.

    ``seeds``: train every model with seeds 0 .. seeds - 1 (default: the profile's seeds, or 1).
    ``overrides``: ``{"section.key": value}`` or ``{"key": value}`` for a top-level key.
    ``jobs``: train up to this many of the study's independent runs at once, each in its own
    process (:mod:`relcomp.lab.parallel`); the numbers are the same for any value at the same
    ``threads``, the CPU threads of each run (default: this process's, shared out among the jobs).

    Raises:
        ConfigError: an unknown profile, a bad override, or seeds, jobs or threads < 1.
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
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number >= 1, not {jobs!r}")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"--threads must be a whole number >= 1, not {threads!r}")
        import torch

        torch.set_num_threads(threads)  # the sequential path's runs, and evaluation
    if "flip_rate" in prof and prof.get("kind") != "active":
        raise ConfigError("--flip-rate applies to the annotation-rounds profiles (active-quick, active-smoke)")
    out = Path(out) if out else Path("runs") / f"reproduce-{prof['name']}"
    prof["command"] = command_line(profile, seeds, overrides)
    fetch_mnist(data_dir)  # says where MNIST came from and that it was verified
    busy = busy_cpu_warning("other work shares the CPU, so the study will take longer than its profile's time says")
    if busy:
        log(busy)
    if seeds is not None:
        prof["seeds"] = list(range(seeds))
    return STUDIES[prof["kind"]].run(prof, Harness(out, device, progress, jobs, threads), data_dir)


def beside_reference(results: dict[str, Any], ref_path: Path | None = None) -> str | None:
    """A paper-kind run's classification numbers beside the committed results file of its profile
    (``docs/results/<profile>.json`` of a source checkout, with more seeds): the difference in
    that file's standard deviations. None where there is no such file (an installed wheel) or it
    holds these very numbers."""
    if ref_path is None:
        ref_path = Path(__file__).resolve().parents[3] / "docs" / "results" / f"{results.get('profile')}.json"
    if results.get("kind") != "paper" or not ref_path.exists():
        return None
    ref = json.loads(ref_path.read_text())
    if ref.get("tables") == json.loads(json.dumps(results["tables"])):
        return None
    lines = [f"Beside the committed reference ({ref_path.name}: seeds {ref.get('seeds')}, {ref.get('date')}), "
             "test classification (%):"]
    for mine, theirs in zip(results["tables"]["table3"], ref["tables"]["table3"], strict=False):
        for col in ("relcomp", "symmetric"):
            a, b = mine.get(col), theirs.get(col)
            if a and b and a.get("mean") is not None and b.get("mean") is not None:
                std = b.get("std") or 0.0
                diff = f"{(a['mean'] - b['mean']) / std:+.1f} std" if std > 0 else f"{a['mean'] - b['mean']:+.2f} points"
                lines.append(f"  {mine['row']:<42} {a['mean']:6.2f}   reference {b['mean']:6.2f} ± {std:.2f}   {diff}")
    return "\n".join(lines)
