# The two commands in the README:
#   make dry-run   the main job on the shipped example (makes .venv/ first)
#   make check     the whole test suite (installs Debian packages, makes .venv/ first)
#
# Everything Python goes into the virtual environment .venv/ of this checkout,
# made from PYTHON: the distribution's /usr/bin/python3 when there is one (what
# an operator has; Debian 12 marks it externally managed, PEP 668, so nothing
# is ever pip-installed into it), else the first python3 on PATH.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
VPY := $(VENV)/bin/python
# the tests start hook executables (#!/usr/bin/env python3): the venv's python3 first
VENV_PATH := $(abspath $(VENV))/bin:$(PATH)
EXAMPLE ?= examples/ovirt-guest.xml

.PHONY: dry-run check deps venv lint test

dry-run:
	@bash tools/mkvenv.sh $(PYTHON) $(VENV)
	$(VPY) -m qos_hooks dry-run --config examples/qos-hooks.conf $(EXAMPLE)

venv:
	bash tools/mkvenv.sh $(PYTHON) $(VENV) ovs,libvirt,test

deps:
	PYTHON=$(PYTHON) VENV=$(VENV) bash tests/install-deps.sh

# Python 3.9 (EL9's interpreter) is checked statically: vermin finds any
# language or library feature newer than 3.9; if a 3.9 interpreter is on the
# machine, every file is also byte-compiled with it.
lint:
	$(VENV)/bin/vermin --target=3.9- --violations --eval-annotations --no-tips -q qos_hooks hooks bench tests
	$(VPY) -m pyflakes qos_hooks bench tools hooks/*/50_qos_hooks libvirt-hooks/qemu.d/50_qos_hooks libexec/qos-hooks-helper
	@py39=$$(ls /root/.pyenv/versions/3.9*/bin/python3.9 2>/dev/null | head -n1); \
	if [ -z "$$py39" ] && python3.9 -c '' 2>/dev/null; then py39=python3.9; fi; \
	if [ -n "$$py39" ]; then \
	  $$py39 -m compileall -q qos_hooks hooks bench tests >/dev/null && echo "python3.9 ($$py39): byte-compiles"; \
	else echo "no python3.9 interpreter on this machine: vermin check only"; fi

test:
	PATH=$(VENV_PATH) $(VPY) -m pytest -q

check: deps lint test

# Packaging (issue 6): `make rpm` builds qos-hooks, python3-qos-hooks,
# vdsm-hook-qos, qos-hooks-libvirt and the SRPM from a fresh sdist into dist/
# (rpm/qos-hooks.spec; Debian's `rpm` package provides rpmbuild), then runs
# rpmlint with rpm/rpmlint.toml.  `make man` regenerates docs/qos-hooks.1
# from the CLI's own argparse help (the RPM generates its copy the same way;
# tests/cli/test_manpage.py fails when the committed page is out of date).
.PHONY: rpm man

rpm:
	bash tools/build-rpm.sh --outdir dist --workdir build/rpm
	@if command -v rpmlint >/dev/null; then rpmlint -c rpm/rpmlint.toml dist/*.rpm rpm/qos-hooks.spec; \
	else echo "rpmlint not installed: skipped (apt-get install rpmlint)"; fi

man:
	$(VPY) tools/gen-manpage.py --output docs/qos-hooks.1
	$(VPY) tools/gen-manpage.py --section 5 --output docs/qos-hooks.conf.5
	@echo "docs/qos-hooks.1, docs/qos-hooks.conf.5 (view: man -l docs/qos-hooks.1)"
