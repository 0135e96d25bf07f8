"""The host network state file: what the before hook took out of a
setupNetworks request for OVS networks (``pending``) and what is on the OVS
bridges (``applied``, what ``qos-hooks status`` compares against)."""

import fcntl
import json
import os
from dataclasses import dataclass, field
from typing import Dict

from qos_hooks.core.errors import QosHooksError

STATE_ENV = "QOS_HOOKS_HOSTNET_STATE"
DEFAULT_STATE_PATH = "/var/lib/qos-hooks/hostnet.json"
STATE_VERSION = 1


# -- the state file (OVS networks) --------------------------------------------------

def state_path(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get(STATE_ENV) or DEFAULT_STATE_PATH


@dataclass
class State:
    """``{"version": 1, "pending": {net: entry}, "applied": {net: entry}}``.

    An entry: ``{"hostQos": {...} | null, "uplink": "eth1", "vlan": 10 | null,
    "profile": "gold" | null}``.  ``pending`` is written by the before hook
    (what this setupNetworks asks for), ``applied`` by the after hook (what is
    on the OVS bridges and what ``status`` compares against).
    """

    path: str
    pending: Dict[str, dict] = field(default_factory=dict)
    applied: Dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path):
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as e:
            raise QosHooksError("cannot read host network QoS state %s: %s" % (path, e))
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise QosHooksError("host network QoS state %s: unknown format" % path)
        return cls(path, dict(data.get("pending") or {}), dict(data.get("applied") or {}))

    def save(self):
        """Write atomically: a temporary file in the same directory, fsync,
        rename (qos_hooks.core.fileio.write_atomic)."""
        from qos_hooks.core.fileio import write_atomic
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        data = json.dumps({"version": STATE_VERSION, "pending": self.pending,
                           "applied": self.applied}, indent=1, sort_keys=True) + "\n"
        write_atomic(self.path, data.encode("utf-8"), mode=0o600)


class StateLock:
    """An exclusive lock next to the state file (supervdsmd serialises
    setupNetworks already; this guards against ``qos-hooks`` run by hand)."""

    def __init__(self, path):
        self.path = path + ".lock"
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _entry(decision):
    qos = decision.qos if decision.qos is not None and not decision.qos.is_empty() else None
    return {"hostQos": qos.to_json() if qos else None,
            "uplink": decision.uplink, "vlan": decision.vlan, "profile": decision.profile}
