"""The ``relcomp`` command line. Every subcommand's --help states what it does and its defaults.

Choices and defaults come from the registries and the config dataclasses (:mod:`relcomp.config`),
never retyped here. Errors that relcomp raises on purpose (bad input, missing data, a corrupt
file) and bad arguments are printed as one line starting ``relcomp`` and exit with code 2;
Ctrl-C exits with 130 after saving what can be saved.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import RelcompError
from .annotate import add_annotate_parser, cmd_annotate
from .common import Formatter, Parser
from .lab import add_bench_parser, add_report_parser, add_reproduce_parser, cmd_bench, cmd_report, cmd_reproduce
from .train import add_data_parsers, add_train_parser, cmd_data, cmd_train
from .use import (
    add_embed_parser,
    add_eval_parser,
    add_fewshot_parser,
    add_suggest_parser,
    add_use_parsers,
    cmd_compare,
    cmd_embed,
    cmd_eval,
    cmd_export,
    cmd_fewshot,
    cmd_predict,
    cmd_rank,
    cmd_suggest,
)

COMMANDS = {"data": cmd_data, "train": cmd_train, "eval": cmd_eval, "fewshot": cmd_fewshot,
            "predict": cmd_predict, "compare": cmd_compare, "rank": cmd_rank, "export": cmd_export,
            "embed": cmd_embed, "suggest": cmd_suggest, "annotate": cmd_annotate,
            "reproduce": cmd_reproduce, "report": cmd_report, "bench": cmd_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="relcomp", formatter_class=Formatter, description="Train image classifiers and rankers "
                    "from relational comparisons (\"A > B\") instead of labels.")
    parser.add_argument("--version", action="version", version=f"relcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_data_parsers, add_train_parser, add_fewshot_parser, add_eval_parser, add_use_parsers,
                add_suggest_parser, add_annotate_parser, add_embed_parser, add_reproduce_parser, add_report_parser,
                add_bench_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RelcompError as e:
        say(f"relcomp: error: {e}")
        return 2
    except KeyboardInterrupt as e:
        say(f"relcomp: {str(e) or 'interrupted'}")
        return 130


def say(message: str) -> None:
    """One line on stderr, on a line of its own: open progress bars are cleared first, and a
    message of several lines (a library's text) is joined into one."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()
    print(" ".join(part.strip() for part in message.splitlines() if part.strip()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
