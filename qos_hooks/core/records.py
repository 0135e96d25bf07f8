"""Small immutable value classes that cost nothing to define.

``@dataclass`` generates each class's methods by compiling source text with
``exec`` (six functions for a frozen class); on Python 3.9 (EL9) that is
about 0.3 ms per class, and the before_vm_start hook, which runs in every VM
start and is held to 1.5x the start-up of ``python3 -c 'import lxml.etree'``
(bench/bench_before_vm_start.py), imports more than a dozen of them.
:class:`Record` gives the same behaviour with shared methods instead:

* fields are the class's annotated attributes, in order (after the base
  class's); a class attribute gives the default, :func:`default` a factory;
* ``__init__`` takes them by position or keyword; instances are immutable
  (assignment raises :class:`FrozenInstanceError`, an AttributeError);
* ``==`` compares the field values of instances of the same class, ``hash``
  hashes them, ``repr`` shows them;
* :func:`replace` and :func:`asdict` work on records and on dataclasses.

Only the value types on the hook path use it; anything that wants
``dataclasses.replace`` or ``fields`` on its own types keeps ``@dataclass``.

Re-measured for the layout issue (2026-11-29, Python 3.9.18, ``-X importtime``
and a script defining 15 classes of 6 fields): ``import typing`` costs 5.6 ms
(cumulative, the ``re`` it needs already loaded) and 15 ``typing.NamedTuple``
classes 0.8 ms more; ``import dataclasses`` costs 10.2 ms (it imports
``inspect``) and 15 frozen dataclasses about 11 ms.  The before_vm_start
hook's whole budget above its floor (``python3 -c 'import lxml.etree'``,
about 30-35 ms here) is 0.5x, 15-17 ms, of which the hook already uses about
12 ms with the shipped config; either standard class would push it over
1.5x.  So the home-made record stays; ``typing``/``dataclasses`` stay off the
VM hook path.
"""

__all__ = ("Record", "FrozenInstanceError", "default", "replace", "asdict")


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a record (as ``dataclasses.FrozenInstanceError``)."""


class _Factory:
    __slots__ = ("factory",)

    def __init__(self, factory):
        self.factory = factory


def default(factory):
    """A default computed per instance: ``x: Thing = default(Thing)``."""
    return _Factory(factory)


_MISSING = object()


class Record:
    """Base of immutable value classes; see the module docstring."""

    __slots__ = ()
    _fields = ()
    _defaults = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        own = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_")]
        defaults = dict(cls._defaults)
        fields = list(cls._fields)
        for name in own:
            if name not in fields:
                fields.append(name)
            # the class attribute stays: instances shadow it, and a subclass
            # decorated with @dataclass still sees its defaults
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif name in defaults:
                del defaults[name]
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args, **kw):
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError("%s() takes %d positional arguments but %d were given"
                            % (type(self).__name__, len(fields), len(args)))
        values = dict(zip(fields, args))
        for name, value in kw.items():
            if name not in fields:
                raise TypeError("%s() got an unexpected keyword argument %r"
                                % (type(self).__name__, name))
            if name in values:
                raise TypeError("%s() got multiple values for argument %r"
                                % (type(self).__name__, name))
            values[name] = value
        setter = object.__setattr__
        for name in fields:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                d = self._defaults.get(name, _MISSING)
                if d is _MISSING:
                    raise TypeError("%s() missing required argument %r"
                                    % (type(self).__name__, name))
                value = d.factory() if isinstance(d, _Factory) else d
            setter(self, name, value)

    def __setattr__(self, name, value):
        raise FrozenInstanceError("cannot assign to field %r" % name)

    def __delattr__(self, name):
        raise FrozenInstanceError("cannot delete field %r" % name)

    def _values(self):
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self):
        return hash((self.__class__.__name__,) + self._values())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in self._fields))


def replace(obj, **changes):
    """A copy of ``obj`` (a Record or a dataclass) with some fields changed."""
    if isinstance(obj, Record):
        values = {n: getattr(obj, n) for n in obj._fields}
        values.update(changes)
        return type(obj)(**values)
    import dataclasses
    return dataclasses.replace(obj, **changes)


def asdict(obj):
    """Records and dataclasses as nested dicts (tuples and lists kept as such)."""
    if isinstance(obj, Record):
        return {n: asdict(getattr(obj, n)) for n in obj._fields}
    if hasattr(type(obj), "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj
