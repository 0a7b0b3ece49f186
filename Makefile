# Two commands set everything up and run the work: `make demo` and `make test`.
# Both create .venv in the repo root on first use and install the host stack into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# constraints.txt pins torch to the local CPU wheel so no later install replaces it.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: setup demo test test-fast test-pi lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(PIP_INSTALL) -e ".[host,dev]"
	touch $(STAMP)

## demo: the main job on built-in data: train -> QAT per target -> export -> report -> detect
demo: $(STAMP)
	$(BIN)/edge-yolo info gelan-t yolov9-t --imgsz 640
	$(BIN)/python examples/demo.py --out runs/demo

## test: the whole suite, slow end-to-end checks included (what CI runs)
test: $(STAMP)
	$(BIN)/ruff check edge_yolo tests benchmarks examples
	$(BIN)/python -m pytest -m "slow or not slow" -q

## test-fast: the suite without the slow end-to-end checks
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

## test-pi: the Raspberry Pi path on an emulated Cortex-A76 and A72 (also part of `make test`)
test-pi: $(STAMP)
	$(BIN)/python scripts/emulated_pi.py setup > /dev/null
	$(BIN)/python -m pytest -m slow -q tests/test_emulated_pi.py

lint: $(STAMP)
	$(BIN)/ruff check edge_yolo tests benchmarks examples
	$(BIN)/ruff format --check edge_yolo tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) .venv-tflite214 .cache/emulated-pi .pytest_cache .ruff_cache runs
