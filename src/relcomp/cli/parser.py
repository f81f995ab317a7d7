"""The parser's parts that need nothing of the library: the parser with one-line errors, the help
formatter, and the commands with their one-line summaries, so that ``relcomp --help``, ``relcomp
--version`` and a mistyped command answer at once (importing the library pulls in torch, about a
second on two cores)."""
from __future__ import annotations

import argparse
import textwrap

from .. import __version__

DESCRIPTION = "Train image classifiers and rankers from relational comparisons (\"A > B\") instead of labels."

# The commands in the order `relcomp --help` lists them, and the one line it shows for each.
SUMMARIES = {
    "data": "fetch and verify MNIST; build the paper's pair sets; check your own data",
    "train": "train a model (supervised, siamese, weak, ranker)",
    "fewshot": "few-shot classification on a run's frozen backbone",
    "eval": "test accuracy (relational and classification) and confusion matrix",
    "predict": "class and class probabilities of images (weak and supervised runs)",
    "compare": "P(A > B) for two images, with an interval",
    "rank": "sort a folder of images by the model's score; CSV and contact sheet",
    "export": "export the best model as safetensors, ONNX or TorchScript",
    "suggest": "write the pairs to have judged next (active learning)",
    "annotate": "judge pairs of images in your browser; with --learn a model learns as you judge",
    "embed": "write feature vectors of MNIST or of your images (for --features)",
    "reproduce": "rerun the paper's whole study (or another profile); write tables, figures, a report",
    "report": "print the tables of a results file; regenerate the README's tables from them",
    "bench": "measure speed, utilisation, memory and time-to-accuracy on this machine",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``relcomp train: error: ... (see `relcomp train --help`)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default where there is one to show (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def subcommand(sub, name: str, help: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand (a top-level one's line from :data:`SUMMARIES` unless ``help`` is given); prose
    paragraphs of its description are wrapped, lists (lines) kept as written."""
    help = help if help is not None else SUMMARIES[name]
    paragraphs = (description or help).split("\n\n")
    text = "\n\n".join(p if "\n" in p else textwrap.fill(p, 100) for p in paragraphs)
    return sub.add_parser(name, help=help, description=text, formatter_class=Formatter)


def top_parser() -> tuple[Parser, argparse._SubParsersAction]:
    """``relcomp`` itself, with ``--version`` and the subcommand slot (no subcommand in it yet)."""
    parser = Parser(prog="relcomp", formatter_class=Formatter, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"relcomp {__version__}")
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def answer_without_a_command(argv: list[str]) -> None:
    """Where ``argv`` names no command (``--help``, ``--version``, nothing, a typo), answer from the
    summaries alone; argparse exits. Returns where a command is named."""
    named = next((a for a in argv if not a.startswith("-")), None)
    if named in SUMMARIES:
        return
    parser, sub = top_parser()
    for name in SUMMARIES:
        subcommand(sub, name)
    parser.parse_args(argv)
