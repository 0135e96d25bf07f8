"""A JSON-RPC stream parser for the ``ovs`` library when it has no C parser.

The ``ovs`` package parses every JSON-RPC message with ``ovs.json.Parser``:
``ovs._json`` (C, built against libopenvswitch) when the package has it, a
character-by-character state machine in Python otherwise.  Which build has
what, checked on this machine kind (2026-11-29):

* Debian's python3-openvswitch 3.1 ships ``ovs/_json.cpython-311-*.so``;
  EL9's python3-openvswitch ships ``ovs._json`` too;
* the PyPI ``ovs`` 4.0.0 wheel installed in the project's venv has no
  ``ovs/_json*``: ``ovs.json.PARSER == 'PYTHON'``.  Its setup.py builds the
  extension only when libopenvswitch's headers are there and goes on without it.

With the pure-Python parser, the replies of one 128-port apply (216 KB of
JSON: schema, monitor reply, transaction reply, the update of the rows it
wrote) took 0.19 s of a 0.29 s whole-process run.  ``Parser`` here keeps the
``ovs.json.Parser`` interface that ovs.jsonrpc uses (``feed`` returns how many
characters it consumed, ``is_done``, ``finish`` returns the value or an error
string), finds where the top-level object or array ends with one regular
expression that steps over whole strings, and decodes it with the standard
library's ``json`` (C accelerated): the same Python values.  Anything else (a
top-level scalar, ``check_trailer``) goes to ovs's own parser.

``install(ovs)`` puts it in place only when ``ovs.json.PARSER`` is not the C one.
"""

import json
import re

import ovs.json

# from the scan position: any run of non-bracket text and whole strings, then
# the next bracket outside a string, or a quote that opens an incomplete
# string (wait for more input), or the end of the buffer
_STEP = re.compile(r'(?:[^"{}\[\]]+|"[^"\\]*(?:\\.[^"\\]*)*")*([{}\[\]]|"|\Z)', re.S)
_SPACE = " \t\r\n"
_decode = json.JSONDecoder().decode

# ovs's own class (its methods name the module's ``Parser``, so this class
# subclasses it: once installed, their ``Parser.__lex_start``... still resolve)
_original = getattr(ovs.json.Parser, "ovs_parser", ovs.json.Parser)


class Parser(_original):
    """Incremental parser of one JSON value (object or array) from a stream of str."""

    ovs_parser = _original

    def __new__(cls, *args, **kwargs):
        if args or kwargs.get("check_trailer"):
            return _ovs_parser(*args, **kwargs)
        return object.__new__(cls)

    def __init__(self, check_trailer=False):
        self.buf = ""            # the part still being scanned
        self.pos = 0             # scan position in buf
        self.depth = 0
        self.started = False
        self.slow = None         # ovs's own parser, for a top-level scalar
        self.done = False
        self.value = None
        self.error = None

    def feed(self, s):
        if self.done:
            return 0
        if self.slow is not None:
            n = self.slow.feed(s)
            self.done = self.slow.is_done()
            return n
        i = 0
        if not self.started:
            while i < len(s) and s[i] in _SPACE:
                i += 1
            if i == len(s):
                return i
            if s[i] not in "{[":
                self.slow = _ovs_parser()
                n = self.slow.feed(s)
                self.done = self.slow.is_done()
                return n
            self.started = True
        base = len(self.buf)
        self.buf += s[i:]
        pos, depth, buf = self.pos, self.depth, self.buf
        while True:
            m = _STEP.match(buf, pos)
            c = m.group(1)
            if c == "{" or c == "[":
                depth += 1
                pos = m.end()
            elif c == "}" or c == "]":
                depth -= 1
                pos = m.end()
                if depth == 0:
                    self._finish_value(buf[:pos])
                    return i + pos - base
            else:
                # end of input, or an incomplete string: rescan from its quote
                pos = m.start(1)
                break
        self.pos, self.depth = pos, depth
        return len(s)

    def _finish_value(self, text):
        self.done = True
        try:
            self.value = _decode(text)
        except ValueError as e:
            self.error = "syntax error: %s" % e
        self.buf = ""

    def is_done(self):
        return self.done

    def finish(self):
        if self.slow is not None:
            return self.slow.finish()
        if not self.done:
            return "unexpected end of input" if self.started else "empty input stream"
        return self.error if self.error is not None else self.value


def _ovs_parser(*args, **kwargs):
    """An instance of ovs's own pure-Python parser.  Built without calling the
    class: its ``__new__`` names the module's ``Parser``, this class once installed."""
    p = object.__new__(_original)
    p.__init__(*args, **kwargs)
    return p


def install(ovs):
    """Use this parser for ``ovs``'s JSON-RPC when ``ovs._json`` is absent."""
    if ovs.json.PARSER == ovs.json.PARSER_C or ovs.json.Parser is Parser:
        return False
    ovs.json.Parser = Parser
    return True
