"""What the studies share: table cells, report writers, provenance and machine facts (the run
cache is the harness's, :mod:`relcomp.lab.harness`)."""
from __future__ import annotations

import base64
import html
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import write_json_atomic, write_text_atomic


def mnist_subsets(data: dict) -> dict[str, Any]:
    """The MnistSource settings of a profile's ``[data]`` table: train/val/test subsets and val pairs."""
    return {"train_subset": data.get("train_subset"), "val_subset": data.get("val_subset"),
            "val_pairs": data.get("val_pairs", 20_000), "test_subset": data.get("test_subset")}


def pct(values, paper: float | None = None, scale: float = 100) -> dict[str, Any]:
    """A table cell in percent (times ``scale``): mean, std (sample, 0 for one value), n, the values
    (and the paper's number)."""
    v = np.asarray(values, dtype=float) * scale
    cell = {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v)), "values": [float(x) for x in v]}
    return cell if paper is None else {**cell, "paper": paper}


def log(msg: str) -> None:
    print(f"relcomp: {msg}", file=sys.stderr, flush=True)


def busy_cpu_warning(consequence: str) -> str | None:
    """A warning when the 1-minute load average is above half the cores (other work shares the
    CPU), naming its ``consequence``; None on an idle machine."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    return f"warning: load average {load:.1f} on {cores} cores: {consequence}" if load > 0.5 * cores else None


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def git_commit() -> str | None:
    """The commit of relcomp's source checkout (``+dirty`` with uncommitted changes), or None when
    it is not a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance(prof: dict) -> dict[str, Any]:
    """Where a results file came from: the command, relcomp's version and commit, the date."""
    from .. import __version__

    return {"command": prof.get("command"), "relcomp": __version__, "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def study_head(kind: str, prof: dict, keys: tuple[str, ...], **settings) -> dict[str, Any]:
    """What every study's results file opens with: its kind and profile, the profile's settings
    named by ``keys`` (and ``settings``), where it came from and the machine."""
    return {"kind": kind, "profile": prof["name"], "description": prof.get("description", ""),
            "settings": {k: prof[k] for k in keys} | settings, **provenance(prof), "machine": machine_info()}


def provenance_line(res: dict) -> str:
    """The opening of a study's README block: its command, relcomp's version, the machine, the seeds."""
    m = res["machine"]
    return (f"`{res['command']}`, relcomp {res['relcomp']}, {m['cpu']}, {m['cores']} cores"
            + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; seeds {res['settings']['seeds']}")


def write_study(res: dict, out: Path, title: str, markdown, figures_html: list[str] | None = None) -> dict:
    """Write a study's results.json (without its console text), report.md and report.html (the
    markdown, and its figures embedded) into ``out``; return ``res`` with ``console`` set."""
    text = markdown(res)
    res["console"] = text
    write_json_atomic(out / "results.json", {k: v for k, v in res.items() if k != "console"})
    write_text_atomic(out / "report.md", f"# {title}: profile `{res['profile']}`\n\n{res.get('description', '')}\n\n{text}\n")
    write_text_atomic(out / "report.html", "\n".join(html_head(f"{title}: {res['profile']}") + [
        f"<h1>{html.escape(title)}: <code>{html.escape(res['profile'])}</code></h1>",
        f"<pre>{html.escape(text)}</pre>", *(figures_html or []), "</body></html>"]))
    return res


def fmt(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    return f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["n"] > 1 else "")


def fmt_paper(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def md_figures(figures: dict[str, str]) -> list[str]:
    lines = []
    for name, caption in figures.items():
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    return lines


def html_table(header: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def html_head(title: str) -> list[str]:
    return ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title><style>",
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}",
            "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}",
            "figure{margin:1.5em 0}figcaption{color:#555;font-style:italic}</style></head><body>"]


def html_figures(figures: dict[str, str], out: Path) -> list[str]:
    """Every figure embedded as base64 PNG, so the page is self-contained; each with an id
    (``fig-N``) that a table of contents can link to."""
    esc = html.escape
    parts = []
    for n, (name, caption) in enumerate(figures.items(), 1):
        data = base64.b64encode((out / "figures" / name).read_bytes()).decode()
        parts.append(f"<figure id='fig-{n}'><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return parts


def md_contents(lines: list[str]) -> list[str]:
    """Markdown ``lines`` with a contents list of their ``## `` sections before the first of them
    (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens)."""
    heads = [k for k, line in enumerate(lines) if line.startswith("## ")]
    if not heads:
        return lines
    links = []
    for k in heads:
        title = lines[k][3:].strip()
        anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        links.append(f"- [{title}](#{anchor})")
    return lines[:heads[0]] + ["## Contents", "", *links, ""] + lines[heads[0]:]


def html_contents(parts: list[str], figures: dict[str, str]) -> list[str]:
    """``parts`` of a page with an id on every ``<h2>`` and, before the first of them, a table of
    contents: the sections, and under "Figures" each figure's caption up to its first full stop."""
    body = "\n".join(parts)
    titles = re.findall(r"<h2>(.*?)</h2>", body)
    for n, title in enumerate(titles, 1):
        body = body.replace(f"<h2>{title}</h2>", f"<h2 id='sec-{n}'>{title}</h2>", 1)
    items = []
    for n, title in enumerate(titles, 1):
        sub = ""
        if title == "Figures" and figures:
            sub = "<ul>" + "".join(f"<li><a href='#fig-{k}'>{html.escape(c.split('. ')[0])}</a></li>"
                                   for k, c in enumerate(figures.values(), 1)) + "</ul>"
        items.append(f"<li><a href='#sec-{n}'>{title}</a>{sub}</li>")
    nav = "<nav><h3>Contents</h3><ol>" + "".join(items) + "</ol></nav>"
    at = body.find("<h2 id='sec-1'>")
    return [body[:at] + nav + body[at:]] if at >= 0 else [body]


