# The two commands of the README: `make run` and `make test`. Both create .venv/ when absent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.esol-installed
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test lint dvc.yaml report clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 5 minutes)"
	@$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt > $(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q --no-deps -e . >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

run: $(STAMP)
	snakemake --cores $(CORES)
	esol show

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	ruff check .
	snakefmt --check --line-length 120 .
	snakemake --lint

report: $(STAMP)
	snakemake --report report.html

dvc.yaml: $(STAMP)
	$(PY) -m esol.dvcgen

clean:
	rm -rf results logs benchmarks .snakemake/esol
