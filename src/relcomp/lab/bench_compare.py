"""``relcomp bench --compare``: two bench results side by side, each figure's change beside the
change of the machine's own speed when it was taken.

A shared VM's speed moves over minutes (a bf16 matmul peak 12.5% apart between two benches back
to back, and every training figure faster in the second). The bench samples that speed, a matmul
peak outside relcomp's code, beside everything it times (``speed_probes``); a figure that moved
with the machine moves no more once divided by the machine's change, a figure that moved on its
own (a slower relcomp) still does.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

TOLERANCE = 0.10
NEEDED = ("pairs_per_s", "speedup_vs_naive", "mfu", "matmul_gflops_fp32", "precision", "quick", "targets")


def read_bench(path: str | os.PathLike) -> dict[str, Any]:
    """A results file of ``relcomp bench --out`` (or ``--json``).

    Raises: DataError: unreadable, or not a bench's results."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable bench results file ({e})") from None
    if not isinstance(r, dict) or r.get("kind") != "bench":
        raise DataError(f"{path}: not the results of relcomp bench (no \"kind\": \"bench\")")
    missing = [k for k in NEEDED if k not in r]
    if missing:
        raise DataError(f"{path}: a bench results file without {', '.join(missing)}")
    try:  # every figure and speed sample read once, so a malformed one fails here in one line
        for f in figures(r, r):
            if f.dtype:
                speed(r, f.dtype, f.phase or "")
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as e:
        raise DataError(f"{path}: a malformed bench results file ({type(e).__name__}: {e})") from None
    return r


