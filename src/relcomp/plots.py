"""Figures (matplotlib, Agg backend): training curves, confusion matrices, t-SNE, PC1 violins."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .utils import atomic_path


class LazyPyplot:
    """``matplotlib.pyplot`` (Agg), imported at the first plot: the import takes about a second,
    which every command (`relcomp --help` too) would otherwise pay."""

    def __getattr__(self, name: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = LazyPyplot()


def _save(fig, path: str | os.PathLike, crop: bool = True) -> None:
    """``crop``: trim to what was drawn (bbox_inches="tight"), which draws the figure twice. The
    per-run plots, a third of a smoke study's time, fit their canvas by a layout engine instead."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, **({"bbox_inches": "tight"} if crop else {}))
    plt.close(fig)


def plot_curves(rows: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy against epochs (the paper's Figure 2)."""
    if not rows:
        return
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax in (ax1, ax2):  # whole epochs: two points must not get ticks at 1.25, 1.5 ...
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.plot(ep, [r["train_loss"] for r in rows], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(ep, [r["train_acc"] for r in rows], "o-", label="train acc")
    for key, label in (("val_rel_acc", "val relational acc"), ("val_cls_acc", "val classification acc")):
        if any(r.get(key) is not None for r in rows):
            ax2.plot(ep, [r.get(key) for r in rows], "o-", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    fig.suptitle(title)
    _save(fig, path)


def plot_confusion(cm: np.ndarray, path: str | os.PathLike, title: str = "", draws: int = 1) -> None:
    """Confusion matrix with counts (rows: true digit, columns: predicted), as the paper's Figures 4-6.
    ``cm`` pooled over ``draws`` draws is shown as their mean draw (counts rounded), so that a cell
    reads as a count of test images, not ten times one."""
    cm = np.asarray(cm, dtype=np.float64) / max(draws, 1)
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="tight")
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > thresh else "black")
    acc = np.trace(cm) / max(cm.sum(), 1e-12)
    mean = f" (the mean of {draws} draws)" if draws > 1 else ""
    ax.set_title(f"{title}\naccuracy {acc:.2%}{mean}", wrap=True)
    _save(fig, path, crop=False)


def plot_reliability(cal: dict, path: str | os.PathLike, title: str = "") -> None:
    """Reliability diagram: observed share against predicted probability per bin (bar width: the
    bin; the diagonal is perfect calibration), with the pairs per bin below."""
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(4.8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]},
                                 layout="tight")
    bins = cal["bins"]
    lo = [b["lo"] for b in bins]
    width = [b["hi"] - b["lo"] for b in bins]
    ax.bar(lo, [b["observed"] for b in bins], width=width, align="edge", edgecolor="k", alpha=0.7, label="observed")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o", color="C3", ms=4,
            label="bin mean prediction")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("observed share" if cal["of"] == "P(z=1)" else "accuracy")
    ax.set_title(f"{title}\nECE of {cal['of']} on {cal['n']:,} pairs: {cal['ece']:.4f}", fontsize=9, wrap=True)
    ax.legend(fontsize=7, loc="upper left")
    axn.bar(lo, [b["n"] for b in bins], width=width, align="edge", edgecolor="k", color="C7")
    axn.set_yscale("log")
    axn.set_ylabel("pairs")
    axn.set_xlabel("predicted P(A > B)" if cal["of"] == "P(z=1)" else "predicted probability of the top outcome")
    _save(fig, path, crop=False)


