# The two commands of the README. Both bootstrap .venv when it is missing:
# torch==2.13.0 first (the local CPU wheel; an unpinned torch pulls gigabytes of CUDA
# packages), then this project with its dev extra.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.amdm-geom-installed

.PHONY: validate test bench bench-sampler clean-venv

validate: $(STAMP)
	$(BIN)/amdm-geom validate

test: $(STAMP)
	bash .ci/browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_recorder.py

bench-sampler: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_sampler.py

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
