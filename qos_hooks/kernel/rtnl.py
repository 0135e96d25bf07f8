"""A minimal rtnetlink reader for the apply path: links by name, qdiscs,
htb classes and ingress filters, straight from the kernel (no ``tc`` text).

Why not pyroute2 here: importing anything from pyroute2 0.9 runs its package
``__init__``, which imports every socket class it has (ndb, ipdb, conntrack,
asyncio...): 130-150 ms measured on this machine kind, and even the message
classes alone (``pyroute2.netlink.rtnl.tcmsg`` + ``ifinfmsg`` with the
package ``__init__`` bypassed) cost 120 ms.  Its 0.9 core also runs every
request through an asyncio loop: 258 requests for a 128-port read-back took
0.36 s.  This module uses the standard library's ``AF_NETLINK`` socket and
``struct``: one request per device where the kernel offers no namespace-wide
dump, every reply parsed only as far as the read-back needs.  pyroute2 stays
for what writes tc state and for the metrics' statistics
(qos_hooks.kernel.tc ``_iproute``).

Kernel facts used (include/uapi/linux/{netlink,rtnetlink,pkt_sched}.h,
net/sched/sch_api.c, net/sched/cls_api.c):

* ``RTM_GETQDISC`` dumps every qdisc of the namespace; ``RTM_GETTCLASS`` and
  ``RTM_GETTFILTER`` dumps need ``tcm_ifindex`` (tc_dump_tclass /
  tc_dump_tfilter look the device up and return nothing without one), so
  classes and filters are read per device.  One dump at a time per socket
  (netlink_dump_start answers EBUSY otherwise): each dump is read to its
  ``NLMSG_DONE`` before the next request.
* ``RTM_GETLINK`` with ``IFLA_IFNAME`` answers one link (or ENODEV); those
  are not dumps, so a batch of them is sent in one ``send`` and the replies
  read back in order.
* ``struct tc_htb_opt``: rate (tc_ratespec, 12 bytes, ``rate`` at offset 8),
  ceil (same, at 12), then ``buffer`` and ``cbuffer`` (psched ticks) at 24
  and 28; ``TCA_HTB_RATE64``/``CEIL64`` carry rates above 2^32-1 bytes/s.
  ``struct tc_htb_glob``: ``defcls`` at offset 8.
"""

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
RTM_NEWTCLASS, RTM_GETTCLASS = 40, 42
RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
IFLA_IFNAME = 3
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
CLONE_NEWNET = 0x40000000

_NLMSG = struct.Struct("=IHHII")          # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")        # family, type, index, flags, change
_TCMSG = struct.Struct("=BxxxiIII")       # family, ifindex, handle, parent, info
_RTA = struct.Struct("=HH")               # len, type
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
RECV_SIZE = 1 << 16
LINK_BATCH = 64


def _align(n):
    return (n + 3) & ~3


def attrs(data, start, end):
    """{type: payload} of the rtattrs in data[start:end] (nested flag cleared)."""
    out = {}
    while start + 4 <= end:
        alen, atype = _RTA.unpack_from(data, start)
        if alen < 4:
            break
        out[atype & 0x3FFF] = data[start + 4:start + alen]
        start += _align(alen)
    return out


def _cstr(b):
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


class NetlinkError(OSError):
    pass


def _setns(fd):
    setns = getattr(os, "setns", None)       # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _open_socket():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, 0))
    except BaseException:
        s.close()
        raise
    return s