def plot_embeddings(panels: Sequence[dict], path: str | os.PathLike) -> None:
    """One row per model: the t-SNE of its embeddings with digit centroids labelled, and beside it
    the projection on the first principal component, one violin per digit (the paper's Figure 7).
    Rows, not columns: a page shrinks a figure to its width, and four models side by side left the
    labels 6 px high.

    Each panel: ``{"title", "tsne" (N, 2), "labels" (N,), "pc1" (M,), "pc1_labels" (M,), "rho", "ordering"}``.
    """
    n = len(panels)
    fig, axes = plt.subplots(n, 2, figsize=(10, 4.4 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1.25]})
    cmap = plt.get_cmap("tab10")
    for r, p in enumerate(panels):
        ax = axes[r, 0]
        xy, lab = p["tsne"], p["labels"]
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(v)) for v in lab], s=3, alpha=0.6, linewidths=0)
        for d in np.unique(lab):
            cx, cy = np.median(xy[lab == d], axis=0)
            ax.text(cx, cy, str(int(d)), fontsize=13, weight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="circle,pad=0.2", fc="white", ec=cmap(int(d)), alpha=0.85))
        ax.set_title(f"{p['title']}: t-SNE", fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        ax = axes[r, 1]
        digits = sorted(np.unique(p["pc1_labels"]))
        data = [p["pc1"][p["pc1_labels"] == d] for d in digits]
        parts = ax.violinplot(data, positions=digits, showmedians=True, widths=0.8)
        for d, body in zip(digits, parts["bodies"]):
            body.set_facecolor(cmap(int(d)))
            body.set_alpha(0.7)
        ax.set_xticks(digits)
        ax.tick_params(labelsize=11)
        ax.set_xlabel("digit", fontsize=11)
        ax.set_ylabel("PC1 (oriented)", fontsize=11)
        ax.set_title(f"{p['title']}: PC1, |rho| = {p['rho']:.3f}\n{p['ordering']}", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def plot_bars(groups: dict[str, dict[str, float]], path: str | os.PathLike, title: str, ylabel: str) -> None:
    """Grouped bar chart: ``{group: {series: value}}``."""
    names = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))  # order of first appearance
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4))
    for k, s in enumerate(series):
        xs = [i + k * width for i in range(len(names))]
        vals = [groups[g].get(s, np.nan) for g in names]
        bars = ax.bar(xs, vals, width, label=s)
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_relational_curves(curves: dict[str, Sequence[dict]], path: str | os.PathLike) -> None:
    """Val relational accuracy (and val classification accuracy for the weak model) against pairs seen."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("tab10")
    for k, (name, rows) in enumerate(curves.items()):
        if not rows:
            continue
        # one colour per run in both panels; dotted lines for the paper's original loss
        style = dict(color=cmap(k % 10), marker="o", markersize=3, linestyle=":" if "paper-code" in name else "-")
        x = [r["samples"] for r in rows]
        ax1.plot(x, [r["val_rel_acc"] for r in rows], label=name, **style)
        if any(r.get("val_cls_acc") is not None for r in rows):
            ax2.plot(x, [r["val_cls_acc"] for r in rows], label=name, **style)
    ax1.set_title("val relational accuracy")
    ax2.set_title("val classification accuracy (weak model, no labels used)")
    for ax in (ax1, ax2):
        ax.set_xlabel("pairs seen")
        ax.grid(alpha=0.3)
    # One legend for both panels (a run has one colour in both), below them: it covers no curve.
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(labels) - 1) // 4), 1, 1))
    _save(fig, path)


def plot_lines(panels: Sequence[dict], path: str | os.PathLike, suptitle: str = "") -> None:
    """Side-by-side line charts. Each panel: ``{"title", "xlabel", "ylabel", "logx": bool,
    "series": {name: (xs, ys, yerr or None)}}``; y values in percent."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for name, (xs, ys, err) in p["series"].items():
            ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=3, label=name,
                        linestyle="--" if "without" in name or "linear" in name else "-")
        if p.get("logx"):
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())  # 20, 100, 600: not 2 x 10^1 on every minor tick
            ax.xaxis.set_minor_formatter(NullFormatter())
            if p.get("xticks"):
                ax.set_xticks(p["xticks"])
        ax.set_title(p["title"], fontsize=10)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    _save(fig, path)
