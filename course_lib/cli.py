"""The ``course-lib`` command line (also ``python -m course_lib``).

Each sub-command lives in its own module under :mod:`course_lib.commands` and defines
``register(subparsers)``; this module discovers them, parses the arguments and runs the chosen
command. A :class:`~course_lib.errors.CourseError` (a problem the user can fix) is printed as one
paragraph on stderr with exit code 2 and no traceback; argparse's own usage errors also exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .commands.common import remove_created_folders
from .errors import CourseError
from .threads import configure_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course-lib",
        description="Run the experiments of the course 'What Unlearning Leaks' from the command line.")
    parser.add_argument("--version", action="version", version=f"course_lib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (code 2) and --help / --version (code 0)
        return int(exc.code or 0) if isinstance(exc.code, (int, type(None))) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        configure_threads()
        return int(args.func(args) or 0)
    except CourseError as exc:
        print(f"course-lib {args.command}: error: {exc}", file=sys.stderr)
        remove_created_folders(args)  # a refused command leaves no empty results folder behind
        return 2
    except KeyboardInterrupt:
        print("course-lib: interrupted; results written so far are kept.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
