"""The lab's commands: ``reproduce``, ``report`` and ``bench``."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lab.bench import run_bench
from ..lab.bench_compare import TOLERANCE, compare, format_compare, read_bench
from ..lab.bench_report import format_bench
from ..lab.common import machine_info, provenance
from ..lab.report import render, update_readme
from ..lab.reproduce import beside_reference, format_console, profile_names, reproduce, time_text
from ..utils import parse_count, write_json_atomic
from .common import (
    add_data_dir,
    add_device,
    count_arg,
)
from .parser import subcommand


def add_reproduce_parser(sub) -> None:
    p = subcommand(sub, "reproduce", None,
             "Train every model of the paper (supervised; Siamese and weak at each pair-set size; the weak model with "
             "the paper's original loss and with relcomp's default, symmetric), evaluate on the test split, run few-shot transfer "
             "and the ordinal analysis, and write results.json, report.md, report.html and figures/. Finished runs "
             "whose config matches are reused; interrupted ones continue.")
    p.add_argument("--profile", default="quick", help=f"named profile ({', '.join(profile_names())}) or a .toml file")
    p.add_argument("--out", default=None, help="output folder (default: runs/reproduce-<profile>)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every model with this many seeds; report mean ± std (default: the profile's, or 1)")
    p.add_argument("--samples", type=count_arg, default=None, help="override: pairs seen by every relational run")
    p.add_argument("--sizes", default=None, help="override: comma-separated pair-set sizes (e.g. 50k,500k)")
    p.add_argument("--supervised-epochs", type=float, default=None, help="override: supervised epochs")
    p.add_argument("--draws", type=int, default=None, help="override: few-shot draws")
    p.add_argument("--flip-rate", type=float, default=None,
                   help="override (active profiles): share of the simulated annotator's answers flipped")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train up to N of the study's independent runs at once, each in its own process: on CUDA "
                        "they share the GPU, on a CPU they share the cores out; the same numbers for any N "
                        "(default: 1; the paper's study uses it, the others train in turn)")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="CPU threads of each run (default: the cores shared out among the jobs); on a CPU the "
                        "thread count moves float sums in the last digits, so compare runs at equal T")
    add_device(p)
    add_data_dir(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_report_parser(sub) -> None:
    p = subcommand(sub, "report", None,
             "Print a committed results file (docs/results/*.json, written by relcomp reproduce) as markdown, and "
             "draw its figures from its numbers with --figures DIR. With --readme FILE, rewrite every block of FILE "
             "between '<!-- relcomp report RESULTS [figures=DIR] -->' and '<!-- end relcomp report -->' from its "
             "results file; with --check, only say (exit 1) which blocks differ.")
    p.add_argument("results", nargs="?", metavar="RESULTS_JSON", help="a results file")
    p.add_argument("--figures", default=None, metavar="DIR", help="draw the figures into DIR (and link them there)")
    p.add_argument("--readme", default=None, metavar="FILE", help="regenerate the blocks of this markdown file")
    p.add_argument("--check", action="store_true", help="with --readme: change nothing; exit 1 if a block is stale")


def add_bench_parser(sub) -> None:
    p = subcommand(sub, "bench", None,
             "Measure on this machine: matmul peak (fp32, bf16); training pairs/s of the Siamese and weak models on a "
             "naive path (as the paper's original code) and on relcomp's fast path; model FLOP utilisation; the 5M "
             "pair store's size; and the training time until the weak model reaches 98% val classification and the "
             "Siamese 1-shot mean 97%. Takes a few minutes (--quick: seconds, small numbers that mean little).")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="few steps and tiny caps (a smoke test of the bench)")
    p.add_argument("--ablations", action="store_true", help="also time the fast path's variants that were tried and "
                   "not kept: torch.compile, batch 256, max-pooling as reshape + amax")
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON to FILE (what `relcomp report` reads; "
                   "docs/results/bench.json is one)")
    p.add_argument("--compare", nargs="+", metavar="FILE", help="OLD [NEW]: set the figures of this bench (or of the "
                   "results file NEW, then no bench runs) beside those of OLD, each with the machine's own speed "
                   "(a matmul peak sampled beside it) and the change left at equal speed; exits 1 when a figure is "
                   "more than --tolerance apart even at equal machine speed (a hint: the matmul tracks training "
                   "only roughly). With --json: the comparison as JSON")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="F",
                   help=f"with --compare: how far apart two figures may be, |a - b| / max (default {TOLERANCE:g})")
    add_data_dir(p)


def cmd_reproduce(args) -> int:
    overrides: dict[str, Any] = {}
    if args.samples:
        overrides["relational.samples"] = args.samples
    if args.sizes:
        overrides["relational.sizes"] = [s.strip() for s in args.sizes.split(",") if s.strip()]
        for s in overrides["relational.sizes"]:
            parse_count(s)
    if args.supervised_epochs:
        overrides["supervised.epochs"] = args.supervised_epochs
    if args.draws:
        overrides["fewshot.draws"] = args.draws
    if args.flip_rate is not None:
        overrides["flip_rate"] = args.flip_rate
    results = reproduce(args.profile, args.out, args.seeds, args.device, args.data_dir, overrides,
                        progress=not args.quiet, jobs=args.jobs, threads=args.threads)
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{results['profile']}"
    print(results["console"] if "console" in results else format_console(results))
    reference = beside_reference(results)
    if reference:
        print("\n" + reference)
    print(f"\n{time_text(results)}\nreport: {out / 'report.html'} (and report.md, results.json)")
    return 0


def cmd_report(args) -> int:
    if (args.results is None) == (args.readme is None):
        raise ConfigError("give a results file, or --readme FILE")
    if args.readme is None:
        figs = Path(args.figures) if args.figures else None
        print(render(args.results, args.figures or "figures", figs))
        return 0
    stale = update_readme(args.readme, check=args.check)
    if args.check and stale:
        print(f"relcomp: {args.readme}: stale blocks for {', '.join(stale)}; run relcomp report --readme "
              f"{args.readme}", file=sys.stderr)
        return 1
    print(f"{args.readme}: {'up to date' if not stale else 'regenerated ' + ', '.join(stale)}")
    return 0


def cmd_bench(args) -> int:
    if args.compare is not None:
        if len(args.compare) > 2:
            raise ConfigError("--compare takes OLD or OLD NEW (two results files at most)")
        if not 0 < args.tolerance < 1:
            raise ConfigError(f"--tolerance must be between 0 and 1, not {args.tolerance:g}")
        old = read_bench(args.compare[0])  # read before a bench of minutes, not after
        new = read_bench(args.compare[1]) if len(args.compare) == 2 else None
        if new is not None:
            return show_compare(old, new, args)
        if old["quick"] != args.quick:  # said now, not after minutes of a bench that cannot compare
            raise ConfigError(f"{args.compare[0]} is {'a --quick' if old['quick'] else 'a full'} bench; "
                              f"{'add' if old['quick'] else 'leave out'} --quick to compare with it")
    t0 = time.perf_counter()
    r = run_bench(quick=args.quick, data_dir=args.data_dir, ablations=args.ablations,
                  log=lambda m: print(f"relcomp bench: {m}", file=sys.stderr, flush=True))
    command = "relcomp bench" + " --quick" * args.quick + " --ablations" * args.ablations
    r.update(provenance({"command": command}), machine=machine_info(), wall_time_s=round(time.perf_counter() - t0, 1))
    if args.out:
        write_json_atomic(args.out, r)
    if args.compare is not None:
        print(format_bench(r) + "\n")
        return show_compare(old, r, args)
    print(json.dumps(r) if args.json else format_bench(r))
    return 0


def show_compare(old: dict, new: dict, args) -> int:
    c = compare(old, new, args.tolerance)
    c["command"] = " ".join(["relcomp bench", *(["--ablations"] if args.ablations and len(args.compare) == 1 else []),
                             "--compare", *args.compare,
                             *([f"--tolerance {args.tolerance:g}"] if args.tolerance != TOLERANCE else [])])
    print(json.dumps(c) if args.json else format_compare(c))
    return 1 if c["moved"] else 0