def probes(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The machine's speed samples of a results file; files written before ``speed_probes`` have
    the throughput phase's (after every round) and, before those, the start's peak alone."""
    if r.get("speed_probes"):
        return r["speed_probes"]
    rows = [{"phase": "throughput", **{k: v[i] for k, v in r["peak_gflops_samples"].items()}}
            for i in range(len(r["peak_gflops_samples"].get("fp32", [])))] if r.get("peak_gflops_samples") else []
    return rows or [{"phase": "start", "fp32": r["matmul_gflops_fp32"], "bf16": r.get("matmul_gflops_bf16")}]


def speed(r: dict[str, Any], dtype: str, phase: str) -> float | None:
    """The median matmul peak (GFLOP/s) in ``dtype`` over the samples of ``phase``
    ("throughput:weak": the weak model's windows), or where the file has none, of its kind
    ("throughput"), or of the whole bench."""
    rows = [(str(p.get("phase")), p[dtype]) for p in probes(r) if p.get(dtype)]
    exact = [v for name, v in rows if name == phase]
    kind = [v for name, v in rows if name.split(":")[0] == phase.split(":")[0]]
    values = exact or kind or [v for _, v in rows]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Figure:
    name: str
    old: float
    new: float
    kind: str                  # "rate" (faster machine: higher), "time" (lower), "fixed" (machine-free), "speed"
    dtype: str | None = None   # the matmul peak that stands for the machine's speed for it
    phase: str | None = None


def figures(old: dict[str, Any], new: dict[str, Any]) -> list[Figure]:
    """Every numeric figure both files have, with how it moves with the machine."""
    prec = new["precision"]
    out: list[Figure] = []

    def add(name: str, a: Any, b: Any, kind: str, dtype: str | None = None, phase: str | None = None) -> None:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b:
            out.append(Figure(name, float(a), float(b), kind, dtype, phase))

    for dtype in ("fp32", "bf16"):
        add(f"matmul peak {dtype} (GFLOP/s)", old.get(f"matmul_gflops_{dtype}"), new.get(f"matmul_gflops_{dtype}"), "speed")
    for model, paths in new["pairs_per_s"].items():
        for path, value in paths.items():
            dtype = "fp32" if path in ("naive", "gather_fp32") else prec
            add(f"{model} {path} (pairs/s)", old["pairs_per_s"].get(model, {}).get(path), value, "rate", dtype,
                f"throughput:{model}")
        for path, value in new.get("ablations", {}).get(model, {}).items():
            add(f"{model} ablation {path} (pairs/s)", old.get("ablations", {}).get(model, {}).get(path), value, "rate",
                prec, f"throughput:{model}")
        add(f"{model} speedup over naive", old["speedup_vs_naive"].get(model), new["speedup_vs_naive"][model], "fixed")
        add(f"{model} MFU", old["mfu"].get(model), new["mfu"][model], "fixed")
    add("class-balance term's cost (x)", old.get("unlabeled_slowdown"), new.get("unlabeled_slowdown"), "fixed")
    add("5M pair store (bytes)", old.get("pair_store_bytes_5m"), new.get("pair_store_bytes_5m"), "fixed")
    add("5M pairs sampled (s)", old.get("pair_gen_5m_s"), new.get("pair_gen_5m_s"), "fixed")  # memory, not matmul
    add("suggest 1,000 (s)", old.get("suggest_1000_s"), new.get("suggest_1000_s"), "time", prec, "start")
    for key, label in (("time_to_98_weak", "weak to 98% val (s)"), ("time_to_97_siamese_1shot", "Siamese to 97% 1-shot (s)")):
        a, b = old.get(key, {}), new.get(key, {})
        if a.get("reached") and b.get("reached"):
            add(label, a["time_s"], b["time_s"], "time", prec, "time_to_accuracy")
        elif not a.get("reached") and not b.get("reached"):  # the runs to the same cap
            add(label.replace(" (s)", ", run to its cap (s)"), a.get("train_time_s"), b.get("train_time_s"), "time", prec,
                "time_to_accuracy")
    return out


def apart(a: float, b: float) -> float:
    """How far apart two figures are: |a - b| / max(a, b) (symmetric, so the order does not matter)."""
    return abs(a - b) / max(abs(a), abs(b))


def compare(old: dict[str, Any], new: dict[str, Any], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Each figure's change, the machine's change beside it, and the change at equal machine speed;
    a figure ``moved`` when it is more than ``tolerance`` apart even at equal speed."""
    if old["quick"] != new["quick"]:
        raise DataError("one bench ran with --quick and the other did not: their figures do not compare")
    rows = []
    for f in figures(old, new):
        s_old, s_new = (speed(old, f.dtype, f.phase), speed(new, f.dtype, f.phase)) if f.dtype else (None, None)
        machine = s_new / s_old if s_old and s_new else None
        if f.kind == "rate" and machine:
            adjusted = f.new / machine
        elif f.kind == "time" and machine:
            adjusted = f.new * machine
        else:
            adjusted = f.new
        raw, at_speed = apart(f.old, f.new), apart(f.old, adjusted)
        verdict = ("agree" if raw <= tolerance else "the machine" if f.kind == "speed"
                   else "with the machine" if at_speed <= tolerance else "MOVED")
        rows.append({"figure": f.name, "old": f.old, "new": f.new, "apart": round(raw, 4),
                     "machine": None if machine is None else round(machine - 1, 4),
                     "apart_at_equal_speed": None if f.kind in ("fixed", "speed") else round(at_speed, 4),
                     "verdict": verdict})
    moved = [r["figure"] for r in rows if r["verdict"] == "MOVED"]
    notes = [] if old["precision"] == new["precision"] else [
        f"the benches trained in {old['precision']} and {new['precision']} (a CPU with and one without native bf16): "
        "their fast paths, MFU and training times measure different arithmetic"]
    notes += [f"{key}: reached its target in the {'new' if new[key].get('reached') else 'old'} bench only (not compared)"
              for key in ("time_to_98_weak", "time_to_97_siamese_1shot")
              if isinstance(old.get(key), dict) and isinstance(new.get(key), dict)
              and bool(old[key].get("reached")) != bool(new[key].get("reached"))]
    return {"kind": "bench-compare", "tolerance": tolerance, "rows": rows, "moved": moved, "notes": notes,
            "largest_apart": max((r["apart"] for r in rows), default=0.0),
            "old": provenance(old), "new": provenance(new)}


def provenance(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("command", "relcomp", "commit", "date", "wall_time_s", "precision")}


def format_compare(c: dict[str, Any]) -> str:
    """The comparison as a table: apart = |old - new| / max; machine = the matmul peak's change
    beside the figure (new / old - 1); at equal speed = apart once the figure is divided by it."""
    tol = f"{c['tolerance']:.0%}"
    lines = [f"{side}: {c[side].get('command')} at {(c[side].get('commit') or '?')[:7]}, {c[side].get('date')}, "
             f"{c[side].get('wall_time_s') or 0:.0f} s" for side in ("old", "new")]
    lines.append(f"{'figure':<44} {'old':>10} {'new':>10} {'apart':>6} {'machine':>8} {'at equal speed':>14}  verdict")
    for r in c["rows"]:
        machine = "" if r["machine"] is None else f"{r['machine']:+.1%}"
        eq = "" if r["apart_at_equal_speed"] is None else f"{r['apart_at_equal_speed']:.1%}"
        lines.append(f"{r['figure']:<44} {r['old']:>10.4g} {r['new']:>10.4g} {r['apart']:>6.1%} {machine:>8} {eq:>14}  "
                     f"{r['verdict']}")
    lines += [f"note: {note}" for note in c.get("notes", [])]
    over = sum(r["apart"] > c["tolerance"] for r in c["rows"])
    lines.append(f"{len(c['rows'])} figures; {over} more than {tol} apart; largest {c['largest_apart']:.1%}; "
                 + (f"moved beyond the machine's speed (a hint: the matmul tracks training only roughly): "
                    f"{', '.join(c['moved'])}" if c["moved"]
                    else f"none more than {tol} apart at equal machine speed"))
    return "\n".join(lines)


def markdown(c: dict[str, Any], figure_dir: str = "figures") -> str:
    """The README/doc block of a committed comparison: its command and the table whole."""
    return "\n".join([f"`{c.get('command', 'relcomp bench --compare')}`; its output, whole:", "", "```",
                      format_compare(c), "```"])
