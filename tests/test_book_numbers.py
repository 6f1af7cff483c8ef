"""No measured number is typed into the book's prose (issue 20): it comes from the run.

A number in markdown next to a unit (dB, %, points, seconds, ×, steps, queries) goes stale when the
profile, the seed or the code changes, so the chapters glue what they measured (MyST-NB ``glue``)
or print it in a table. What the scanner cannot tell from a measurement is listed in ``ALLOWED``
with its reason: definitions (a split, a threshold of a bar, a step rule) and the papers' own
numbers, each as the exact phrase that the page uses. The scan covers the chapters, the exercise
pages and the markdown pages; a rubric's points (``**Rubric (3 points).**``, ``- 1 point:``) are
marks, not measurements, and are not scanned.
"""
import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("0*.ipynb"))
PAGES = sorted(BOOK.glob("*.ipynb")) + sorted((BOOK / "exercises").glob("ex*.ipynb")) + sorted(BOOK.glob("*.md"))

UNIT = r"(?:%|dB\b|points?\b|pp\b|s\b|seconds?\b|minutes?\b|min\b|×|x\b|steps?\b|queries\b)"
NUMBER = re.compile(r"(?<![\w.\-/])(\d+(?:[.,]\d+)?)\s?" + UNIT + r"(?!\s?\d)")   # "7×7" is a shape

#: page -> phrases (the matched number with some words around it) that are not measurements.
ALLOWED: dict[str, dict[str, str]] = {
    "01_threat_model": {
        "(80 %)": "the split's definition (Section 3.1 of the inversion paper)",
        "(20 %)": "the split's definition",
    },
    "03_feature_recovery": {
        "came back at 20 dB or more": "the threshold the count uses (a definition)",
    },
    "04_label_inference": {
        "2 queries per coordinate": "how ZOO counts queries (a definition)",
        "2n+1 queries": "how NES counts queries (a definition)",
    },
    "05_rub": {
        "scores 0 % on": "the opening's hypothetical",
        "10 × 5 seeds": "RUB's protocol, cited",
        "a UA of 0 % does not prove": "an exercise's title",
    },
    "07_rub_inpainting": {
        "at least 40 points": "a bar's threshold (a definition)",
    },
    "08_rub_diffusion": {
        "counts **0 steps**": "UnlearnDiffAtk's step count (a definition)",
        "at most 15 points": "a bar's threshold (a definition)",
        "at 100 steps (Section 5.1)": "RUB's cap on the attack, cited",
    },
    "instructors": {
        "and must score 100 %": "what the build requires of a solution (a definition)",
    },
    "intro": {
        "under 2 minutes per chapter": "the quick profile's time target (a definition)",
    },
    "ex03_feature_recovery": {
        "recovered from about 20 dB": "chapter 3's recovery threshold (a definition)",
    },
    "ex05_rub": {
        "at most 8 %": "the stopping rule of the GA/IU recipe (a definition)",
        "**above 20 %**": "the exercise's threshold (a definition)",
        "back above 20 % in this run": "the model answer quotes the exercise's threshold",
        "a UA of 0 % does not prove": "an exercise's title",
        "a UA near 0 %": "the exercise's hypothetical",
    },
    "ex08_rub_diffusion": {
        "with 0 steps": "UnlearnDiffAtk's step count of an already-successful prompt (a definition)",
    },
}
RUBRIC = re.compile(r"\*\*Rubric \(\d+ points?\)\.?\*\*|^\s*[-*] \d+(?:\.\d+)? points?:", re.M)


def _prose(source: str) -> str:
    """Markdown without code, math, glue roles and link targets (where digits are not prose)."""
    text = RUBRIC.sub(" ", source)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"\{glue:\w+\}`[^`]*`", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def _cells(path: Path) -> list[dict]:
    """The cells of a notebook, or a markdown page as one markdown cell."""
    if path.suffix == ".md":
        return [{"cell_type": "markdown", "source": [path.read_text()]}]
    return json.loads(path.read_text())["cells"]


def typed_numbers(path: Path) -> list[str]:
    """Every number-with-unit in the markdown of ``path`` that ``ALLOWED`` does not explain."""
    allowed = ALLOWED.get(path.stem, {})
    found = []
    for index, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        text = _prose(source)
        for match in NUMBER.finditer(text):
            context = " ".join(text[max(0, match.start() - 40):match.end() + 30].split())
            if not any(phrase in " ".join(source.split()) and match.group(0) in phrase for phrase in allowed):
                found.append(f"cell {index + 1}: {match.group(0)!r} in '...{context}...'")
    return found


def test_the_scanner_finds_a_typed_measurement_and_ignores_glue_code_and_math(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": [
        "The attack reached 21.5 dB and 86 points; it took 12 s.\n",
        "Glued: {glue:text}`psnr:.1f` dB, code `eps = 8 %`, math $p = 10 \\%$, a 28×28 image.\n",
        "**Rubric (3 points).**\n", "- 1 point: names the attack.\n"]}]}
    path = tmp_path / "09_example.ipynb"
    path.write_text(json.dumps(nb))
    found = typed_numbers(path)
    assert [f.split("'")[1] for f in found] == ["21.5 dB", "86 points", "12 s"]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_no_measured_number_is_typed_into_the_prose(page):
    found = typed_numbers(page)
    assert not found, (f"{page.name} types measured numbers into its markdown; glue them from the run "
                       f"(myst_nb.glue and {{glue:text}}) or print them in a table, or, if one is a "
                       f"definition or the paper's number, add the phrase to ALLOWED with its reason:\n  "
                       + "\n  ".join(found))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_glues_what_it_measured(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    prose = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "glue(" in code and "{glue:" in prose, f"{chapter.name} reports measurements but glues none of them."


def test_every_allowed_phrase_is_still_in_its_chapter():
    for stem, phrases in ALLOWED.items():
        path = next(p for p in PAGES if p.stem == stem)
        text = " ".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown").split()
        for phrase in phrases:
            assert phrase in " ".join(text), f"ALLOWED[{stem!r}] names {phrase!r}, which the chapter no longer has."
