"""Fixtures shared by every test module, registered once here.

* ``ovs_sandbox``: a private ovsdb-server + ovs-vswitchd in a network
  namespace (tests/ovs_sandbox.py);
* ``host``: a real libvirtd + qemu (TCG) + Open vSwitch in the root network
  namespace (tests/libvirtd_host.py), one per test module;
* ``gold_policy``: writes the suite's standard policy file (tests/policies.py
  ``GOLD_CONF``: profiles ``gold`` and ``silver``, ``default_profile = gold``)
  for a given OVSDB remote and timeout, and returns its path.
"""

import pytest

from tests.ovs_sandbox import ovs_sandbox  # noqa: F401  (registers the fixture)
from tests.policies import GOLD_CONF


@pytest.fixture
def gold_policy(tmp_path):
    def write(remote="unix:%s" % (tmp_path / "no-ovsdb.sock"), timeout=2, extra="",
              name="qos-hooks.conf"):
        conf = tmp_path / name
        conf.write_text(GOLD_CONF.format(remote=remote, timeout=timeout, extra=extra))
        return conf
    return write


@pytest.fixture(scope="module")
def host():
    from tests.libvirtd_host import HostError, LibvirtdHost, missing_requirement
    from tests.ovs_sandbox import require
    require(missing_requirement())
    h = LibvirtdHost()
    try:
        h.start()
    except HostError as e:
        require("libvirtd test host could not start: %s" % e)
    try:
        yield h
    finally:
        h.stop()
