"""Logging an operator can grep.

Every line starts with ``qos-hooks`` and carries ``key=value`` context
(hook point, VM id, domain name), so ``journalctl | grep 'qos-hooks.*vm=UUID'``
or ``grep 'qos-hooks.*ERROR' /var/log/vdsm/vdsm.log`` finds it.  VDSM logs a
hook's stderr; libvirt logs a qemu hook's stderr to the domain log; the CLI
writes to stderr.

Every line is ONE line: values that reach the log from a domain XML, the
environment or a request (MAC, target dev, disk target, domain and profile
names, vmId) can hold a newline or other control characters, and
``<target dev='vda&#10;qos-hooks[1] ERROR forged'/>`` would otherwise print a
forged log line.  :func:`escape` is applied here, in the logger, to every
formatted message and to the context prefix -- not at each call site: a
character that is not printable becomes ``\\n``, ``\\r``, ``\\t``,
``\\xNN`` or ``\\uNNNN`` (a traceback, appended after the message, keeps
its lines).

Start-up cost matters here: ``before_vm_start`` runs in every VM start and
importing :mod:`logging` (with traceback, linecache, tokenize, textwrap) costs
about as much as the rest of the hook's imports together
(bench/bench_before_vm_start.py).  So when nothing in the process has
imported :mod:`logging` yet, :func:`setup` returns a small logger that writes
the very same lines itself; the first :func:`get` (a module that wants a
standard ``logging.Logger``) configures :mod:`logging` with the same context,
level and stream, so both kinds of logger write identical lines.
"""

import os
import sys

LOGGER_NAME = "qos_hooks"
LOG_LEVEL_ENV = "QOS_HOOKS_LOG_LEVEL"
FORMAT = "qos-hooks[%(process)d] %(levelname)s %(qos_context)s%(message)s"

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

# what the last setup() asked for: (context prefix, level number, stream)
_state = {"ctx": "", "level": 20, "stream": None, "real": False, "explicit": False,
          "lean": None}


def _level_number(level):
    level = level or os.environ.get(LOG_LEVEL_ENV) or "INFO"
    return _LEVELS.get(str(level).upper(), 20)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c):
    if c.isprintable():
        return c
    named = _NAMED.get(c)
    if named:
        return named
    o = ord(c)
    return "\\x%02x" % o if o < 0x100 else "\\u%04x" % o if o < 0x10000 else "\\U%08x" % o


def escape(text):
    """``text`` on one line, every non-printable character escaped (newline,
    carriage return, escape sequences, U+2028, NEL ...).  The one escaping
    function of the project's logging."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape_char(c) for c in text)


def _context_prefix(context):
    ctx = " ".join("%s=%s" % (k, escape(v)) for k, v in (context or {}).items() if v)
    return ctx + ": " if ctx else ""


class LeanLogger:
    """The part of ``logging.Logger`` the project uses, without :mod:`logging`."""

    def __init__(self, ctx, level, stream):
        self.ctx, self.level, self._stream = ctx, level, stream

    def _emit(self, levelname, levelno, msg, args, exc_text=None):
        if levelno < self.level:
            return
        if args:
            msg = msg % args
        line = "qos-hooks[%d] %s %s%s\n" % (os.getpid(), levelname, self.ctx, escape(msg))
        if exc_text:
            line += exc_text if exc_text.endswith("\n") else exc_text + "\n"
        stream = self._stream or sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # closed stderr: nowhere to log to
            pass

    def debug(self, msg, *args, **_kw):
        self._emit("DEBUG", 10, msg, args)

    def info(self, msg, *args, **_kw):
        self._emit("INFO", 20, msg, args)

    def warning(self, msg, *args, **_kw):
        self._emit("WARNING", 30, msg, args)

    def error(self, msg, *args, **_kw):
        self._emit("ERROR", 40, msg, args)

    def critical(self, msg, *args, **_kw):
        self._emit("CRITICAL", 50, msg, args)

    def exception(self, msg, *args, **_kw):
        import traceback  # only on the error path
        self._emit("ERROR", 40, msg, args, traceback.format_exc())

    def isEnabledFor(self, levelno):  # noqa: N802 (logging's name)
        return levelno >= self.level


def _setup_real():
    """Configure the standard ``qos_hooks`` logger from the last setup()."""
    import logging

    class _ContextFilter(logging.Filter):
        def filter(self, record):
            record.qos_context = _state["ctx"]
            # the message as one escaped line (escape); a traceback is
            # appended by the formatter afterwards, unescaped
            record.msg, record.args = escape(record.getMessage()), ()
            return True

    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(_state["stream"] or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(_state["level"])
    logger.propagate = False
    _state["real"] = True
    return logger


def setup(context=None, level=None, stream=None):
    """Configure the project's logging for this process; return its logger.

    The result has ``debug``, ``info``, ``warning``, ``error``, ``exception``
    (and is a real ``logging.Logger`` when :mod:`logging` is already loaded).
    """
    _state.update(ctx=_context_prefix(context), level=_level_number(level), stream=stream,
                  explicit=bool(level or os.environ.get(LOG_LEVEL_ENV)))
    if "logging" in sys.modules or _state["real"]:
        return _setup_real()
    _state["lean"] = LeanLogger(_state["ctx"], _state["level"], stream)
    return _state["lean"]


def apply_config_level(settings):
    """Apply ``log_level`` from the policy file's ``[settings]``.

    The command line (``--log-level``) and ``$QOS_HOOKS_LOG_LEVEL`` win: the
    file's level only replaces the default (INFO).
    """
    name = dict(getattr(settings, "extra", ()) or ()).get("log_level")
    if not name or _state["explicit"]:
        return
    level = _level_number(name)
    _state["level"] = level
    if _state["lean"] is not None:
        _state["lean"].level = level
    if _state["real"]:
        import logging
        logging.getLogger(LOGGER_NAME).setLevel(level)


def get(name=None):
    """A standard ``logging.Logger`` below ``qos_hooks`` (configured like setup())."""
    import logging
    if not _state["real"]:
        _setup_real()
    return logging.getLogger(LOGGER_NAME + ("." + name if name else ""))
