"""The paper study's tables, console text, report and README block, from its results (what
:mod:`relcomp.lab.studies.paper` measured)."""
from __future__ import annotations

import html
from pathlib import Path

from ...plots import plot_bars
from ...utils import format_count, parse_count
from ..common import (
    fmt,
    fmt_paper,
    html_contents,
    html_figures,
    html_head,
    html_table,
    md_contents,
    md_figures,
    md_table,
)

# The paper's numbers (percent), by pair-set size: a profile's size that the paper did not run
# (the smoke profile's 1k, say) gets "—", never a neighbour's number.
PAPER_SIZES = ["50k", "500k", "5M"]
PAPER = {
    "siamese_rel": [99.33, 99.40, 99.45],
    "weak_rel": [95.90, 98.23, 96.89],
    "supervised_cls": 99.23,
    "siamese_cls": {1: [97.80, 98.42, 98.73], 3: [97.63, 98.41, 98.72]},
    "weak_cls": [20.28, 83.33, 71.19],
    "rho": {"supervised": 0.193, "siamese": 0.962, "weak": 0.818},
    "ordering": {"supervised": "2→7→3→1→9→8→4→0→5→6", "siamese": "0→1→2→3→4→6→5→8→7→9"},
}


# The runs the paper measured its rho and ordering on: a Siamese model of 50k pairs and a weak
# model of 500k pairs trained with its (buggy) loss. Only these rows show the paper's figure.
PAPER_RHO_RUN = {"supervised": "supervised", "siamese-50k": "siamese", "weak-500k-paper-code": "weak"}


def size_label(size: str, samples: int) -> str:
    """A pair-set size as a row names it: a set larger than the pairs a run sees is not a larger
    data condition, and says so."""
    return size if parse_count(size) <= samples else f"{size} set, ≤{format_count(samples)} distinct seen"


