# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is optional for users; the test install pins the CPU build that installs locally.
TORCH_PIN := torch==2.13.0
# fsspec, s3fs and gcsfs release in lockstep; the resolver does not find a matching trio alone.
STORAGE_PINS := fsspec==2026.7.0 s3fs==2026.7.0 gcsfs==2026.7.0
# Ray Data for the mediagate.ray tests only (a CPU-only install; it pulls no torch).
RAY_PIN := ray[data]==2.60.0

.PHONY: install demo test lint typecheck pytest bench clean test-vllm test-ray

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_PIN)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]' $(STORAGE_PINS)
	touch $(STAMP)

demo: install
	$(VENV)/bin/mediagate demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest -q

test: lint typecheck pytest

# vLLM's own media tests against mediagate's connector, in a venv of their own.
test-vllm: install
	$(PY) integration/vllm/run.py

# mediagate.ray on a local two-CPU Ray cluster (installs Ray into the venv first).
test-ray: install
	$(PY) -m pip install --quiet --disable-pip-version-check '$(RAY_PIN)'
	$(PY) -m pytest -q integration/ray

# The batch group's comparison sides (Ray Data, requests) go into the venv for the bench
# only; Daft gets a venv of its own under benchmarks/.work (its pyarrow pin is older).
BENCH_PINS := '$(RAY_PIN)' requests==2.34.2

bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check $(BENCH_PINS)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
