"""The report's figures read at page width (#30): whole-epoch ticks, a few-shot confusion matrix of
the mean draw, Figure 7 in rows with labels of a readable size, and a table of contents."""
import numpy as np
import pytest

import relcomp.plots as plots
from relcomp.lab.common import html_contents, md_contents


@pytest.fixture
def drawn(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, crop=True: figs.append(fig))
    return figs


def test_two_epochs_get_whole_epoch_ticks(drawn):
    rows = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.9, "val_cls_acc": 0.95} for e in (1, 2)]
    plots.plot_curves(rows, "unused.png")
    for ax in drawn[0].axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_a_pooled_confusion_matrix_shows_the_mean_draw(drawn):
    cm = np.diag([1116.0] * 10) * 10     # 10 draws pooled: each cell ten times a draw's count
    plots.plot_confusion(cm, "unused.png", "3-shot", draws=10)
    ax = drawn[0].axes[0]
    cells = [t.get_text() for t in ax.texts]
    assert "1116" in cells and "11160" not in cells
    assert "the mean of 10 draws" in ax.get_title() and "accuracy 100.00%" in ax.get_title()


def test_figure_7_is_one_row_a_model_with_readable_labels(drawn):
    rng = np.random.default_rng(0)
    panel = {"title": "weak", "tsne": rng.normal(size=(200, 2)), "labels": np.arange(200) % 10,
             "pc1": rng.normal(size=200), "pc1_labels": np.arange(200) % 10, "rho": 0.9,
             "ordering": "0 < 1 < 2 < 3 < 4 < 5 < 6 < 7 < 8 < 9"}
    plots.plot_embeddings([panel] * 4, "unused.png")
    fig = drawn[0]
    assert fig.get_size_inches()[0] == 10 and len(fig.axes) == 8   # 4 rows of 2, 10 in wide
    # at the page's 1,100 px (110 px an inch at this width), 12-pt titles are about 18 px high
    assert min(ax.title.get_fontsize() for ax in fig.axes) >= 11
    assert "|rho| = 0.900" in fig.axes[1].get_title() and panel["ordering"] in fig.axes[1].get_title()


def test_reports_open_with_a_table_of_contents():
    parts = ["<h1>r</h1><ul><li>x</li></ul>", "<h2>Table 2: relational</h2><table></table>", "<h2>Figures</h2>",
             "<figure id='fig-1'></figure>"]
    page = "".join(html_contents(parts, {"a.png": "Figure 2. Loss and accuracy.", "b.png": "Figure 7. t-SNE."}))
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert page.index("<nav>") < page.index("<h2 id='sec-1'>Table 2: relational</h2>")
    assert "href='#sec-2'>Figures" in nav and "href='#fig-2'>Figure 7</a>" in nav
    md = md_contents(["# r", "", "## Table 2: relational (%)", "", "## Notes"])
    assert md[2:6] == ["## Contents", "", "- [Table 2: relational (%)](#table-2-relational-)", "- [Notes](#notes)"]


def test_report_and_run_files_get_the_usual_mode(tmp_path):
    """Files written atomically (reports, results, run files) get what open() would give them
    under the umask (0644 under 022), not mkstemp's owner-only 0600."""
    import os

    from relcomp.utils import write_json_atomic, write_text_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    write_json_atomic(tmp_path / "results.json", {"a": 1})
    write_text_atomic(tmp_path / "report.md", "# r\n")
    for name in ("results.json", "report.md"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