def _open_in_netns(netns):
    """A netlink socket of network namespace ``netns`` (a name under
    /var/run/netns or a path), opened from a short-lived thread that enters
    the namespace: this thread's own namespace never changes.  A socket keeps
    the namespace it was created in."""
    import threading
    path = netns if netns.startswith("/") else os.path.join("/var/run/netns", netns)
    box = {}

    def enter():
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["sock"] = _open_socket()
        except OSError as e:
            box["error"] = e
    t = threading.Thread(target=enter, name="qos-hooks-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class Rtnl:
    """One rtnetlink socket (in ``netns`` when given); read-only requests."""

    def __init__(self, netns=None):
        self.sock = _open_in_netns(netns) if netns else _open_socket()
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, mtype, flags, body):
        self.seq += 1
        return self.seq, _NLMSG.pack(_NLMSG.size + len(body), mtype, flags, self.seq, 0) + body

    def _messages(self):
        """Yield (type, seq, data, payload offset, end) for each message received."""
        while True:
            data = self.sock.recv(RECV_SIZE)
            off = 0
            while off + _NLMSG.size <= len(data):
                mlen, mtype, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
                if mlen < _NLMSG.size:
                    break
                yield mtype, seq, data, off + _NLMSG.size, off + mlen
                off += _align(mlen)

    def dump(self, mtype, body):
        """Every (type, data, payload offset, end) of one dump, to NLMSG_DONE."""
        seq, msg = self._request(mtype, NLM_F_REQUEST | NLM_F_DUMP, body)
        self.sock.send(msg)
        out = []
        for rtype, rseq, data, start, end in self._messages():
            if rseq != seq:
                continue
            if rtype == NLMSG_DONE:
                return out
            if rtype == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, start)[0]
                if err == 0:
                    return out
                raise NetlinkError(err, os.strerror(err))
            out.append((rtype, data, start, end))

    def link_indexes(self, names):
        """{name: ifindex} for the names that exist (RTM_GETLINK by name)."""
        out = {}
        names = list(names)
        mask = struct.pack("=HHI", 8, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        for i in range(0, len(names), LINK_BATCH):
            batch, pending = names[i:i + LINK_BATCH], {}
            msgs = []
            for name in batch:
                raw = name.encode("utf-8") + b"\0"
                attr = struct.pack("=HH", 4 + len(raw), IFLA_IFNAME) + raw
                attr += b"\0" * (_align(len(attr)) - len(attr))
                seq, msg = self._request(RTM_GETLINK, NLM_F_REQUEST,
                                         _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr + mask)
                pending[seq] = name
                msgs.append(msg)
            self.sock.send(b"".join(msgs))
            for rtype, seq, data, start, end in self._messages():
                name = pending.pop(seq, None)
                if name is None:
                    continue
                if rtype == RTM_NEWLINK:
                    out[name] = _IFINFO.unpack_from(data, start)[2]
                elif rtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, start)[0]
                    if err not in (errno.ENODEV, 0):
                        raise NetlinkError(err, "link %s: %s" % (name, os.strerror(err)))
                if not pending:
                    break
        return out

    def qdiscs(self, indexes):
        """Qdiscs of the devices in ``indexes`` (one dump of the namespace):
        [(ifindex, handle, parent, kind, htb default class or None)]."""
        out = []
        for _t, data, start, end in self.dump(RTM_GETQDISC,
                                               _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _f, idx, handle, parent, _i = _TCMSG.unpack_from(data, start)
            if idx not in indexes:
                continue
            a = attrs(data, start + _TCMSG.size, end)
            kind = _cstr(a.get(TCA_KIND, b""))
            defcls = None
            if kind == "htb" and TCA_OPTIONS in a:
                opts = a[TCA_OPTIONS]
                init = attrs(opts, 0, len(opts)).get(TCA_HTB_INIT)
                if init is not None and len(init) >= 12:
                    defcls = _U32.unpack_from(init, 8)[0]
            out.append((idx, handle, parent, kind, defcls))
        return out

    def htb_classes(self, index):
        """[(handle, parent, rate B/s, ceil B/s, buffer, cbuffer ticks)] of one device."""
        out = []
        for _t, data, start, end in self.dump(RTM_GETTCLASS,
                                               _TCMSG.pack(socket.AF_UNSPEC, index, 0, 0, 0)):
            _f, _idx, handle, parent, _i = _TCMSG.unpack_from(data, start)
            a = attrs(data, start + _TCMSG.size, end)
            if _cstr(a.get(TCA_KIND, b"")) != "htb" or TCA_OPTIONS not in a:
                continue
            opts = attrs(a[TCA_OPTIONS], 0, len(a[TCA_OPTIONS]))
            parms = opts.get(TCA_HTB_PARMS)
            if not parms or len(parms) < 32:
                continue
            rate, ceil = _U32.unpack_from(parms, 8)[0], _U32.unpack_from(parms, 20)[0]
            if TCA_HTB_RATE64 in opts:
                rate = _U64.unpack_from(opts[TCA_HTB_RATE64])[0] or rate
            if TCA_HTB_CEIL64 in opts:
                ceil = _U64.unpack_from(opts[TCA_HTB_CEIL64])[0] or ceil
            buf, cbuf = struct.unpack_from("=II", parms, 24)
            out.append((handle, parent, rate, ceil, buf, cbuf))
        return out

    def filter_kinds(self, index, parent):
        """The kinds of the filters under ``parent`` of one device (those with a TCA_KIND)."""
        out = []
        for _t, data, start, end in self.dump(RTM_GETTFILTER,
                                               _TCMSG.pack(socket.AF_UNSPEC, index, 0, parent, 0)):
            kind = attrs(data, start + _TCMSG.size, end).get(TCA_KIND)
            if kind:
                out.append(_cstr(kind))
        return out
