"""Where the shipped examples are, for ``--help``, errors and ``dry-run --example``.

Every install carries them:

* a wheel or sdist build copies ``examples/`` into ``qos_hooks/data/examples``
  (setup.py build_py);
* the RPM installs them as documentation: ``/usr/share/doc/qos-hooks/examples``
  (rpm/qos-hooks.spec ``%doc``);
* a source checkout or an editable install has ``examples/`` next to the package.

Only :mod:`os` is imported: ``qos-hooks --help`` calls this.
"""

import os

CONFIG = "qos-hooks.conf"
DOMAIN = "ovirt-guest.xml"
RPM_DOC_DIR = "/usr/share/doc/qos-hooks/examples"


def candidates():
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the qos_hooks package
    return (os.path.join(pkg, "data", "examples"), os.path.join(os.path.dirname(pkg), "examples"),
            RPM_DOC_DIR)


def directory():
    """The examples directory of this install, or None when none is found."""
    for d in candidates():
        if os.path.isfile(os.path.join(d, CONFIG)) and os.path.isfile(os.path.join(d, DOMAIN)):
            return d
    return None


def path(name):
    d = directory()
    return os.path.join(d, name) if d else None


def hint():
    """One phrase naming the example config, for error messages."""
    p = path(CONFIG)
    return ("see the example %s" % p) if p else \
        "see examples/qos-hooks.conf in the source or %s" % RPM_DOC_DIR
