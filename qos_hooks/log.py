"""Logging an operator can grep.

Every line starts with ``qos-hooks`` and carries ``key=value`` context
(hook point, VM id, domain name), so ``journalctl | grep 'qos-hooks.*vm=UUID'``
or ``grep 'qos-hooks.*ERROR' /var/log/vdsm/vdsm.log`` finds it.  VDSM logs a
hook's stderr; libvirt logs a qemu hook's stderr to the domain log; the CLI
writes to stderr.
"""

import logging
import os
import sys

LOGGER_NAME = "qos_hooks"
LOG_LEVEL_ENV = "QOS_HOOKS_LOG_LEVEL"


class _ContextFilter(logging.Filter):
    def __init__(self, context):
        super().__init__()
        self.context = context

    def filter(self, record):
        record.qos_context = self.context
        return True


def setup(context=None, level=None, stream=None):
    """Configure the project logger once for this process; return it."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    ctx = " ".join("%s=%s" % (k, v) for k, v in (context or {}).items() if v)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(
        "qos-hooks[%(process)d] %(levelname)s %(qos_context)s%(message)s"))
    handler.addFilter(_ContextFilter(ctx + ": " if ctx else ""))
    logger.addHandler(handler)
    level = level or os.environ.get(LOG_LEVEL_ENV) or "INFO"
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    logger.propagate = False
    return logger


def get(name=None):
    return logging.getLogger(LOGGER_NAME + ("." + name if name else ""))
