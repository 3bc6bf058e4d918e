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

.PHONY: demo test bench venv system-deps test-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# Debian's graphviz gives `dot`. For the tests: tmux (the viewer in a real terminal),
# postgresql (the tests start their own server), curl and openssl (real clients, TLS).
system-deps:
	@command -v dot >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install graphviz >/dev/null; }
	@command -v dot >/dev/null 2>&1 || { echo "make: could not install graphviz (dot)"; exit 1; }

test-deps: system-deps
	@command -v tmux >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install tmux >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { $(APT) update >/dev/null && $(APT) install postgresql >/dev/null; }
	@command -v curl >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install curl >/dev/null; }
	@command -v openssl >/dev/null 2>&1 || { $(APT) update >/dev/null && $(APT) install openssl >/dev/null; }

test: venv test-deps
	$(BIN)/pytest

demo: venv system-deps
	$(BIN)/python examples/demo.py

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
