"""The book's structure: every chapter in the table of contents exists and is committed stripped."""
import json
from pathlib import Path

import yaml

BOOK = Path(__file__).resolve().parents[1] / "book"


def toc_files():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_toc_entry_exists():
    for name in toc_files():
        assert (BOOK / f"{name}.ipynb").exists() or (BOOK / f"{name}.md").exists(), name


def test_notebooks_are_committed_without_outputs():
    for nb_path in BOOK.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, nb_path.name


def test_every_chapter_has_a_parameters_cell_objectives_and_exercises():
    for nb_path in sorted(BOOK.glob("0*.ipynb")):
        nb = json.loads(nb_path.read_text())
        tags = [t for c in nb["cells"] for t in c.get("metadata", {}).get("tags", [])]
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        assert "parameters" in tags, nb_path.name
        assert "objectives" in text.lower(), nb_path.name
        assert text.count("Exercise") >= 3, nb_path.name
