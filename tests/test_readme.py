"""The README's tables are generated from committed results files (docs/results/*.json) by
`relcomp report`, never typed by hand: each generated block equals what the command prints now,
and every figure it links exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from relcomp.lab.report import BLOCK, update_readme

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", ["README.md", "docs/performance.md"])
def test_readme_blocks_match_their_results_files(doc):
    assert update_readme(ROOT / doc, check=True) == [], \
        f"run: relcomp report --readme {doc} (and commit the results files and figures it names)"


def test_readme_blocks_name_committed_results_and_figures():
    text = (ROOT / "README.md").read_text()
    blocks = list(BLOCK.finditer(text))
    assert {Path(m["path"]).name for m in blocks} >= {"active-quick.json", "crowd-quick.json", "ties-quick.json",
                                                       "loss-quick.json", "quick.json", "own-quick.json",
                                                       "features-mnist.json", "hf-embed-speed.json", "beyond-quick.json"}
    for m in blocks:
        assert (ROOT / m["path"]).exists()
        for link in re.findall(r"\]\(([^)]+\.png)\)", m["body"]):
            assert (ROOT / link).exists(), link


def test_an_empty_block_does_not_swallow_the_text_after_it():
    text = ("<!-- relcomp report a.json -->\n<!-- end relcomp report -->\nkeep me\n"
            "<!-- relcomp report b.json figures=img -->\nold\n<!-- end relcomp report -->\n")
    found = [(m["path"], m["figs"], m["body"]) for m in BLOCK.finditer(text)]
    assert found == [("a.json", None, ""), ("b.json", "img", "old\n")]


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "results").glob("*.json")), ids=lambda p: p.name)
def test_every_committed_results_file_renders_with_its_provenance(path):
    """Each file under docs/results is one `relcomp report` can print, and says what command made it."""
    import json

    from relcomp.lab.report import render

    assert json.loads(path.read_text())["command"].split()[0] in ("relcomp", "python")
    assert render(path).strip()
