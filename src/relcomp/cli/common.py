"""What every part of the command line shares: the parser with one-line errors, the help formatter,
argument types and the defaults read from the config dataclasses."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..config import (
    TrainConfig,
)
from ..data.sources import MnistSource, UserSource
from ..errors import RelcompError
from ..utils import parse_count


def defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def int_list(minimum: int):
    """An argparse type: comma-separated integers, each >= ``minimum``."""
    def parse(text: str) -> list[int]:
        try:
            vals = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not vals or min(vals) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
        return vals
    return parse


def float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def count_arg(text: str) -> int:
    try:
        return parse_count(text)
    except RelcompError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="cache folder for MNIST and pair sets (default: $RELCOMP_DATA_DIR or ~/.cache/relcomp)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")

TRAIN, MNIST, USER = defaults(TrainConfig), defaults(MnistSource), defaults(UserSource)
