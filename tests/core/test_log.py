"""qos_hooks.core.log: the lean logger writes the same lines as logging would, and
[settings] log_level applies unless the command line or environment say otherwise."""

import io
import logging
import os
import subprocess
import sys

from qos_hooks.core import log
from qos_hooks.core import policy
import pytest

from tests.core_helpers import ROOT


@pytest.fixture(autouse=True)
def restore_logging():
    """These tests reconfigure the process-wide logger: put it back after."""
    state = dict(log._state)
    logger = logging.getLogger(log.LOGGER_NAME)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    log._state.clear()
    log._state.update(state)
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def settings(level):
    return policy.parse_config("[settings]\nlog_level = %s\n" % level).settings


def test_lean_logger_format_and_levels(monkeypatch):
    monkeypatch.delenv(log.LOG_LEVEL_ENV, raising=False)
    out = io.StringIO()
    lean = log.LeanLogger("hook=x vm=1: ", 20, out)
    lean.debug("hidden")
    lean.info("a %s", "b")
    try:
        raise ValueError("boom")
    except ValueError:
        lean.exception("failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "qos-hooks[%d] INFO hook=x vm=1: a b" % os.getpid()
    assert lines[1] == "qos-hooks[%d] ERROR hook=x vm=1: failed" % os.getpid()
    assert lines[2].startswith("Traceback") and lines[-1] == "ValueError: boom"


def test_real_logger_same_format_and_config_level(monkeypatch):
    # under pytest logging is loaded: setup() configures the real logger
    monkeypatch.delenv(log.LOG_LEVEL_ENV, raising=False)
    out = io.StringIO()
    logger = log.setup({"cmd": "t"}, stream=out)
    assert isinstance(logger, logging.Logger)
    logger.info("one")
    log.apply_config_level(settings("ERROR"))
    logger.warning("hidden")
    logger.error("two")
    assert out.getvalue() == "qos-hooks[%d] INFO cmd=t: one\nqos-hooks[%d] ERROR cmd=t: two\n" % (
        os.getpid(), os.getpid())


def test_explicit_level_beats_the_config(monkeypatch):
    monkeypatch.setenv(log.LOG_LEVEL_ENV, "DEBUG")
    out = io.StringIO()
    logger = log.setup({}, stream=out)
    log.apply_config_level(settings("ERROR"))
    logger.debug("shown")
    assert "DEBUG shown" in out.getvalue()


def test_lean_logger_in_a_fresh_process():
    """Without logging loaded, setup() returns the lean logger and the config
    level applies to it; a later get() configures logging identically."""
    code = (
        "import sys; from qos_hooks.core import log, policy\n"
        "lg = log.setup({'hook': 'h'})\n"
        "assert type(lg).__name__ == 'LeanLogger' and 'logging' not in sys.modules\n"
        "lg.info('lean')\n"
        "log.apply_config_level(policy.parse_config('[settings]\\nlog_level = WARNING\\n')"
        ".settings)\n"
        "lg.info('hidden')\n"
        "log.get('x').warning('real')\n")
    env = {k: v for k, v in os.environ.items() if k != log.LOG_LEVEL_ENV}
    env["PYTHONPATH"] = ROOT
    p = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [l.split(" ", 1)[1] for l in p.stderr.decode().splitlines()]
    assert lines == ["INFO hook=h: lean", "WARNING hook=h: real"]
