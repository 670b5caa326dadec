# cbh-fusion: `make run` runs the pipeline on the embedded synthetic campaign,
# `make test` runs the tests. Both create or reuse the local virtual environment .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH  ?= torch==2.13.0
RUN_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run test test-all lint format bench campaigns notebooks readme readme-perf lab clean clean-runs

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install torch first, pinned: an unpinned install would pull a multi-GB CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	@touch $@

$(VENV)/.notebooks: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[notebooks,dask]"
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.notebooks
	$(PIP) install -q -e ".[notebooks,dask,dev]"
	@touch $@

## run: generate (or reuse) the synthetic campaign and execute every notebook into runs/default
## (installs the notebooks extra with ipywidgets, and the dask extra so that `cbh run --workers N` works)
run: $(VENV)/.notebooks
	$(VENV)/bin/cbh run $(RUN_ARGS)

## test: unit tests + a real papermill run of every notebook (slow tests excluded)
test: $(VENV)/.dev
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

## test-all: every test, the slow ones too
test-all: $(VENV)/.dev
	$(VENV)/bin/pytest -q -m "" $(PYTEST_ARGS)

## lint: ruff (rules and formatting) and the layer contract (import-linter), as CI runs them
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## format: apply ruff's fixes and formatting
format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## bench: the benchmark suite (prints a table, writes benchmarks/results/*.json)
bench: $(VENV)/.dev
	$(PY) benchmarks/run.py $(BENCH_ARGS)

## campaigns: the out-of-sample check: the whole pipeline on other draws of the synthetic campaign
## (runs/campaign-seed7, -seed11; about 7 minutes each on two cores); `make readme` then tables the intervals across them
CAMPAIGN_SEEDS ?= 7 11
campaigns: $(VENV)/.notebooks
	for s in $(CAMPAIGN_SEEDS); do \
		$(VENV)/bin/cbh generate --seed $$s -o data/synthetic_seed$$s.h5 --quiet && \
		$(VENV)/bin/cbh run --campaign data/synthetic_seed$$s.h5 --run-name campaign-seed$$s --no-html --quiet || exit 1; \
	done

## notebooks: refresh parameters cells from the config and sync notebooks/*.py -> *.ipynb
notebooks: $(VENV)/.notebooks
	$(VENV)/bin/cbh notebooks

## readme: rewrite the README's results (runs/default) and performance (benchmarks/results/bench-*.json) sections
BENCH_JSONS ?= $(sort $(wildcard benchmarks/results/bench-*.json))
CAMPAIGN_RUNS ?= $(patsubst %/summary.json,%,$(foreach s,$(CAMPAIGN_SEEDS),$(wildcard runs/campaign-seed$(s)/summary.json)))
readme: $(VENV)/.notebooks
	$(PY) -m cbhlib.pipeline.readme runs/default README.md $(if $(BENCH_JSONS),--benchmarks $(BENCH_JSONS)) \
		$(if $(wildcard runs/threads1/summary.json),--drift runs/threads1) \
		$(if $(CAMPAIGN_RUNS),--campaigns $(CAMPAIGN_RUNS))

## readme-perf: rewrite the README's performance section alone (after `make bench`; needs no run folder)
readme-perf: $(VENV)/.notebooks
	$(PY) -m cbhlib.pipeline.readme runs/default README.md --performance-only --benchmarks $(BENCH_JSONS)

## lab: JupyterLab serving the project root (notebooks/ data/ params/ runs/ all reachable)
lab: $(VENV)/.notebooks
	$(PIP) install -q -e ".[notebooks,lab]"
	$(VENV)/bin/jupyter lab --notebook-dir=.

clean-runs:
	rm -rf runs

clean: clean-runs
	rm -rf $(VENV) data *.egg-info
