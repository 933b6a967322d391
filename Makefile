# Two commands do everything on a fresh machine:  make demo  /  make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint bench leaderboard

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	# IU X-ray reports ship in torchxrayvision's data folder; --no-deps keeps torchvision out
	$(BIN)/pip install -q --no-deps torchxrayvision
	touch $@

setup: $(BIN)/.installed

demo: setup  ## evaluate the built-in baselines on the default suite, print the leaderboard
	$(BIN)/cxbench run

test: setup  ## run the test suite (offline)
	$(BIN)/python -m pytest -q

leaderboard: setup  ## rebuild leaderboards/default/ from the result files in results/
	$(BIN)/cxbench leaderboard build default

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done
