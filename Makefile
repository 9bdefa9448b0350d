# One line per target; the scripts in bin/ hold the logic.
.PHONY: run test bench lint format check-migrations ci

run:  ## set up what is missing and start the whole stack (web, worker, beat, listener, redis, demo gateway)
	bin/run

test:  ## the whole suite: unit, real Redis, real OpenClaw gateway, browser
	bin/test

bench:  ## performance benchmarks (figures printed and saved under bench/results/)
	bin/bench

lint:  ## ruff, import-linter contracts, mypy, template lint, migration drift
	bin/lint

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

ci:  ## what .ci/run does
	.ci/run
