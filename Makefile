# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# The package is installed non-editable so that the wheel's nnunet_ext.pth (trainer autoload) exists.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
PYTEST_ARGS ?=
DEMO_DIR ?= demo_work

.PHONY: install demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Dependencies are (re)installed only when setup.cfg changes; pip lets torch and torchvision be chosen together.
$(DEPS_STAMP): setup.cfg | $(PY)
	$(PY) -m pip install -q --upgrade "pip>=23.2"
	$(PY) -m pip install -q ".[test]"
	touch $(DEPS_STAMP)

# The package itself is reinstalled every time (seconds), so tests and the CLIs see the working tree.
install: $(DEPS_STAMP)
	$(PY) -m pip install -q --no-deps --force-reinstall .

demo: install
	nnUNet_compile=f $(PY) examples/demo.py --work-dir $(DEMO_DIR)

test: install
	cd tests && nnUNet_compile=f ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) .

lint: install
	$(VENV)/bin/ruff check nnunet_ext tests examples && $(VENV)/bin/ruff format --check nnunet_ext tests examples

clean:
	rm -rf build *.egg-info $(DEMO_DIR)
