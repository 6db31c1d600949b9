# The two commands of the README. Both bootstrap .venv when it is missing:
# torch==2.13.0 first (the local CPU wheel; an unpinned torch pulls gigabytes of CUDA
# packages), then this project with its dev extra.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.amdm-geom-installed

.PHONY: validate test test-kernels bench bench-sampler clean-venv

validate: $(STAMP)
	$(BIN)/amdm-geom validate

test: $(STAMP)
	bash .ci/browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The numerically sensitive tests (bit-for-bit comparisons with diffusers, eq. (4) on every
# prediction type, the implementation and trace checks, batch and chunk independence, the
# schedules against diffusers' float32 step) under ATen's portable and AVX2 kernels; make test
# runs them under the machine's own. Each level is checked to be the one torch runs at.
KERNEL_LEVELS ?= default avx2
KERNEL_TESTS  := tests/test_prediction_types.py tests/test_implementation_checks.py tests/test_sampler.py \
	tests/test_flow_sampler.py tests/test_pipelines.py tests/test_sd3_pipeline.py tests/test_geometry.py \
	tests/test_batch_independence.py tests/test_chunked_sampling.py tests/test_schedules.py tests/test_ve.py \
	tests/test_gaussianity.py

test-kernels: $(STAMP)
	@for level in $(KERNEL_LEVELS); do \
	  ATEN_CPU_CAPABILITY=$$level $(BIN)/python -c "import os, torch; c = torch.backends.cpu.get_cpu_capability(); \
	    print('ATEN_CPU_CAPABILITY=' + os.environ['ATEN_CPU_CAPABILITY'], '->', c); \
	    assert c.lower() == os.environ['ATEN_CPU_CAPABILITY'], 'torch ignored the level'" || exit 1; \
	  ATEN_CPU_CAPABILITY=$$level HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(KERNEL_TESTS) \
	    || exit 1; \
	done

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
