"""Arguments shared by several sub-commands, named the same everywhere."""
from __future__ import annotations

import argparse

from ..config import PROFILE_NAMES


def add_common(parser: argparse.ArgumentParser, *, seed: bool = True, profile: bool = True,
               json_flag: bool = True) -> None:
    """Add ``--profile``, ``--seed`` and ``--json``."""
    if profile:
        parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                            help="budget: quick (CI), standard (laptop CPU), full (GPU); "
                                 "default: $COURSE_PROFILE, else full on a GPU and standard on a CPU")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def parse_eps(text: str) -> float:
    """Parse an epsilon like ``8/255`` or ``0.03`` (for argparse ``type=``)."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a number (examples: 0, 8/255, 0.03)")


def parse_int_list(text: str) -> list[int]:
    """Parse ``1,2,3`` into ``[1, 2, 3]`` (for argparse ``type=``)."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3,7; got {text!r}")
