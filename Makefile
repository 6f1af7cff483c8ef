# Two commands (see README.md):
#   make book   create .venv, install, execute every chapter, build the HTML book in _build/html
#   make test   create .venv if needed, run the unit tests, every chapter under the quick profile,
#               build the book from those executed chapters and check every page in a headless browser,
#               then print where the time went (tools/time_report.py)
# and, for instructors, make assignments: every chapter's student notebook, otter autograder, sample
# submissions and rubrics under _build/assignments (grade with `course-lib assign grade`, see README.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first, pinned to the builds that this machine kind keeps on
# disk (pyproject.toml only asks for a range); override TORCH_SPEC for another platform.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# the package and its tools (about 190 packages) go in with uv when it can be installed: it downloads in parallel
# (measured on the 2-core development machine: 26 s, where pip took 93 s); torch, already there, is left alone. Without uv
# (make INSTALLER=pip, or uv fails to install) pip installs them.
INSTALLER ?= uv
PIP_DEV := $(BIN)/python -m pip install --quiet -e '.[dev]'
UV_DEV := { $(BIN)/python -m pip install --quiet uv && $(BIN)/python -m uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'; }
INSTALL_DEV := $(if $(filter uv,$(INSTALLER)),$(UV_DEV) || { echo "uv failed: installing with pip"; $(PIP_DEV); },$(PIP_DEV))
EXECUTED := _build/executed
# pytest workers (pytest-xdist; each test file stays in one worker, so its module fixtures run once), and
# torch threads per worker: fixed, so that every run of the suite computes the same bits on a machine
TEST_JOBS ?= 2
TEST_THREADS ?= 1
TEST_RESULTS := $(CURDIR)/_build/results
# warnings are errors, every reference must resolve
JB_FLAGS := -W -n --keep-going

.PHONY: book html test check-book assignments venv clean-book clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(INSTALL_DEV)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	touch $(STAMP)

# execute every notebook once (profile: $COURSE_PROFILE, else the course's default), then build that copy
book: $(STAMP)
	$(BIN)/python tools/run_notebooks.py --out $(EXECUTED)
	$(MAKE) html

# build the HTML book from the executed copy (no notebook runs here)
html:
	rm -rf _build/html
	$(BIN)/jupyter-book build $(EXECUTED)/book --config $(CURDIR)/_config.yml --toc $(CURDIR)/$(EXECUTED)/book/_toc.yml --path-output $(CURDIR) $(JB_FLAGS)
	@test -f _build/html/index.html && echo "The book is in _build/html/index.html"

# every page in headless Chromium (skipped with a message where no browser is installed, except in CI)
check-book:
	$(BIN)/python tools/check_book.py || { status=$$?; test $$status -eq 2 -a -z "$$CI" && echo "(browser check skipped)"; }

# the unit tests and the chapters share one fresh results root: the RUB fixtures compute each benchmark with
# its chapter's arguments, and the chapter reads those rows (tests/conftest.py, course_lib.config.results_dir)
test: $(STAMP)
	rm -rf $(TEST_RESULTS)
	COURSE_THREADS=$(TEST_THREADS) COURSE_RESULTS_DIR=$(TEST_RESULTS) COURSE_PROFILE=quick $(BIN)/python -m pytest tests -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=20 --junitxml=_build/pytest-junit.xml
	COURSE_RESULTS_DIR=$(TEST_RESULTS) COURSE_PROFILE=quick $(BIN)/python tools/run_notebooks.py --profile quick --out $(EXECUTED)
	$(MAKE) html
	$(MAKE) check-book
	$(BIN)/python tools/time_report.py --top 12

assignments: $(STAMP)
	COURSE_PROFILE=quick $(BIN)/course-lib assign build --out _build/assignments

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV)
