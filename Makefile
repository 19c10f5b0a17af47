# The two commands: `make run` and `make test`. Everything else they need, they install.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("rqflow needs Python 3.10+") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[embedded,dashboard,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python deploy/launch.py

# One test process per core, at most four: each starts its own redis-server and workers, and the
# long tests (crash, chaos) spend their time waiting on them. `worksteal` keeps both busy to the end.
PYTEST_ARGS ?= -n auto --maxprocesses=4 --dist worksteal

# The console's browser tests drive Debian's Chromium: installed here when this runs as root and
# it is missing; elsewhere those tests skip and say why.
test: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
		|| echo "could not install chromium: the console's browser tests will skip"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The bench also installs the peers it compares against; the suite never needs them.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[embedded,dashboard,dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.submit
	$(BIN)/python -m bench
	$(BIN)/python -m bench.dag
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.chaos --duration 600

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
