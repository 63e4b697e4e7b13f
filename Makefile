# serve-app: `make run` starts the whole stack, `make test` checks it. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run test lint format bench clean

install: $(STAMP)

# Re-installs only when the project's dependency files change (idempotent otherwise).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# spandrel without torchvision (pyproject.toml, extra `upscale`, says why).
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt spandrel einops
	touch $(STAMP)

run: install
	$(BIN)/serve-app run --host 127.0.0.1 --port 8000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy serve_app tests loadtests
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python loadtests/bench_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python loadtests/bench_events.py
	HF_HUB_OFFLINE=1 $(BIN)/python loadtests/bench_models.py
	HF_HUB_OFFLINE=1 $(BIN)/python loadtests/bench_enfugue.py
	$(BIN)/python loadtests/bench_accounts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
