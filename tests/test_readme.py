"""The README's tables are generated from committed results files (docs/results/*.json) by
`relcomp report`, never typed by hand: each generated block equals what the command prints now,
and every figure it links exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from relcomp.lab.report import BLOCK, update_readme

ROOT = Path(__file__).resolve().parents[1]


DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", [d for d in DOCS if BLOCK.search((ROOT / d).read_text())])
def test_readme_blocks_match_their_results_files(doc):
    assert update_readme(ROOT / doc, check=True) == [], \
        f"run: relcomp report --readme {doc} (and commit the results files and figures it names)"


def test_readme_blocks_name_committed_results_and_figures():
    """Every committed results file has its block in the README or a page of docs/, and every
    block's results file and figures exist (paths relative to the page)."""
    blocks = [(ROOT / doc, m) for doc in DOCS for m in BLOCK.finditer((ROOT / doc).read_text())]
    names = {Path(m["path"]).name for _, m in blocks}
    assert names >= {p.name for p in (ROOT / "docs" / "results").glob("*.json")} - {"crowd-quick-unconditional.json"}
    for doc, m in blocks:
        assert (doc.parent / m["path"]).exists(), (doc, m["path"])
        for link in re.findall(r"\]\(([^)]+\.png)\)", m["body"]):
            assert (doc.parent / link).exists(), (doc, link)


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


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_of_the_docs_resolves(doc):
    """A link to a file names one that exists; a link to a section names a heading of that file."""
    path = ROOT / doc
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{doc}: {broken}"
