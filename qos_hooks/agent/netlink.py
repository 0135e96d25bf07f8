"""Two netlink dumps the agent's safety net needs, read with the socket module.

``root_qdiscs(netns)`` -> ({device name: ifindex}, {ifindex: (root qdisc kind,
handle)}), from one RTM_GETLINK and one RTM_GETQDISC dump (rtnetlink(7),
linux/rtnetlink.h, linux/pkt_sched.h).  Only the interface name and the qdisc
kind are read from each message; nothing else is decoded.  qos_hooks.kernel.tc (pyroute2)
stays the reader for everything that needs classes, rates and filters.

``netns``: a name under /var/run/netns (as ``ip netns`` makes them): the
socket is opened by a short-lived thread that entered that namespace
(setns(2) changes only the calling thread's namespace).
"""

import ctypes
import os
import socket
import struct
import threading

from qos_hooks.core.errors import BackendUnavailable

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME = 3
TCA_KIND = 1
TC_H_ROOT = 0xFFFFFFFF
CLONE_NEWNET = 0x40000000

_NLMSG = struct.Struct("=IHHII")       # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")     # family, type, index, flags, change
_TCMSG = struct.Struct("=BxxxiIII")    # family, ifindex, handle, parent, info
_RTA = struct.Struct("=HH")            # len, type


def _open(netns):
    if not netns:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    out = {}

    def enter():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join("/var/run/netns", netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except OSError as e:
            out["error"] = e
    t = threading.Thread(target=enter, name="netns-%s" % netns)
    t.start()
    t.join()
    if "error" in out:
        raise BackendUnavailable("netlink in netns %s: %s" % (netns, out["error"]))
    return out["sock"]


def _attrs(data, off, end):
    while off + _RTA.size <= end:
        ln, typ = _RTA.unpack_from(data, off)
        if ln < _RTA.size:
            break
        yield typ, data[off + _RTA.size:off + ln]
        off += (ln + 3) & ~3


def _dump(sock, msg_type, body, seq):
    req = _NLMSG.pack(_NLMSG.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    sock.send(req + body)
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + _NLMSG.size <= len(data):
            ln, typ, _, _, _ = _NLMSG.unpack_from(data, off)
            if ln < _NLMSG.size:
                return
            if typ == NLMSG_DONE:
                return
            if typ == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                raise BackendUnavailable("netlink dump %d: %s" % (msg_type, os.strerror(err)))
            yield typ, data, off + _NLMSG.size, off + ln
            off += (ln + 3) & ~3


def root_qdiscs(netns=None):
    sock = _open(netns)
    try:
        names = {}
        for typ, data, off, end in _dump(sock, RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0), 1):
            if typ != RTM_NEWLINK:
                continue
            index = _IFINFO.unpack_from(data, off)[2]
            for a, val in _attrs(data, off + _IFINFO.size, end):
                if a == IFLA_IFNAME:
                    names[val.rstrip(b"\0").decode("utf-8", "replace")] = index
                    break
        roots = {}
        for typ, data, off, end in _dump(sock, RTM_GETQDISC, _TCMSG.pack(0, 0, 0, 0, 0), 2):
            if typ != RTM_NEWQDISC:
                continue
            _, index, handle, parent, _ = _TCMSG.unpack_from(data, off)
            if parent != TC_H_ROOT:
                continue
            for a, val in _attrs(data, off + _TCMSG.size, end):
                if a == TCA_KIND:
                    roots[index] = (val.rstrip(b"\0").decode(), handle)
                    break
        return names, roots
    finally:
        sock.close()
