"""Writing results: checked before the compute, written all-or-nothing, resumable row files.

Two kinds of output leave the course:

* one **result** of a recipe: a JSON file and its figure, written by :func:`write_result`. The
  output folder is checked by :func:`prepare_output` *before* any compute starts (so a typo in
  ``--out`` costs nothing), and the two files land together or not at all.
* the **rows** of a long benchmark (RUB: one row per method, seed and attack radius), kept in a
  JSON-lines file by :class:`RowStore`: every row is written as soon as it is computed (the file
  is replaced atomically, never half-written), and a rerun with the same configuration skips the
  rows it finds, so an interrupted run resumes without recomputing or duplicating anything.

Operating-system refusals (a read-only folder, a full disk, a path that is a file) become a
:class:`~course_lib.errors.CourseError` that names the path and says what to do.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import CacheCorruptError, CourseError

#: Files the course writes can be read by the group of a shared data folder.
FILE_MODE = 0o664


def _os_error(path: Path, exc: OSError, doing: str) -> CourseError:
    reason = exc.strerror or str(exc)
    return CourseError(f"Cannot {doing} {path}: {reason}. Choose another folder (for example with --out), "
                       "or fix its permissions or free some disk space, and run again.")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename (group-readable)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _os_error(path.parent, exc, "write into") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(path, exc, "write") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_output(folder: str | Path, names: Iterable[str] = ()) -> Path:
    """Check that ``folder`` can receive the files ``names``; create it. Call before any compute.

    Raises :class:`CourseError` if ``folder`` is a file, cannot be created or written to, or if one
    of ``names`` inside it is a folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CourseError(f"The output folder {folder} is a file. Give --out a folder (it is created if missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _os_error(folder, exc, "write into") from exc
    for name in names:
        if (folder / name).is_dir():
            raise CourseError(f"{folder / name} is a folder, so the result cannot be written there. "
                              "Remove it or choose another --out.")
    return folder


def write_result(folder: str | Path, stem: str, payload: dict, figure=None, *, dpi: int = 120) -> dict[str, str]:
    """Write ``<stem>.json`` (and ``<stem>.png`` from ``figure``) into ``folder``, both or neither.

    Returns the paths written, ``{"json": ..., "figure": ...}``. The figure is closed.
    """
    folder = prepare_output(folder, [f"{stem}.json", f"{stem}.png"])
    paths = {"json": folder / f"{stem}.json"}
    staged: list[tuple[str, Path]] = []
    try:
        if figure is not None:
            import matplotlib.pyplot as plt

            paths["figure"] = folder / f"{stem}.png"
            fd, tmp_png = tempfile.mkstemp(dir=folder, prefix=f".{stem}.png.", suffix=".tmp")
            os.close(fd)
            staged.append((tmp_png, paths["figure"]))
            figure.savefig(tmp_png, dpi=dpi, bbox_inches="tight", format="png")
            plt.close(figure)
        payload = {**payload, "files": {k: str(v) for k, v in paths.items()}}
        if "figure" in paths:
            payload["figure"] = str(paths["figure"])
        fd, tmp_json = tempfile.mkstemp(dir=folder, prefix=f".{stem}.json.", suffix=".tmp")
        staged.append((tmp_json, paths["json"]))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(payload, indent=2, default=str))
        for tmp, _ in staged:
            os.chmod(tmp, FILE_MODE)
        for tmp, final in staged:
            os.replace(tmp, final)
    except OSError as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise _os_error(folder, exc, "write the result into") from exc
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
    return {k: str(v) for k, v in paths.items()}


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines results file (``[]`` if it does not exist).

    Raises :class:`CacheCorruptError` (naming the line) for a line that is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise CourseError(f"{path} is a folder, so results cannot be read or written there; remove it or choose "
                          "another --out.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheCorruptError(f"The results file {path} cannot be read ({exc}). Delete it and run again.") from exc
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise CacheCorruptError(f"Line {i} of the results file {path} is not JSON ({exc}). "
                                    "Delete the file (or that line) and run again.") from exc
        if not isinstance(row, dict):
            raise CacheCorruptError(f"Line {i} of the results file {path} is not a result row (a JSON object). "
                                    "Delete the file (or that line) and run again.")
        rows.append(row)
    return rows


class RowStore:
    """A resumable JSON-lines file of result rows (one benchmark configuration per file).

    Parameters
    ----------
    path:
        The ``.jsonl`` file; a ``.json`` file beside it records ``identity``.
    identity:
        The configuration that makes the rows comparable (dataset, model, budget, ...). A file
        whose recorded identity differs is an error, never silently mixed.
    key:
        ``key(row) -> tuple``: what makes a row unique (for example method, seed and radius).
    """

    def __init__(self, path: str | Path, identity: dict, key: Callable[[dict], tuple]):
        self.path = Path(path)
        self.identity = identity
        self.key = key
        side = self.path.with_suffix(".json")
        text = json.dumps(identity, indent=2, sort_keys=True, default=str)
        if side.exists():
            try:
                old = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CacheCorruptError(f"The results description {side} cannot be read ({exc}). Delete it and "
                                        f"{self.path.name} beside it, and run again.") from exc
            if json.loads(text) != old:
                raise CacheCorruptError(f"The results file {self.path} belongs to another configuration than this "
                                        "run's (its .json beside it differs). Delete both files or choose another --out.")
        else:
            atomic_write_text(side, text)
        self.rows: list[dict] = self._read()
        self._done = {self.key(r) for r in self.rows}

    def _read(self) -> list[dict]:
        rows = read_rows(self.path)
        for i, row in enumerate(rows, 1):
            try:
                self.key(row)
            except (KeyError, TypeError, ValueError) as exc:
                raise CacheCorruptError(f"Row {i} of the results file {self.path} lacks what identifies it ({exc}). "
                                        "Delete the file (or that row) and run again.") from exc
        return rows

    def __contains__(self, key: tuple) -> bool:
        return key in self._done

    def __len__(self) -> int:
        return len(self.rows)

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))

    def append(self, row: dict) -> None:
        """Add ``row`` and rewrite the file atomically (never a half-written line)."""
        k = self.key(row)
        if k in self._done:
            raise CourseError(f"The row {k} is already in {self.path}.")
        self.rows.append(row)
        self._done.add(k)
        self._rewrite()

    def drop(self, predicate: Callable[[dict], bool]) -> int:
        """Remove the rows for which ``predicate(row)`` is true (stale rows); return how many."""
        keep = [r for r in self.rows if not predicate(r)]
        dropped = len(self.rows) - len(keep)
        if dropped:
            self.rows = keep
            self._done = {self.key(r) for r in keep}
            self._rewrite()
        return dropped
