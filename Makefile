# Two commands: `make demo` and `make test`. Each creates .venv (CPU torch) when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test venv bench clean-venv

$(VENV)/.installed: pyproject.toml requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned to the CPU wheel, so nothing later pulls a CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m vitruvian.demo $(DEMO_ARGS)

bench: venv
	$(PY) -m benchmarks.import_time

clean-venv:
	rm -rf $(VENV)
