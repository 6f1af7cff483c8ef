"""What every sub-command shares: the same options under the same names, and one way to finish.

A recipe's command is written in three steps::

    def register(sub):
        p = sub.add_parser("recover", help=...)
        add_recipe_options(p, out="recover")              # --dataset --model --profile --seed --out --json
        p.add_argument(...)                                # the recipe's own options
        p.set_defaults(func=run)

    def run(args):
        out = output_folder(args)                          # checked before any compute
        result = run_recovery(args.dataset, args.model, ...)
        return finish(args, result, stem="recover-...")    # JSON + figure together, then print

:func:`finish` writes ``<stem>.json`` and ``<stem>.png`` through
:func:`course_lib.results.write_result` and prints the result's text (or, with ``--json``, the
JSON) with :func:`emit`.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..budgets import PROFILE_NAMES
from ..results import prepare_output, write_result


def emit(result, as_json: bool, text: str | None = None) -> None:
    """Print ``result`` as JSON (``--json``) or as ``text`` (default: ``result``'s str)."""
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=False, default=str))
    else:
        print(text if text is not None else result)


def add_common(parser: argparse.ArgumentParser, *, seed: bool = True, profile: bool = True,
               json_flag: bool = True) -> None:
    """Add ``--profile``, ``--seed`` and ``--json``."""
    if profile:
        parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                            help="budget: quick (CI), standard (laptop CPU), full (GPU); "
                                 "default: $COURSE_PROFILE, else full on a GPU and standard on a CPU")
    if seed:
        parser.add_argument("--seed", type=seed_value, default=0, help="random seed (default 0)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_recipe_options(parser: argparse.ArgumentParser, *, out: str | None, dataset: str | None = "mnist-5k",
                       model: bool = True, seed: bool = True) -> None:
    """The options of every recipe command: ``--dataset --model --profile --seed --out --json``.

    ``out`` names the command's folder under the results root (``rub``: ``$COURSE_RESULTS_DIR/rub``,
    else ``results/rub``; ``None``: the command writes no files); ``dataset`` the default dataset
    (``None``: no ``--dataset`` option).
    """
    from ..config import results_dir
    from ..data import dataset_names
    from ..models import model_names

    if dataset is not None:
        parser.add_argument("--dataset", default=dataset,
                            help=f"one of {', '.join(dataset_names())}, or folder:PATH (default {dataset})")
    if model:
        parser.add_argument("--model", choices=model_names(), default=None,
                            help="architecture (default: the chapter's model for this dataset)")
    if out is not None:
        default = str(results_dir(out))
        parser.add_argument("--out", default=default, help=f"folder of the result files (default {default})")
    add_common(parser, seed=seed)


def output_folder(args: argparse.Namespace) -> Path:
    """``args.out``, checked (and created) before the compute starts.

    The folders this creates are noted on ``args``: a command refused later (a bad dataset, a bad
    strength) removes them again if they are still empty (:func:`remove_created_folders`).
    """
    folder = Path(args.out)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]  # the deepest first
    prepared = prepare_output(folder)
    args.created_folders = missing
    return prepared


def remove_created_folders(args: argparse.Namespace) -> None:
    """Remove the folders :func:`output_folder` created, deepest first, while they are empty."""
    for folder in getattr(args, "created_folders", ()):
        try:
            folder.rmdir()
        except OSError:  # not empty (a result landed there) or already gone: keep the rest
            break


def finish(args: argparse.Namespace, result, stem: str, text: str | None = None, extra: dict | None = None) -> int:
    """Write the result's JSON and figure into ``args.out`` together, then print; return 0.

    ``text`` replaces ``result.text()``; ``extra`` is merged into the JSON payload.
    """
    payload = {**result.to_dict(), **(extra or {})}
    paths = write_result(args.out, safe_stem(stem), payload, result.plot())
    payload["files"] = paths
    if "figure" in paths:
        payload["figure"] = paths["figure"]
    body = text if text is not None else result.text()
    lines = [body, f"results: {paths['json']}"] + ([f"figure: {paths['figure']}"] if "figure" in paths else [])
    emit(payload, args.json, "\n".join(lines))
    return 0


def safe_stem(text: str) -> str:
    """A file-name stem from ``text``: path separators and colons become underscores."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)


# --------------------------------------------------------------------------- argument types

def _number_error(text: str, what: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {what}; got {text!r}")


def positive_int(text: str) -> int:
    """An integer >= 1 (for argparse ``type=``): 0 is an error, never "use the default"."""
    try:
        value = int(text)
    except ValueError:
        raise _number_error(text, "a whole number >= 1") from None
    if value < 1:
        raise _number_error(text, "a whole number >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (for argparse ``type=``)."""
    try:
        value = int(text)
    except ValueError:
        raise _number_error(text, "a whole number >= 0") from None
    if value < 0:
        raise _number_error(text, "a whole number >= 0")
    return value


def seed_value(text: str) -> int:
    """A seed torch accepts: an integer in [0, 2**63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise _number_error(text, "a whole-number seed in [0, 2**63 - 1]") from None
    if not 0 <= value < 2 ** 63:
        raise _number_error(text, "a whole-number seed in [0, 2**63 - 1]")
    return value


def parse_eps(text: str) -> float:
    """Parse an epsilon like ``8/255`` or ``0.03`` (for argparse ``type=``)."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a number (examples: 0, 8/255, 0.03)") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a number (examples: 0, 8/255, 0.03)")
    return value


def parse_int_list(text: str) -> list[int]:
    """Parse ``1,2,3`` into ``[1, 2, 3]`` (for argparse ``type=``); an empty list is an error."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3,7; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, like 0 or 0,3,7; got {text!r}")
    return values


def parse_name_list(text: str) -> list[str]:
    """Parse ``a,b`` into ``["a", "b"]`` (for argparse ``type=``); an empty list is an error."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected at least one name, like retrain,FT; got {text!r}")
    return names