def table_rows(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The three tables as (title, header, rows) of strings, for the console, Markdown and HTML."""
    t = results["tables"]
    losses = results["budgets"].get("weak_losses", ["paper-code", "unconditional"])
    cols = [f"relcomp, {loss} loss" for loss in losses]
    out = [("Table 1. Siamese, relational test accuracy (%)", ["model", "paper", "relcomp"],
            [[r["row"], fmt_paper(r["relcomp"]["paper"]), fmt(r["relcomp"])] for r in t["table1"]]),
           ("Table 2. Weakly supervised, relational test accuracy (%)", ["model", "paper", *cols],
            [[r["row"], fmt_paper(r["paper"]), *(fmt(r.get(loss)) for loss in losses)] for r in t["table2"]])]
    rows3 = []
    for r in t["table3"]:
        if "relcomp" in r:  # supervised and Siamese rows: the paper's method, in the first relcomp column
            rows3.append([r["row"], fmt_paper(r["paper"]), fmt(r["relcomp"])] + [""] * (len(losses) - 1))
        else:
            rows3.append([r["row"], fmt_paper(r["paper"]), *(fmt(r.get(loss)) for loss in losses)])
    out.append(("Table 3. Classification test accuracy (%)",
                ["model", "paper", f"relcomp (paper's method; weak: {losses[0]} loss)", *cols[1:]], rows3))
    return out


def fmt_rho(cell: dict | float) -> str:
    """|rho| as mean ± std over seeds (an older results file holds one number)."""
    if not isinstance(cell, dict):
        return f"{cell:.3f}"
    return f"{cell['mean']:.3f}" + (f" ± {cell['std']:.3f}" if cell["n"] > 1 else "")


def format_console(results: dict) -> str:
    lines = []
    for title, header, rows in table_rows(results):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines += ["", title, "  ".join(h.ljust(w) for h, w in zip(header, widths)),
                  "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines += ["", "Ordinal structure of the test embeddings (PC1 projection, |Spearman rho|):"]
    for key, o in results["ordinal"].items():
        paper = f"   paper {o['paper_rho']:.3f}" if o.get("paper_rho") is not None else ""
        lines.append(f"  {key:<24} |rho| {fmt_rho(o['rho'])}  {o['ordering']}{paper}")
    return "\n".join(lines)


def classification_groups(results: dict) -> dict[str, dict[str, float]]:
    """Table 3 as bar groups: the paper's number beside relcomp's means."""
    losses = results["budgets"].get("weak_losses", ["paper-code", "unconditional"])
    groups = {}
    for r in results["tables"]["table3"]:
        g = {"paper": r["paper"]} if r["paper"] is not None else {}
        if "relcomp" in r:
            g["relcomp, paper's method"] = r["relcomp"]["mean"]
        else:
            g["relcomp, paper's method"] = (r.get(losses[0]) or {}).get("mean")
            g.update({f"relcomp, {loss} loss": (r.get(loss) or {}).get("mean") for loss in losses[1:]})
        groups[r["row"]] = {k: v for k, v in g.items() if v is not None}
    return groups


def _budget_text(results: dict) -> str:
    b = results["budgets"]
    sizes = b["sizes"]
    per = ", ".join(f"{b['relational_samples'] / parse_count(s):g} epochs of {s}" for s in sizes)
    data = f" Data subsets: {b['data']}." if b["data"] else ""
    return (f"Supervised: {b['supervised_epochs']} epochs of 50k images, batch 64. Each relational run: "
            f"{format_count(b['relational_samples'])} pairs ({per}), batch 128. Adam, lr 1e-3, weight decay 1e-4; "
            f"the best val checkpoint is evaluated. Few-shot: {b['fewshot_draws']} random draws of k images per class "
            f"for k in {b['fewshot_shots']}. Seeds: {len(results['seeds'])}.{data}")


def time_text(results: dict) -> str:
    return (f"{results['wall_time_s'] or 0:.0f} s wall time for this invocation; "
            f"{results['train_time_s_total']:.0f} s of training summed over all runs (including runs reused from the cache)")


NOTES = [
    "Figures are numbered as in the paper. Its Figures 1 and 3 are drawings of the architectures, which "
    "relcomp's code states exactly (src/relcomp/models.py); they are not redrawn here.",
    "The paper's weak model fed a probability into a loss that expects logits (`BCEWithLogits` on P(A > B): "
    "a double sigmoid). The `paper-code` column reproduces that bug; the `symmetric` column is relcomp's "
    "default, -[z log P(A > B) + (1 - z) log P(A < B)] computed in log space.",
    "A row `500k set, ≤150k distinct seen` trains on a larger set for the same number of pairs seen: it sees at "
    "most that many distinct pairs, so it is not a larger-data condition.",
    "Spearman rho: the sign of a principal component is arbitrary, so the projection is oriented to make rho "
    "positive and |rho| is reported (mean ± std over seeds); the ordering is seed 0's, the digits by the median "
    "of the oriented projection.",
    "Few-shot cells are the mean ± standard deviation over the random draws of the labelled images, pooled over "
    "seeds; the paper reports a single draw. Other cells: mean ± standard deviation over seeds.",
]


def markdown(results: dict, figure_dir: str = "figures") -> str:
    """The README block of a results file: provenance, budgets, the three tables, rho, the chart."""
    m, name = results["machine"], results["profile"]
    lines = [f"`{results.get('command')}`, relcomp {results.get('relcomp')}, {results.get('date')}; {m['cpu']}, "
             f"{m['cores']} cores" + (f", GPU {m['gpu']}" if m["gpu"] else "") + f", torch {m['torch']}. "
             f"Seeds {results['seeds']}. {_budget_text(results)} Time: {time_text(results)}.", ""]
    for title, header, rows in table_rows(results):
        lines += [f"**{title}**", ""] + md_table(header, rows) + [""]
    lines += ["**Ordinal structure** (PC1 of the 128-d test embeddings, |Spearman rho|; the paper's rho only "
              "beside the model it was measured on)", "",
              *md_table(["model", "abs. Spearman rho", "ordering (seed 0)", "paper rho"],
                        [[key, fmt_rho(o["rho"]), o["ordering"], fmt_rho(o["paper_rho"]) if o.get("paper_rho") else "—"]
                         for key, o in results["ordinal"].items()]), ""]
    lines += [f"![Table 3 as a chart]({figure_dir}/{name}-classification.png)"]
    return "\n".join(lines)


def figures(results: dict, fig_dir: Path) -> dict[str, str]:
    """The chart of Table 3, drawn from the results file's numbers."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    name = f"{results['profile']}-classification.png"
    plot_bars(classification_groups(results), fig_dir / name, "Classification test accuracy: paper vs relcomp",
              "accuracy (%)")
    return {name: "Table 3 as a chart: the paper's numbers beside relcomp's."}


def render_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# relcomp reproduction: profile `{results['profile']}`", "",
             f"{results.get('description', '')}", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m["gpu"] else "") +
             f"; torch {m['torch']}, Python {m['python']}",
             f"- Time: {time_text(results)}",
             f"- Budgets: {_budget_text(results)}", ""]
    for title, header, rows in table_rows(results):
        lines += [f"## {title}", ""] + md_table(header, rows) + [""]
    lines += ["## Ordinal structure (PC1 of the test embeddings)", "",
              "| model | abs. Spearman rho | discovered ordering | paper rho | paper ordering |", "|---|---|---|---|---|"]
    for key, o in results["ordinal"].items():
        pr = "—" if o.get("paper_rho") is None else f"{o['paper_rho']:.3f}"
        lines.append(f"| {key} | {fmt_rho(o['rho'])} | {o['ordering']} | {pr} | {o.get('paper_ordering') or '—'} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES] + ["", "## Figures", ""] + md_figures(results["figures"])
    return "\n".join(md_contents(lines))


def render_html(results: dict, out: Path) -> str:
    """A self-contained page: the tables and every figure embedded as base64 PNG."""
    esc = html.escape
    m = results["machine"]
    parts = html_head(f"relcomp reproduction: {results['profile']}") + [
             f"<h1>relcomp reproduction: profile <code>{esc(results['profile'])}</code></h1>",
             f"<p>{esc(results.get('description', ''))}</p><ul>",
             f"<li>Machine: {esc(m['cpu'])}, {m['cores']} cores{', GPU ' + esc(m['gpu']) if m['gpu'] else ''}; "
             f"torch {esc(m['torch'])}, Python {esc(m['python'])}</li>",
             f"<li>Time: {esc(time_text(results))}</li><li>Budgets: {esc(_budget_text(results))}</li></ul>"]
    for title, header, rows in table_rows(results):
        parts.append(f"<h2>{esc(title)}</h2>" + html_table(header, rows))
    parts.append("<h2>Ordinal structure (PC1 of the test embeddings)</h2><table><tr><th>model</th><th>|rho|</th>"
                 "<th>discovered ordering</th><th>paper rho</th><th>paper ordering</th></tr>")
    for key, o in results["ordinal"].items():
        pr = "—" if o.get("paper_rho") is None else f"{o['paper_rho']:.3f}"
        parts.append(f"<tr><td>{esc(key)}</td><td>{fmt_rho(o['rho'])}</td><td>{esc(o['ordering'])}</td><td>{pr}</td>"
                     f"<td>{esc(o.get('paper_ordering') or '—')}</td></tr>")
    parts.append("</table><h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in NOTES) + "</ul><h2>Figures</h2>")
    parts += html_figures(results["figures"], out)
    parts.append("</body></html>")
    return "\n".join(html_contents(parts, results["figures"]))
