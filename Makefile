# Two commands (see README.md):
#   make book   create .venv, install, execute every chapter, build the HTML book in _build/html
#   make test   create .venv if needed, run the unit tests and every chapter under the quick profile
# and, for instructors, make assignments: every chapter's student notebook, otter autograder, sample
# submissions and rubrics under _build/assignments (grade with `course-lib assign grade`, see README.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first, pinned to the builds that this machine kind keeps on
# disk (pyproject.toml only asks for a range); override TORCH_SPEC for another platform.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: book test assignments venv clean-book clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build book/ --config $(CURDIR)/_config.yml --toc $(CURDIR)/book/_toc.yml --path-output $(CURDIR) --all
	@test -f _build/html/index.html && echo "The book is in _build/html/index.html"

test: $(STAMP)
	COURSE_PROFILE=quick $(BIN)/python -m pytest tests -q
	COURSE_PROFILE=quick $(BIN)/python -m pytest --nbmake --nbmake-timeout=600 -q book/

assignments: $(STAMP)
	COURSE_PROFILE=quick $(BIN)/course-lib assign build --out _build/assignments

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV)
