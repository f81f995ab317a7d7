"""The ``relcomp`` command line. Every subcommand's --help states what it does and its defaults.

Choices and defaults come from the registries and the config dataclasses (:mod:`relcomp.config`),
never retyped here. Errors that relcomp raises on purpose (bad input, missing data, a corrupt
file) and bad arguments are printed as one line starting ``relcomp`` and exit with code 2;
Ctrl-C exits with 130 after saving what can be saved.
"""
from __future__ import annotations

import sys
from importlib import import_module

from ..errors import RelcompError
from .parser import answer_without_a_command, top_parser

# command -> (module of this package, function): imported only for the command that runs
COMMANDS = {"data": ("train", "cmd_data"), "train": ("train", "cmd_train"), "eval": ("use", "cmd_eval"),
            "fewshot": ("use", "cmd_fewshot"), "predict": ("use", "cmd_predict"), "compare": ("use", "cmd_compare"),
            "rank": ("use", "cmd_rank"), "export": ("use", "cmd_export"), "embed": ("use", "cmd_embed"),
            "suggest": ("use", "cmd_suggest"), "annotate": ("annotate", "cmd_annotate"),
            "reproduce": ("lab", "cmd_reproduce"), "report": ("lab", "cmd_report"), "bench": ("lab", "cmd_bench")}
# the modules that add each command's parser, in the order of SUMMARIES
ADDERS = (("train", "add_data_parsers"), ("train", "add_train_parser"), ("use", "add_fewshot_parser"),
          ("use", "add_eval_parser"), ("use", "add_use_parsers"), ("use", "add_suggest_parser"),
          ("annotate", "add_annotate_parser"), ("use", "add_embed_parser"), ("lab", "add_reproduce_parser"),
          ("lab", "add_report_parser"), ("lab", "add_bench_parser"))


def command(module: str, name: str):
    return getattr(import_module(f".{module}", __name__), name)


def build_parser():
    """The whole parser: every command with its options (this imports the library)."""
    parser, sub = top_parser()
    for module, name in ADDERS:
        command(module, name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    answer_without_a_command(argv)  # --help, --version, no command or a typo: answered (and exited) at once
    args = build_parser().parse_args(argv)
    try:
        return command(*COMMANDS[args.command])(args)
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
