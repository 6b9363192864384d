# The two commands a newcomer needs: `make run` (the whole stack) and `make test` (everything CI runs).
# uv comes from PyPI into .tools/ when it is not installed; node_modules holds the pinned buf CLI,
# which `make run` needs too: the `npx buf curl` calls `rating dev` prints use it.

UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: run demo test ledger-long protos lint bench bench-invoices bench-console chaos clean

run: .venv/.synced node_modules/.installed
	$(UV) run rating dev

demo: .venv/.synced node_modules/.installed
	$(UV) run rating dev --demo

test: .venv/.synced node_modules/.installed
	$(UV) run python tools/gen_protos.py --check
	npx --no-install buf lint protos
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports
	$(UV) run pytest

# The ledger state machine over the real API and PostgreSQL with 2,000 examples of 30 steps
# instead of the 30 × 20 `make test` runs (tens of minutes on 2 cores); prints what it covered.
# RATING_LEDGER_EXAMPLES=N changes the number of examples.
ledger-long: .venv/.synced
	RATING_LEDGER_PROFILE=long $(UV) run pytest tests/integration/api/test_ledger_api_state_machine.py -s

protos: .venv/.synced
	$(UV) run python tools/gen_protos.py

bench: .venv/.synced
	$(UV) run python bench/pricing_bench.py
	$(UV) run python bench/rating_bench.py

# Closing one period for 1,000 contracts through Temporal, and invoice latency at 10 vs 100,000
# events (about 7 minutes on 2 cores); options: `uv run python bench/invoice_bench.py --help`.
bench-invoices: .venv/.synced
	$(UV) run python bench/invoice_bench.py

# The web console's pages with 10,000 contracts: each page's server time (target < 200 ms).
bench-console: .venv/.synced
	$(UV) run python bench/console_bench.py

# Kill servers, PostgreSQL and the worker under journaled load, then check that nothing was lost
# or doubled (one server, then three racing on the same ids; under ~10 minutes). Not a CI test;
# options: `uv run python bench/chaos.py --help`.
chaos: .venv/.synced
	$(UV) run python bench/chaos.py

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.8

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

clean:
	rm -rf .venv .tools node_modules .mypy_cache .ruff_cache .pytest_cache
