# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv and
# installs what is missing (pinned in requirements.txt) on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Detectron2 route for machines without its repository: the PyPI redistribution
# sal-detectron2 (Detectron2 main, 2024), whose pure-Python code runs on 3.11.
D2_PKG := sal-detectron2==0.7.2

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -r requirements.txt
	$(PY) -c "import detectron2" 2>/dev/null || $(PIP) install --no-deps --only-binary=:all: \
	    --python-version 3.10 --target "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" $(D2_PKG)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import resdet"
	touch $@

test: $(STAMP)
	$(PY) -m ruff check resdet tools tests bench configs
	$(PY) -m ruff format --check resdet tools tests bench configs
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/demo.py $(if $(DATA),--data $(DATA)) $(if $(IMAGES),--images $(IMAGES)) --output output/demo

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) output
