"""setup.py shim: the metadata lives in pyproject.toml (PEP 621).

Kept for tools that still call ``setup.py`` directly, and for one job
pyproject.toml cannot express: the host files that ``qos-hooks install``
copies (VDSM hooks, libvirt qemu.d hook, root helper, sudoers drop-in,
example config) live at the top of the source tree, where the RPM spec also
takes them from; build_py copies them into ``qos_hooks/data`` so a wheel
carries them (qos_hooks/cli/install.py looks there first, then next to the
package for a source checkout or an editable install).
"""
import os
import sys

import setuptools
from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# Keep in step with MANIFEST.in (the sdist) and qos_hooks/cli/install.py (SRC_*).
HOST_DIRS = ("hooks", "libvirt-hooks", "libexec", "sudoers", "systemd")
# examples/: the example config (qos-hooks install copies it) and the example
# domains that `qos-hooks dry-run --example` runs (qos_hooks/core/examples.py)
HOST_FILES = ("examples/qos-hooks.conf", "examples/ovirt-guest.xml", "examples/ovs-guest.xml")


def _host_files():
    for d in HOST_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, d)):
            dirnames[:] = sorted(n for n in dirnames if n != "__pycache__")
            for name in sorted(filenames):
                if not name.endswith((".pyc", "~")):
                    yield os.path.relpath(os.path.join(dirpath, name), HERE)
    for f in HOST_FILES:
        if os.path.isfile(os.path.join(HERE, f)):
            yield f


class build_py(_build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs read the files from the source tree
        for rel in _host_files():
            dest = os.path.join(self.build_lib, "qos_hooks", "data", rel)
            self.mkpath(os.path.dirname(dest))
            self.copy_file(os.path.join(HERE, rel), dest, preserve_mode=True)


# setuptools < 61 ignores [project] in pyproject.toml and would build a
# package called UNKNOWN, version 0.0.0, without the qos_hooks package: fail
# loudly instead (EL9 ships setuptools 53; rpm/qos-hooks.spec does not need it).
if int(setuptools.__version__.split(".")[0]) < 61:
    sys.exit("qos-hooks needs setuptools >= 61 to read pyproject.toml (this is %s): "
             "use pip with build isolation, or build the RPMs (make rpm)"
             % setuptools.__version__)

setup(cmdclass={"build_py": build_py})
