"""A user's pairwise judgements (CSV, or Parquet with pyarrow) and labels, validated before use.

A comparisons file has one judgement per row: columns ``a`` and ``b`` name two items (file names
relative to the image folder, or row indices into a ``.npy`` array) and ``outcome`` says which is
greater: ``1`` / ``>`` / ``a`` for A > B, ``0`` / ``<`` / ``b`` for A < B, ``=`` / ``tie`` for a
tie (outcome code 2, as the ``ge`` relation codes it; ``--relation gt`` drops ties). Optional columns:
``annotator`` (who judged; counted in the report) and ``weight`` (a non-negative number that
multiplies that judgement's loss).

Validation reads the whole file before any training and reports, rather than raises on, the
first problem: every error names the file, the line and the value, and the report also counts
duplicate judgements, contradicting judgements on the same pair and items never compared.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..schema import clip
from .images import ImageSet
from .pairs import Pairs, pair_keys
from .tables import cell_text, read_rows

GREATER = {"1", "1.0", "true", ">", "a"}
LESS = {"0", "0.0", "false", "<", "b"}
TIE = {"=", "tie", "equal"}
CONTRADICTIONS = ("keep", "drop", "majority")
MAX_LISTED = 20
MAX_LABEL = 999       # labels are class numbers 0 .. K-1 of a few hundred ordered classes at most
MAX_WEIGHT = 1e6      # weights are relative; a larger one would overflow the float32 loss


class ValidationError(DataError):
    """An input file failed validation; ``report`` holds every problem found."""

    def __init__(self, report: ValidationReport):
        n = len(report.errors)
        more = f"; the first of {n} (`relcomp data check` lists them all)" if n > 1 else ""
        super().__init__(f"{report.errors[0] if n else report.file}{more}")
        self.report = report


@dataclass
class ValidationReport:
    """Errors (fatal), warnings (reported, not fatal) and counts for one input file."""

    file: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{self.file}:{where}: {message}")

    def text(self) -> str:
        lines = []
        if self.errors:
            lines.append(f"{self.file}: {len(self.errors)} error(s)")
            lines += [f"  {e}" for e in self.errors[:MAX_LISTED]]
            if len(self.errors) > MAX_LISTED:
                lines.append(f"  ... and {len(self.errors) - MAX_LISTED} more")
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.stats and not self.errors:
            lines.insert(0, f"{self.file}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}"
                                                         for k, v in self.stats.items() if isinstance(v, int)))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "errors": self.errors, "warnings": self.warnings, "stats": self.stats}

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ValidationError(self)


@dataclass(frozen=True)
class Comparisons:
    """Validated judgements as item rows: ``z = 1`` where item ``a`` is greater than item ``b``,
    0 where it is less, 2 for a tie."""

    a: np.ndarray
    b: np.ndarray
    z: np.ndarray
    w: np.ndarray
    annotator: list[str] | None
    report: ValidationReport
    n_items: int

    def __len__(self) -> int:
        return len(self.z)

    def pair_keys(self) -> np.ndarray:
        """One int64 per unordered pair of items (the same for (a, b) and (b, a))."""
        return pair_keys(self.a, self.b, self.n_items)

    def pairs(self, rows: np.ndarray | None = None, meta: dict | None = None) -> Pairs:
        """The judgements (or the given ``rows``) as a :class:`Pairs` set indexing the image set."""
        rows = np.arange(len(self)) if rows is None else rows
        w = self.w[rows]
        meta = dict(meta or {}, n=len(rows), split_size=self.n_items)
        ann = None
        if self.annotator is not None:
            names, who = np.unique(np.asarray(self.annotator, dtype=str), return_inverse=True)
            meta["annotators"] = [str(x) for x in names]  # every annotator of the file, so train and val agree
            ann = who[rows].astype(np.int32)
        return Pairs(self.a[rows], self.b[rows], self.z[rows], meta, w=None if np.all(w == 1) else w, annotator=ann)

    def without_ties(self) -> Comparisons:
        """The judgements that say which item is greater (``--relation gt``); the report says how
        many ties were dropped."""
        keep = self.z != 2
        if keep.all():
            return self
        self.report.warnings.append(f"{int((~keep).sum())} tie judgement(s) dropped: --relation gt learns which item "
                                    "is greater; --relation ge trains on ties too")
        self.report.stats["ties_dropped"] = int((~keep).sum())
        ann = [x for x, k in zip(self.annotator, keep) if k] if self.annotator is not None else None
        return Comparisons(self.a[keep], self.b[keep], self.z[keep], self.w[keep], ann, self.report, self.n_items)

    def split(self, val_fraction: float, seed: int) -> tuple[Pairs, Pairs]:
        """(train, val) pair sets; every judgement of one pair of items falls on the same side, so
        no val pair is also a train pair. About ``val_fraction`` of the distinct pairs are held out.

        Raises:
            DataError: too few distinct pairs to hold any out.
        """
        if not 0 < val_fraction < 1:
            raise DataError(f"val fraction must be in (0, 1), got {val_fraction}")
        groups, inverse = np.unique(self.pair_keys(), return_inverse=True)
        n_val = int(round(val_fraction * len(groups)))
        if len(groups) < 2 or n_val < 1 or n_val >= len(groups):
            raise DataError(f"{self.report.file}: {len(groups)} distinct pair(s) cannot be split into train and "
                            f"val at val fraction {val_fraction}; collect more comparisons or change --val-fraction")
        held = np.zeros(len(groups), bool)
        held[np.random.default_rng(seed).permutation(len(groups))[:n_val]] = True
        is_val = held[inverse]
        meta = {"source": self.report.file, "val_fraction": val_fraction, "seed": seed}
        return (self.pairs(np.flatnonzero(~is_val), dict(meta, split="train")),
                self.pairs(np.flatnonzero(is_val), dict(meta, split="val")))


def _parse_item(raw: Any, index: dict[str, int]) -> int | None:
    key = cell_text(raw)
    if key in index:
        return index[key]
    if key.startswith("./") and key[2:] in index:
        return index[key[2:]]
    return None


def parse_judgement(where: str, row: dict, index: dict[str, int], source: str, has_weight: bool,
                    report: ValidationReport) -> tuple[int, int, int, float] | None:
    """One row as (a, b, outcome code, weight), or None after reporting every problem it has."""
    if "__error__" in row:
        report.error(where, row["__error__"])
        return None
    ok = True
    ia, ib = _parse_item(row["a"], index), _parse_item(row["b"], index)
    for col, i in (("a", ia), ("b", ib)):
        if i is None:
            report.error(where, f"column {col}: unknown item {cell_text(row[col])!r} (not in {source})")
            ok = False
    if ok and ia == ib:
        report.error(where, f"self-comparison: a and b are both {cell_text(row['a'])!r}")
        ok = False
    o = cell_text(row["outcome"]).lower()
    if o not in GREATER and o not in LESS and o not in TIE:
        report.error(where, f"column outcome: unknown value {cell_text(row['outcome'])!r} "
                     "(use 1/0, >/< or a/b for which item is greater, = or tie for a tie)")
        ok = False
    w = 1.0
    if has_weight:
        try:
            w = float(cell_text(row["weight"]))
            if not (math.isfinite(w) and 0 <= w <= MAX_WEIGHT):
                raise ValueError
        except ValueError:
            report.error(where, f"column weight: {cell_text(row['weight'])!r} is not a number from 0 to {MAX_WEIGHT:g} "
                         "(weights are relative: 1 is one ordinary judgement)")
            ok = False
    return (ia, ib, 1 if o in GREATER else 0 if o in LESS else 2, w) if ok else None


def load_comparisons(path: str | os.PathLike, items: ImageSet, contradictions: str = "keep") -> Comparisons:
    """Read and validate a comparisons file against the image set it refers to.

    ``contradictions``: what to do with pairs judged differently: ``keep`` every judgement (the loss
    sees the disagreement), ``drop`` every judgement of such pairs, or keep the ``majority``
    outcome (pairs with a tie are dropped).

    Raises:
        ValidationError: with a report naming the file, line and value of every error.
        DataError: a missing or unreadable file, or missing columns.
    """
    if contradictions not in CONTRADICTIONS:
        raise DataError(f"unknown contradictions policy {contradictions!r}; choose from {', '.join(CONTRADICTIONS)}")
    path = Path(path)
    cols, rows = read_rows(path, ("a", "b", "outcome"))
    report = ValidationReport(str(path))
    index = items.index()
    has_w, has_ann = "weight" in cols, "annotator" in cols
    parsed, ann_l, n_rows = [], [], 0
    for where, row in rows:
        n_rows += 1
        judgement = parse_judgement(where, row, index, items.source, has_w, report)
        if judgement is not None:
            parsed.append(judgement)
            if has_ann:
                ann_l.append(cell_text(row["annotator"]))
    if n_rows == 0:
        report.error("2", "no comparisons (the file has a header only)")
    report.raise_if_errors()

    a, b, z, w = (np.asarray([p[k] for p in parsed], t) for k, t in
                  enumerate((np.int32, np.int32, np.uint8, np.float32)))
    comps = Comparisons(a, b, z, w, ann_l if has_ann else None, report, len(items))
    keep = _check_pairs(comps, items, contradictions)
    if not keep.all():
        comps = Comparisons(a[keep], b[keep], z[keep], w[keep],
                            [x for x, k in zip(ann_l, keep) if k] if has_ann else None, report, len(items))
    report.stats["comparisons_used"] = len(comps)
    if len(comps) == 0:
        report.error("-", "no comparisons left after dropping contradictions")
        report.raise_if_errors()
    if float(w[keep].sum()) == 0:
        report.error("-", "every weight is 0")
        report.raise_if_errors()
    return comps


def _check_pairs(c: Comparisons, items: ImageSet, policy: str) -> np.ndarray:
    """Count duplicates, contradictions, ties and never-compared items into the report; return
    the mask of rows to keep under ``policy``."""
    r = c.report
    _, inverse, counts = np.unique(c.pair_keys(), return_inverse=True, return_counts=True)
    # Orient every judgement the same way: 1 where the lower-numbered item is the greater one (a tie stays 2).
    o = np.where(c.z == 2, 2, np.where(c.a < c.b, c.z, 1 - c.z)).astype(np.int64)
    votes = np.zeros((len(counts), 3), np.int64)  # per pair: oriented outcomes 0, 1, 2
    np.add.at(votes, (inverse, o), 1)
    contra = (votes > 0).sum(1) > 1
    n_contra_rows = int(counts[contra].sum())
    n_dup = int((counts[~contra] - 1).sum())
    compared = np.zeros(len(items), bool)
    compared[c.a] = compared[c.b] = True
    r.stats.update(rows=len(c), distinct_pairs=len(counts), items=len(items), items_compared=int(compared.sum()),
                   duplicate_judgements=n_dup, contradicting_pairs=int(contra.sum()),
                   contradicting_judgements=n_contra_rows, ties=int((c.z == 2).sum()))
    if n_dup:
        r.warnings.append(f"{n_dup} duplicate judgement(s): the same pair with the same outcome more than once (kept)")
    if contra.any():
        action = {"keep": "kept, each judgement counts",
                  "drop": f"all {n_contra_rows} judgements of these pairs dropped",
                  "majority": "the minority outcomes dropped; pairs without a majority dropped"}[policy]
        r.warnings.append(f"{int(contra.sum())} pair(s) judged differently in {n_contra_rows} judgements ({action}; "
                          "--contradictions keep|drop|majority)")
    never = np.flatnonzero(~compared)
    if len(never):
        shown = ", ".join(items.names[k] for k in never[:5]) + (", ..." if len(never) > 5 else "")
        r.warnings.append(f"{len(never)} item(s) never compared ({shown}): no comparison teaches "
                          "the model about them; the weak model still learns from them as unlabeled images (--unlabeled)")
    if c.annotator is not None:
        _annotator_stats(c, inverse, votes, o)
    if policy == "keep":
        return np.ones(len(c), bool)
    if policy == "drop":
        return ~contra[inverse]
    top = votes.max(1)
    unique_top = (votes == top[:, None]).sum(1) == 1
    majority = np.where(unique_top, votes.argmax(1), -1)
    return ~contra[inverse] | (majority[inverse] == o)


def _annotator_stats(c: Comparisons, inverse: np.ndarray, votes: np.ndarray, o: np.ndarray) -> None:
    """Per annotator: judgements, and agreement with the other judgements of the same pairs."""
    names, who = np.unique(np.asarray(c.annotator, dtype=str), return_inverse=True)
    # Agreement with the others: the share of the *other* judgements of the pair with the same outcome.
    others = votes[inverse].sum(1) - 1
    same = votes[inverse, o] - 1
    has = others > 0
    per = {}
    for k, name in enumerate(names):
        mine = who == k
        shared = mine & has
        agree = float((same[shared] / others[shared]).mean()) if shared.any() else None
        per[str(name)] = {"judgements": int(mine.sum()), "agreement": agree}
    c.report.stats["annotators"] = len(names)
    c.report.stats["per_annotator"] = per


def load_labels(path: str | os.PathLike, items: ImageSet) -> np.ndarray:
    """Labels for some items from a CSV/Parquet file with columns ``item`` and ``label`` (an integer
    class, 0 = the lowest). Returns int64 (N,) with -1 for unlabelled items.

    Raises:
        ValidationError: unknown items, non-integer or negative labels, an item labelled twice differently.
        DataError: a missing or unreadable file, or missing columns.
    """
    path = Path(path)
    _, rows = read_rows(path, ("item", "label"))
    report = ValidationReport(str(path))
    index = items.index()
    labels = np.full(len(items), -1, np.int64)
    for where, row in rows:
        if "__error__" in row:
            report.error(where, row["__error__"])
            continue
        i = _parse_item(row["item"], index)
        raw = cell_text(row["label"])
        y = parse_label(raw)
        if y is None:
            report.error(where, f"column label: {clip(raw)!r} is not a class number from 0 to {MAX_LABEL} "
                         "(labels number ordered classes 0 .. K-1)")
            continue
        if i is None:
            report.error(where, f"column item: unknown item {cell_text(row['item'])!r} (not in {items.source})")
        elif labels[i] not in (-1, y):
            report.error(where, f"item {items.names[i]!r} labelled {y} here but {labels[i]} earlier")
        else:
            labels[i] = y
    if not (labels >= 0).any() and not report.errors:
        report.error("2", "no labels")
    report.raise_if_errors()
    return labels


def largest_label(path: str | os.PathLike) -> int | None:
    """The largest integer in a labels file's ``label`` column (None if there is none), read without
    the images; :func:`load_labels` validates the file in full when the data is loaded.

    Raises:
        DataError: a missing or unreadable file, or missing columns.
    """
    _, rows = read_rows(Path(path), ("item", "label"))
    best = None
    for where, row in rows:
        if "__error__" in row:
            continue
        raw = cell_text(row.get("label"))
        y = parse_label(raw)
        if y is None:  # reported here: the largest label sizes the model before the file is read in full
            raise DataError(f"{path}:{where}: column label: {clip(raw)!r} is not a class number from 0 to "
                            f"{MAX_LABEL} (labels number ordered classes 0 .. K-1)")
        best = y if best is None else max(best, y)
    return best


def parse_label(raw: str) -> int | None:
    """A label cell as a class number 0 .. MAX_LABEL, or None."""
    try:
        y = int(raw)
    except ValueError:
        return None
    return y if 0 <= y <= MAX_LABEL else None

