"""A difference between desired and actual QoS state, as verification and
status report it (OVSDB, kernel, libvirt's tc on taps).

Its own small module so the kernel read-back (qos_hooks.kernel.tc, tap_status), the
OVS backend and status share one type without importing each other.
"""

from qos_hooks.core.records import Record


class Difference(Record):
    port: str
    layer: str           # ovsdb | kernel
    key: str
    desired: object
    actual: object
    fatal: bool = True   # False: reported, not counted as drift (see docs)
    note: str = ""

    def __str__(self):
        s = "%s %s %s: desired %s, actual %s" % (self.port, self.layer, self.key,
                                                   self.desired, self.actual)
        return s + (" (%s)" % self.note if self.note else "")

    def to_dict(self):
        return {"port": self.port, "layer": self.layer, "key": self.key,
                "desired": self.desired, "actual": self.actual, "fatal": self.fatal,
                "note": self.note}
