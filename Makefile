# Every target installs what it needs into .venv on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo figures universality test derive bench check-generated clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## derive: regenerate generated/ from the symbolic engine
derive: $(STAMP)
	$(BIN)/ae-dynamics derive --quiet

## demo: derive, integrate the default experiment (configs/demo.toml), simulate it, write a plot and a table
demo: derive
	$(BIN)/ae-dynamics run configs/demo.toml --out results/demo

## universality: equations on the spectrum of image patches vs SGD on the patches (a few minutes)
universality: $(STAMP)
	$(BIN)/ae-dynamics universality --out results/universality

## figures: the paper's phenomena (runtime/experiments): PNG, JSON and CSV per experiment in results/figures
figures: derive
	$(BIN)/ae-dynamics figures --out results/figures

## test: the whole test suite
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n auto --maxprocesses 4

## bench: kernel and integrator speed (numbers go into the README)
bench: $(STAMP)
	$(BIN)/python bench/run.py

## check-generated: fail if `make derive` changes generated/
check-generated: derive
	git diff --exit-code --stat -- generated/
	@test -z "$$(git status --porcelain -- generated/)" || (git status --porcelain -- generated/; exit 1)

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
