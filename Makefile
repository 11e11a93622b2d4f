# Set-up and checks. `make quickstart` and `make test` work on a fresh machine.
#
# torch: when the venv has no torch, TORCH_SPEC (a CPU build on the CPU machines) is installed before
# anything else, so no dependency can pull a multi-GB CUDA build. On a GPU host that already has a CUDA
# torch, reuse it: `make test VENV_FLAGS=--system-site-packages`, or install yours into .venv first.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MTA_HOME ?= $(CURDIR)/mta-runs

.PHONY: install quickstart test test-all lint format bench gpu-check data browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The fused CPU kernel of the MTA op, compiled for this machine into the venv (about 30 s with gcc). When it cannot
# build, MTA runs on the pure-torch path (same results, slower on CPU) and the build says why.
KERNEL_STAMP := $(VENV)/.kernel
$(KERNEL_STAMP): mta_ablate/attention/csrc/mta_cpu.cpp mta_ablate/attention/kernel.py $(STAMP)
	$(BIN)/python -m mta_ablate.attention.kernel build
	touch $(KERNEL_STAMP)

install: $(STAMP) $(KERNEL_STAMP)

# Corpora and other downloads the default jobs and the tests use (pinned by version and hash, into
# $(MTA_HOME)/cache; a no-op when cached). `code` needs no download; `tex` is optional: `mta-ablate data fetch tex`.
data: install
	$(BIN)/mta-ablate data fetch books wiki

# The quickstart sweep (baseline vs a 2x7 and a 1x1 kernel on the toy task, seeds until decided, 2 workers; about
# 4 minutes on 2 cores) into the embedded stores under MTA_HOME, then its report. Running it again resumes (finished trials are kept).
quickstart: install data
	$(BIN)/mta-ablate sweep sweeps/quickstart.yaml --workers 2
	$(BIN)/mta-ablate report quickstart --out reports/quickstart

# Debian's chromium for the test that opens the HTML report in a real browser (skipped, with a reason, without it).
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "make: could not install chromium; the browser test will skip"; }

test: install data browser lint
	$(BIN)/python -m pytest -q --durations=12

test-all: install data
	MTA_SLOW=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# On a GPU host: every number of the README's GPU table (attention and context benches in bf16, the training-step
# cost of baseline / talking heads / MTA on the 300m shape, one shrunk paper_ablation_gpu trial, needle at 2K and 4K).
gpu-check: install data
	$(BIN)/mta-ablate bench gpu-check --device cuda

bench: install
	$(BIN)/mta-ablate bench attention
	$(BIN)/mta-ablate bench context
	$(BIN)/mta-ablate bench train
	$(BIN)/mta-ablate bench ranks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
