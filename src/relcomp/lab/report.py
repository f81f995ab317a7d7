"""``relcomp report``: the tables and figures of a committed results file, and the README blocks
made from them.

A results file (``results.json`` of ``relcomp reproduce``, committed under ``docs/results/``)
says what kind of study wrote it; :data:`RENDERERS` gives each kind's markdown and figures. The
README holds generated blocks between two markers::

    <!-- relcomp report docs/results/active-quick.json figures=docs/img -->
    ... what `relcomp report docs/results/active-quick.json --figures docs/img` prints ...
    <!-- end relcomp report -->

``relcomp report --readme README.md`` rewrites every block (and draws its figures) from its
file, and ``--check`` fails when a block differs (a test runs the check), so no table in the
README is typed by hand.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from ..utils import write_text_atomic
from . import bench_compare, bench_report, scripted
from .studies import STUDIES


@dataclass(frozen=True)
class Renderer:
    markdown: Callable[[dict, str], str]          # (results, figure folder as the text links it) -> markdown
    figures: Callable[[dict, Path], dict]         # (results, folder) -> {file: caption}, drawn into the folder


def no_figures(res: dict, fig_dir: Path) -> dict:
    return {}


# Every study's results (from the one list of studies), and the results of the bench and the scripts.
RENDERERS: dict[str, Renderer] = {
    **{kind: Renderer(study.markdown, study.figures) for kind, study in STUDIES.items()},
    "bench": Renderer(bench_report.markdown, no_figures),
    "bench-compare": Renderer(bench_compare.markdown, no_figures),
    "features-mnist": Renderer(scripted.features_markdown, no_figures),
    "hf-embed-speed": Renderer(scripted.embed_speed_markdown, no_figures)}

# A block: its header line, then any lines that are not another block's header, then the end marker.
BLOCK = re.compile(r"(<!-- relcomp report (?P<path>\S+)(?: figures=(?P<figs>\S+))? -->\n)"
                   r"(?P<body>(?:(?!<!-- relcomp report )[^\n]*\n)*?)(<!-- end relcomp report -->)")


def results_kind(res: dict) -> str | None:
    """What study wrote a results file: its ``kind`` (the scripts' files name it ``study``)."""
    return res.get("kind", res.get("study"))


def read_results(path: str | os.PathLike) -> dict:
    """Raises: DataError: not a readable results file of a known kind."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable results file ({e})") from None
    kind = results_kind(res) if isinstance(res, dict) else None
    if kind not in RENDERERS:
        raise DataError(f"{path}: results of kind {kind!r}; relcomp report reads {', '.join(RENDERERS)}")
    return res


def render(path: str | os.PathLike, figures: str = "figures", draw_into: Path | None = None) -> str:
    """The markdown of a results file, its figures linked in the folder ``figures``; with
    ``draw_into`` the figures are drawn there from the file's numbers."""
    res = read_results(path)
    r = RENDERERS[results_kind(res)]
    if draw_into is not None:
        r.figures(res, draw_into)
    return r.markdown(res, figures)


def update_readme(readme: str | os.PathLike, check: bool = False) -> list[str]:
    """Rewrite the generated blocks of ``readme`` and draw their figures (or, with ``check``,
    only compare the text); return the results files whose block was stale.

    Raises:
        ConfigError: the README has no generated block.
        DataError: a block names a results file that cannot be read.
    """
    readme = Path(readme)
    text, root = readme.read_text(), readme.parent
    fresh = {}
    for m in BLOCK.finditer(text):
        figs = m["figs"] or "figures"
        fresh[m[0]] = m[1] + render(root / m["path"], figs, None if check else root / figs).rstrip("\n") + "\n" + m[5]
    if not fresh:
        raise ConfigError(f"{readme}: no '<!-- relcomp report FILE -->' block")
    stale = [BLOCK.match(old)["path"] for old, new in fresh.items() if old != new]
    if stale and not check:
        write_text_atomic(readme, BLOCK.sub(lambda m: fresh[m[0]], text))
    return stale
