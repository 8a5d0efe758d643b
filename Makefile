# The kit's two commands are `make reproduce` and `make test`; both build the environment first
# when it is missing or stale. VENV may point anywhere (.ci/run points it at a cache outside the clone).
# For the edit-test loop: `make test-fast` (the unit tests not marked slow) and `make lint` (the import layers).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# The environment is keyed by the content of the dependency files, not by their mtimes, so a fresh
# clone reuses a cached environment; the editable install is keyed by this clone's path as well.
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
PATH_HASH := $(shell printf '%s' "$(CURDIR)" | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)
PROJECT_STAMP := $(VENV)/.project-$(DEPS_HASH)-$(PATH_HASH)

PROFILE ?= quick

# nbval re-executes the committed smoke reports on freshly generated data, without progress bars
# (their chunking varies); tests/nbval_sanitize.cfg masks what legitimately varies (times, paths, digits
# past the first decimal). Then tests/test_smoke_numbers.py compares the numbers that execution recorded
# with the committed ones, within stated tolerances.
NBVAL := TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
	--nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg
SMOKE_REPORTS := $(sort $(wildcard reports/smoke/0*.ipynb))

.PHONY: env reproduce test test-unit test-fast test-notebooks lint references lab bench clean-env

env: $(PROJECT_STAMP)

$(DEPS_STAMP):
	@echo ">> building the environment in $(VENV) (first time: a few minutes, about 6 GB)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	@rm -f $(VENV)/.deps-* $(VENV)/.project-*
	@touch $@

$(PROJECT_STAMP): $(DEPS_STAMP)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (eiclip)" >/dev/null
	@rm -f $(VENV)/.project-*
	@touch $@

reproduce: env
	$(VENV)/bin/eiclip reproduce --profile $(PROFILE)

test: test-unit test-notebooks

test-unit: env
	$(PY) -m pytest -q -m "not notebooks" tests

# test-unit without the tests marked slow (most training and pretraining runs, subprocess pipelines, long property
# and fault-injection tests); `make test` runs them.
test-fast: env
	$(PY) -m pytest -q -m "not slow and not notebooks" tests

# The layers declared in .importlinter; tests/test_layers.py runs the same check among the unit tests.
lint: env
	$(VENV)/bin/lint-imports --no-cache

# The re-executed reports rewrite their figures and results in reports/smoke/; the committed
# references are put back afterwards, so a test run leaves the working tree as it found it.
test-notebooks: env
	rm -rf data/smoke
	$(VENV)/bin/eiclip synth --out data/smoke --profile smoke
	@saved=$$(mktemp -d) && cp -a reports/smoke "$$saved/" && \
	  { EICLIP_SMOKE_RUN=reports/smoke EICLIP_SMOKE_REFERENCE="$$saved/smoke" $(NBVAL) $(SMOKE_REPORTS) tests/test_smoke_numbers.py; \
	    rc=$$?; rm -rf reports/smoke; mv "$$saved/smoke" reports/smoke; rmdir "$$saved"; exit $$rc; }

# Re-make the nbval references (reports/smoke/) after a deliberate change of a notebook or its numbers.
references: env
	rm -rf data/smoke reports/smoke
	TQDM_DISABLE=1 $(VENV)/bin/eiclip reproduce --profile smoke

lab: env
	$(VENV)/bin/jupyter lab notebooks/

bench: env
	@for b in bench/*.py; do echo ">> $$b"; $(PY) $$b || exit 1; done

clean-env:
	rm -rf $(VENV)
