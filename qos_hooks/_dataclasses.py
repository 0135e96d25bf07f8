"""Import :mod:`dataclasses` without paying for :mod:`inspect` at start-up.

:mod:`dataclasses` imports :mod:`inspect` at module level (Python 3.9-3.12),
and on Python 3.9 (EL9's interpreter) that drags in ``ast``, ``dis``,
``tokenize`` and ``linecache``: about as long as the whole rest of the
before_vm_start hook (bench/bench_before_vm_start.py).  ``dataclasses`` only
calls ``inspect.signature`` to build a docstring for a class that has none,
and every dataclass of the core has one.  So while ``dataclasses`` is first
imported, ``inspect`` is a proxy module that imports the real one on first
attribute access; right after, the proxy leaves ``sys.modules`` so every other
``import inspect`` gets the real module.  If anything does use ``inspect``
through ``dataclasses``, it still works, only without the saving.
"""

import sys
import types


class _InspectProxy(types.ModuleType):
    def __getattr__(self, name):
        import importlib
        real = sys.modules.get("inspect")
        if real is None or real is self:
            sys.modules.pop("inspect", None)
            real = importlib.import_module("inspect")
        return getattr(real, name)


if "dataclasses" not in sys.modules and "inspect" not in sys.modules:
    _proxy = _InspectProxy("inspect")
    sys.modules["inspect"] = _proxy
    try:
        import dataclasses  # noqa: F401
    finally:
        if sys.modules.get("inspect") is _proxy:
            del sys.modules["inspect"]

from dataclasses import asdict, dataclass, field, fields, replace  # noqa: E402,F401
