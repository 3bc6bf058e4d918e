# cutscope: the two commands of the README are `make demo` and `make test`.
# Both do all the set-up on a fresh Debian machine with Python 3.11 and pip:
# the .venv, cutscope and its dependencies, Debian's graphviz (for `dot`),
# and, for the tests, Debian's postgresql (the tests start their own server).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -q -o Dpkg::Use-Pty=0

# The other supported Pythons: pyenv's newest 3.12.x and 3.13.x builds, when present.
# Each gets its own venv (.venv-3.12, .venv-3.13) made the same way as .venv.
PYENV_ROOT   ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
find_python   = $(shell ls -d $(PYENV_ROOT)/versions/$(1).*/bin/python3 2>/dev/null | sort -V | tail -n 1)
PYTHON_3.12  ?= $(call find_python,3.12)
PYTHON_3.13  ?= $(call find_python,3.13)
OTHER_PYTHONS := $(foreach v,3.12 3.13,$(if $(PYTHON_$(v)),$(v)))
STAMP_NAME   := $(notdir $(STAMP))
OTHER_STAMPS := $(foreach v,$(OTHER_PYTHONS),.venv-$(v)/$(STAMP_NAME))

.PHONY: demo test test-pythons conformance bench venv $(foreach v,3.12 3.13,venv-$(v)) \
        system-deps test-deps clean

# make_venv DIR, INTERPRETER: the venv, cutscope in it (editable, with its test extras;
# setup.py builds the C extension when a compiler is there, and goes without it otherwise).
define make_venv
	@test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(1)/bin/python -m pip install -q -e '.[test]'
	@rm -f $(1)/.installed-*
	@touch $(1)/$(STAMP_NAME)
endef

$(STAMP): pyproject.toml
	$(call make_venv,$(VENV),$(PYTHON))

venv: $(STAMP)

.venv-3.12/$(STAMP_NAME): pyproject.toml
	@test -n "$(PYTHON_3.12)" || { echo "make: no Python 3.12 (looked in $(PYENV_ROOT)/versions)"; exit 1; }
	$(call make_venv,.venv-3.12,$(PYTHON_3.12))

.venv-3.13/$(STAMP_NAME): pyproject.toml
	@test -n "$(PYTHON_3.13)" || { echo "make: no Python 3.13 (looked in $(PYENV_ROOT)/versions)"; exit 1; }
	$(call make_venv,.venv-3.13,$(PYTHON_3.13))

venv-3.12: .venv-3.12/$(STAMP_NAME)
venv-3.13: .venv-3.13/$(STAMP_NAME)

# Debian's graphviz gives `dot`. For the tests: tmux (the viewer in a real terminal),
# postgresql (the tests start their own server), curl and openssl (real clients, TLS),
# iproute2 (simulated hosts: network namespaces, tests/hosts.py).
system-deps:
	@command -v dot >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install graphviz >/dev/null; }
	@command -v dot >/dev/null 2>&1 || { echo "make: could not install graphviz (dot)"; exit 1; }

test-deps: system-deps
	@command -v tmux >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install tmux >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { $(APT) update >/dev/null && $(APT) install postgresql >/dev/null; }
	@command -v curl >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install curl >/dev/null; }
	@command -v openssl >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install openssl >/dev/null; }
	@command -v ip >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install iproute2 >/dev/null; }

# The project's suite on every Python present (.venv's, then pyenv's 3.12 and 3.13), each
# with the C extension and again with CUTSCOPE_SPEEDUPS=0 (the pure-Python paths). Where
# the extension is not built (no C compiler), one run covers both, with a line saying so;
# the tests of the C paths themselves skip with their reason (tests/_cpaths.py).
#
# The runs without C leave out NOC_SKIP: modules that never reach a recording path, so
# the C extension changes nothing in them (the viewer and its renderings read stores that
# the other modules write; test_packaging builds a wheel; test_analysis is pure cut
# arithmetic; test_conformance runs `cutscope run`, which clears CUTSCOPE_* for the traced
# pass). test_viewer stays: one of its tests records a trace with cutscope.start.
NOC_SKIP = test_viewer_large.py test_render.py test_packaging.py test_analysis.py test_conformance.py
NOC_IGNORE = $(foreach f,$(NOC_SKIP),--ignore=tests/$(f))
SKIPPED_PYTHONS = $(foreach v,3.12 3.13,$(if $(PYTHON_$(v)),,echo "make: no Python $(v) in $(PYENV_ROOT)/versions: skipping it";))
RUN_SUITES = for bin in $(BIN) $(foreach v,$(OTHER_PYTHONS),.venv-$(v)/bin); do \
	  ver=$$($$bin/python -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'); \
	  if $$bin/python -c 'import sys; from cutscope.tracer import process; sys.exit(process.FAST is None)'; then \
	    echo "== Python $$ver, with the C extension: $$bin/pytest"; \
	    $$bin/pytest || failed="$$failed pytest/$$ver/C"; \
	    echo "== Python $$ver, CUTSCOPE_SPEEDUPS=0 (pure Python; leaves out $(NOC_SKIP)): $$bin/pytest"; \
	    CUTSCOPE_SPEEDUPS=0 $$bin/pytest $(NOC_IGNORE) || failed="$$failed pytest/$$ver/pure-Python"; \
	  else \
	    echo "== Python $$ver, no C extension built for it: one run on the pure-Python paths: $$bin/pytest"; \
	    $$bin/pytest || failed="$$failed pytest/$$ver/pure-Python"; \
	  fi; \
	done
REPORT = if [ -n "$$failed" ]; then echo "make: FAILED:$$failed"; exit 1; fi; echo "make: all passed"

# The project's suite on every Python present (RUN_SUITES), then CPython's own suites
# without and under cutscope run on .venv's Python (docs/conformance.md). Every run
# happens; the target fails at the end if any failed, and says which.
test: venv $(OTHER_STAMPS) test-deps
	@$(SKIPPED_PYTHONS)
	@failed=""; $(RUN_SUITES); \
	echo "== conformance: CPython's suites without and under cutscope run (docs/conformance.md)"; \
	nice $(BIN)/python conformance/run.py || failed="$$failed conformance"; \
	$(REPORT)

# The project's suite on every Python present, without the conformance runs.
test-pythons: venv $(OTHER_STAMPS) test-deps
	@$(SKIPPED_PYTHONS)
	@failed=""; $(RUN_SUITES); $(REPORT)

# CPython's own socket, asyncio, TLS, HTTP, mail, logging and queue suites, without and
# under `cutscope run`, compared test by test (docs/conformance.md). CONFORMANCE_PYTHON
# picks another interpreter, e.g. `make conformance CONFORMANCE_PYTHON=.venv-3.12/bin/python`.
CONFORMANCE_PYTHON ?= $(BIN)/python
conformance: venv
	nice $(BIN)/python conformance/run.py --python $(CONFORMANCE_PYTHON)

demo: venv system-deps
	$(BIN)/python examples/demo.py

# The `bench` extra (aiohttp, for bench_http.py) is installed here, not by `make test`.
bench: venv
	@$(BIN)/python -c "import aiohttp" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-3.12 .venv-3.13 build dist *.egg-info .pytest_cache .hypothesis
