"""``qos-hooks agent``: keep every VM's QoS true between hook calls (docs/agent.md).

One process, three inputs, one worker:

* libvirt domain events through libvirt-python's event loop
  (``virEventRegisterDefaultImpl`` + a thread running
  ``virEventRunDefaultImpl``): lifecycle (start), device added/removed,
  tunable and metadata changes.  The callbacks only note "domain X needs a
  look, because Y" and wake the worker.
* an OVSDB monitor: the same ``ovs`` IDL replica the backend uses
  (qos_hooks.ovs.ovsdb.Connection), kept open; every Interface/Port/QoS/Queue
  row that appears, changes or vanishes and names a domain (libvirt's
  ``vm-id``, our ``qos-hooks-vm-id``) notes that domain.  The IDL reconnects on
  its own after an ovsdb-server restart; the whole replica is re-sent then,
  which notes every domain (a full reconcile).
* ovs-vswitchd restarts: a restart changes nothing in OVSDB when the
  configuration is unchanged, so the agent watches ovs-vswitchd's pid file
  (inotify on the OVS run directory: a new daemon renames its pid file into
  place, lib/daemon-unix.c make_pidfile); then it waits until the new daemon
  applied the configuration (``cur_cfg >= next_cfg``), puts the host network
  flows back (qos_hooks.hostnet.ovs.resync_host_networks) and verifies every VM port.

The worker (the main thread, which alone uses the IDL) waits until a burst of
events has been quiet for ``debounce`` seconds (at most ``max_delay``), then
reconciles all noted domains in ONE pass (qos_hooks.agent.reconcile.run: one
snapshot, one transaction, one verification), and logs each repair with its
reason.  A full reconcile of every running domain runs at start, after every
(re)connection, and every ``interval`` seconds (the safety net).

Desired state is read from libvirt each time (live XML ``<bandwidth>``;
profile from the qos-hooks metadata element or ``default_profile``): the
agent keeps no state of its own that a restart would lose.

Counters for a metrics exporter: ``Agent.health`` (:class:`Health`).
"""

import collections
import ctypes
import json
import os
import signal
import socket
import struct
import threading
import time

from qos_hooks.core import log as _log
from qos_hooks.core import policy
from qos_hooks.core.errors import BackendUnavailable, ConfigError, QosHooksError

LOG = _log.get("agent")

DEFAULT_URI = "qemu:///system"
DEFAULT_INTERVAL = 300.0
DEFAULT_DEBOUNCE = 0.1
MAX_DELAY = 1.0             # a burst never delays a reconcile longer than this
BACKOFF = (0.5, 1, 2, 4, 8, 15, 30)
VSWITCHD_PIDFILE = "ovs-vswitchd.pid"
VSWITCHD_WAIT = 15.0        # for a restarted ovs-vswitchd to apply the configuration

LIBVIRT_VM_KEY = "vm-id"


# -- sd_notify ----------------------------------------------------------------------

def sd_notify(message, environ=None):
    """Send ``message`` (e.g. ``READY=1``) to systemd's $NOTIFY_SOCKET; False without one.

    The protocol (sd_notify(3)): one datagram on an AF_UNIX socket whose path
    is in $NOTIFY_SOCKET; a leading ``@`` means the abstract namespace.
    """
    environ = os.environ if environ is None else environ
    addr = environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode("utf-8"))
    except OSError as e:
        (LOG.debug if message.startswith("STOPPING") else LOG.warning)(
            "sd_notify(%s) to %s failed: %s", message.split("\n")[0], addr, e)
        return False
    return True


# -- health (what a metrics exporter reads) ----------------------------------------

class Health:
    """Plain counters and gauges; read them with :meth:`to_dict` (thread-safe).

    * ``reconciles[trigger]``: passes run (``event``, ``full``, ``vswitchd-restart``)
    * ``repairs[kind]``: changes made, by kind (agent_reconcile kinds + ``profile``)
    * ``latencies[kind]``: recent event-to-verified seconds (``hotplug``,
      ``domiftune``, ``start``, ``ovsdb``, ``vswitchd-restart``...)
    * ``libvirt_connected`` / ``ovsdb_connected``: connection state
    * ``errors[what]``: failed passes and connections
    """

    #: buckets (seconds) of the event-to-verified histogram a metrics exporter serves
    BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

    def __init__(self):
        self._lock = threading.Lock()
        # kind -> [count per bucket (not cumulative) ..., +Inf], sum, count
        self.histograms = {}
        self.reconciles = collections.Counter()
        self.repairs = collections.Counter()
        self.errors = collections.Counter()
        self.latencies = collections.defaultdict(lambda: collections.deque(maxlen=1024))
        self.libvirt_connected = False
        self.ovsdb_connected = False
        self.libvirt_connects = 0
        self.vswitchd_restarts = 0
        self.last_full_reconcile = None     # time.time() of the last full pass
        self.started = time.time()

    def count(self, counter, key, n=1):
        with self._lock:
            getattr(self, counter)[key] += n

    def observe(self, kind, seconds):
        with self._lock:
            self.latencies[kind].append(seconds)
            h = self.histograms.setdefault(kind, [[0] * (len(self.BUCKETS) + 1), 0.0, 0])
            i = next((n for n, b in enumerate(self.BUCKETS) if seconds <= b), len(self.BUCKETS))
            h[0][i] += 1
            h[1] += seconds
            h[2] += 1

    def histogram(self, kind):
        """(cumulative (le, count) pairs ending with +Inf, sum, count) for ``kind``."""
        with self._lock:
            counts, total, n = self.histograms[kind]
            counts = list(counts)
        out, acc = [], 0
        for b, c in zip(self.BUCKETS + (float("inf"),), counts):
            acc += c
            out.append(("+Inf" if b == float("inf") else repr(b), acc))
        return out, total, n

    def set(self, **kw):
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)

    def to_dict(self):
        with self._lock:
            lat = {}
            for k, v in self.latencies.items():
                s = sorted(v)
                if s:
                    lat[k] = {"count": len(s), "p50": s[len(s) // 2],
                              "p99": s[min(len(s) - 1, int(len(s) * 0.99))], "max": s[-1]}
            return {"reconciles": dict(self.reconciles), "repairs": dict(self.repairs),
                    "errors": dict(self.errors), "latencies": lat,
                    "libvirt_connected": self.libvirt_connected,
                    "ovsdb_connected": self.ovsdb_connected,
                    "libvirt_connects": self.libvirt_connects,
                    "vswitchd_restarts": self.vswitchd_restarts,
                    "last_full_reconcile": self.last_full_reconcile,
                    "uptime": time.time() - self.started}


# -- inotify (ovs-vswitchd's pid file) ----------------------------------------------

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
_EVENT = struct.Struct("iIII")


class PidfileWatch:
    """Report when a new ovs-vswitchd writes its pid file (a (re)start)."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path).encode()
        self.fd = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            wd = libc.inotify_add_watch(fd, os.path.dirname(path).encode(),
                                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
            if wd < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, "inotify_add_watch %s" % os.path.dirname(path))
            self.fd = fd
        except (OSError, AttributeError) as e:
            LOG.warning("cannot watch %s (%s): ovs-vswitchd restarts are caught by the "
                        "periodic reconcile only", path, e)
        self._stamp = self.stamp()

    def stamp(self):
        try:
            st = os.stat(self.path)
            return (st.st_ino, st.st_mtime_ns)
        except OSError:
            return None

    def read(self):
        """True when the pid file was (re)written since the last call."""
        hit = False
        if self.fd is not None:
            while True:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                off = 0
                while off + _EVENT.size <= len(data):
                    _, mask, _, ln = _EVENT.unpack_from(data, off)
                    name = data[off + _EVENT.size:off + _EVENT.size + ln].rstrip(b"\0")
                    off += _EVENT.size + ln
                    if name == self.name:
                        hit = True
        stamp = self.stamp()
        if stamp is not None and stamp != self._stamp:
            hit = True
        if stamp is not None:
            self._stamp = stamp
        return hit and stamp is not None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -- what a domain needs -----------------------------------------------------------

class Pending:
    __slots__ = ("first", "causes", "profile", "libvirt", "kind")

    def __init__(self, now):
        self.first = now
        self.causes = []
        self.profile = False
        self.libvirt = False
        self.kind = None

    def note(self, cause, kind, profile, from_libvirt):
        if cause not in self.causes:
            self.causes.append(cause)
        self.profile = self.profile or profile
        self.libvirt = self.libvirt or from_libvirt
        # the latency kind: the latest libvirt-side reason wins over OVSDB echoes
        if self.kind is None or from_libvirt:
            self.kind = kind


class Agent:
    def __init__(self, config, *, uri=DEFAULT_URI, remote=None, timeout=None,
                 interval=DEFAULT_INTERVAL, debounce=DEFAULT_DEBOUNCE, netns=None,
                 vswitchd_pidfile=None, hostnet_state=None, environ=None):
        self.config = config
        self.uri = uri
        self.remote = remote or config.settings.ovsdb
        self.timeout = timeout or config.settings.ovsdb_timeout
        self.interval = interval
        self.debounce = debounce
        self.netns = netns
        self.environ = os.environ if environ is None else environ
        from qos_hooks.hostnet.ovs import ovs_rundir
        self.vswitchd_pidfile = vswitchd_pidfile or os.path.join(
            ovs_rundir(self.remote, self.environ), VSWITCHD_PIDFILE)
        self.hostnet_state = hostnet_state
        self.health = Health()
        self._lock = threading.Lock()
        self._pending = {}                   # domain uuid -> Pending
        self._full_requested = None          # reason for an extra full pass
        self._restart_at = None              # monotonic time a vswitchd restart was seen
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lv = None                      # libvirt connection
        self._lv_lost = False
        self._lv_retry = 0.0
        self._lv_attempt = 0
        self._lv_thread = None
        self._libvirt = None
        self._ovs = None                     # qos_hooks.ovs.ovsdb.Connection
        self._ovs_retry = 0.0
        self._ovs_attempt = 0
        self._ovs_was_connected = False
        self._next_full = 0.0
        self._known_bw = {}                  # domain uuid -> {target dev: Bandwidth}
        self._profile_failed = set()
        self._ready = False
        self._watch = None

    # -- wakeups -----------------------------------------------------------------
    def wake(self):
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def stop(self):
        self._stop = True
        self.wake()

    def note(self, uuid, cause, kind, profile=False, from_libvirt=True):
        if not uuid:
            return
        with self._lock:
            p = self._pending.get(uuid)
            if p is None:
                p = self._pending[uuid] = Pending(time.monotonic())
            p.note(cause, kind, profile, from_libvirt)
        self.wake()

    def request_full(self, reason):
        with self._lock:
            self._full_requested = self._full_requested or reason
        self.wake()

    # -- libvirt -------------------------------------------------------------------
    def _libvirt_module(self):
        if self._libvirt is None:
            from qos_hooks.virt.live import _libvirt
            self._libvirt = _libvirt()
            # errors are reported by the exceptions we catch, not on stderr
            self._libvirt.registerErrorHandler(lambda ctx, err: None, None)
            self._libvirt.virEventRegisterDefaultImpl()
            self._lv_thread = threading.Thread(target=self._event_loop, name="libvirt-events",
                                               daemon=True)
            self._lv_thread.start()
        return self._libvirt

    def _event_loop(self):
        lv = self._libvirt
        while not self._stop:
            try:
                lv.virEventRunDefaultImpl()
            except Exception as e:  # pragma: no cover - libvirt internal trouble
                LOG.error("libvirt event loop: %s", e)
                time.sleep(0.5)

    def _libvirt_connect(self):
        lv = self._libvirt_module()
        try:
            conn = lv.open(self.uri)
        except lv.libvirtError as e:
            raise BackendUnavailable("cannot connect to libvirt at %s: %s"
                                     % (self.uri, e.get_error_message()))
        try:
            conn.setKeepAlive(5, 3)
        except lv.libvirtError:  # pragma: no cover - remote drivers only
            pass
        conn.registerCloseCallback(self._on_close, None)
        E = lv
        for ev, cb in ((E.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                       (E.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device_added),
                       (E.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device_removed),
                       (E.VIR_DOMAIN_EVENT_ID_TUNABLE, self._on_tunable),
                       (getattr(E, "VIR_DOMAIN_EVENT_ID_METADATA_CHANGE", None),
                        self._on_metadata)):
            if ev is not None:
                conn.domainEventRegisterAny(None, ev, cb, None)
        self._lv = conn
        self._lv_lost = False
        self._lv_attempt = 0
        self.health.set(libvirt_connected=True)
        with self.health._lock:
            self.health.libvirt_connects += 1
        LOG.info("connected to libvirt at %s; subscribed to domain events", self.uri)

    def _on_close(self, conn, reason, opaque):
        self._lv_lost = True
        self.health.set(libvirt_connected=False)
        self.wake()

    def _on_lifecycle(self, conn, dom, event, detail, opaque):
        lv = self._libvirt
        if event == lv.VIR_DOMAIN_EVENT_STARTED:
            self.note(dom.UUIDString(), "start", "start", profile=True)
        elif event == lv.VIR_DOMAIN_EVENT_STOPPED:
            # hooks clear a stopped domain's rows; a pass collects what they missed
            self.request_full("domain %s stopped" % dom.name())

    def _on_device_added(self, conn, dom, alias, opaque):
        self.note(dom.UUIDString(), "hotplug of %s" % alias, "hotplug")

    def _on_device_removed(self, conn, dom, alias, opaque):
        self.note(dom.UUIDString(), "unplug of %s" % alias, "unplug")

    def _on_tunable(self, conn, dom, params, opaque):
        keys = sorted(params) if params else []
        self.note(dom.UUIDString(), "tunable change (%s)" % ", ".join(keys[:3]), "tunable")

    def _on_metadata(self, conn, dom, mtype, nsuri, opaque):
        from qos_hooks.core import profile_meta
        if nsuri == profile_meta.NS:
            self.note(dom.UUIDString(), "metadata change", "metadata", profile=True)

    def _libvirt_tick(self, now):
        """Keep the libvirt connection: reconnect with backoff after a loss."""
        if self._lv is not None and (self._lv_lost or not self._lv_alive()):
            LOG.warning("lost the connection to libvirt at %s; reconnecting", self.uri)
            self.health.set(libvirt_connected=False)
            try:
                self._lv.close()
            except Exception:
                pass
            self._lv = None
            self._lv_retry = now
        if self._lv is None and now >= self._lv_retry:
            try:
                self._libvirt_connect()
                self.request_full("libvirt (re)connected")
            except QosHooksError as e:
                delay = BACKOFF[min(self._lv_attempt, len(BACKOFF) - 1)]
                self._lv_attempt += 1
                self._lv_retry = now + delay
                self.health.count("errors", "libvirt-connect")
                (LOG.warning if self._lv_attempt <= 1 else LOG.debug)(
                    "%s; retrying in %.1fs", e, delay)

    def _lv_alive(self):
        try:
            return self._lv.isAlive()
        except Exception:
            return False

    # -- OVSDB ---------------------------------------------------------------------
    def _ovs_tick(self, now):
        if self._ovs is None and now >= self._ovs_retry:
            from qos_hooks.ovs.ovsdb import Connection, Deadline
            try:
                self._ovs = Connection(self.remote, Deadline(self.timeout))
            except QosHooksError as e:
                delay = BACKOFF[min(self._ovs_attempt, len(BACKOFF) - 1)]
                self._ovs_attempt += 1
                self._ovs_retry = now + delay
                self.health.count("errors", "ovsdb-connect")
                (LOG.warning if self._ovs_attempt <= 1 else LOG.debug)(
                    "%s; retrying in %.1fs", e, delay)
                return
            self._ovs_attempt = 0
            self._ovs.idl.notify = self._on_row
            self._ovs_was_connected = True
            self.health.set(ovsdb_connected=True)
            LOG.info("monitoring OVSDB at %s", self.remote)
            self.request_full("OVSDB connected")
        if self._ovs is not None:
            idl = self._ovs.idl
            idl.run()
            session = getattr(idl, "_session", None)
            up = (idl.state == idl.IDL_S_MONITORING
                  and (session is None or session.is_connected()))
            if up != self._ovs_was_connected:
                self._ovs_was_connected = up
                self.health.set(ovsdb_connected=up)
                if up:
                    LOG.info("OVSDB at %s is back (IDL reconnected)", self.remote)
                    self.request_full("OVSDB reconnected")
                else:
                    LOG.warning("lost OVSDB at %s; the IDL reconnects", self.remote)

    def _on_row(self, event, row, updates=None):
        """IDL callback: note the domain a changed VM port row belongs to."""
        from qos_hooks.ovs.mapping import OWNER_KEY
        try:
            table = row._table.name
        except AttributeError:
            return
        if table not in ("Interface", "Port", "QoS", "Queue"):
            return
        uuid = None
        name = None
        try:
            if table == "Interface":
                ids = row.external_ids
                uuid = ids.get(LIBVIRT_VM_KEY) or ids.get(OWNER_KEY)
                name = row.name
            elif table == "Port":
                name = row.name
                for iface in row.interfaces:
                    ids = iface.external_ids
                    uuid = ids.get(LIBVIRT_VM_KEY) or ids.get(OWNER_KEY)
                    if uuid:
                        break
            else:
                ids = row.external_ids
                uuid = ids.get(OWNER_KEY) or ids.get(LIBVIRT_VM_KEY)
                name = ids.get("ifname") or ids.get("qos-hooks-ifname")
        except Exception:   # a half-deleted row: nothing to learn
            return
        if uuid:
            self.note(uuid, "OVSDB %s %s %s" % (table, name or str(row.uuid)[:8], event),
                      "ovsdb", from_libvirt=False)

    # -- ovs-vswitchd restarts -----------------------------------------------------
    def _watch_tick(self, now):
        if self._watch is not None and self._watch.read():
            with self.health._lock:
                self.health.vswitchd_restarts += 1
            LOG.warning("ovs-vswitchd (re)started (%s rewritten)", self.vswitchd_pidfile)
            if self._restart_at is None:
                self._restart_at = now

    def _after_vswitchd_restart(self):
        t0 = self._restart_at
        conn = self._ovs
        from qos_hooks.ovs.ovsdb import Deadline
        conn.deadline = Deadline(VSWITCHD_WAIT)
        # bump next_cfg and wait until the new daemon applied it: then its
        # ports and qdiscs are in place and verifying them means something
        _, next_cfg, _ = conn.transact(lambda snap, txn: (None, True),
                                       comment="qos-hooks agent: wait for ovs-vswitchd")
        conn.wait_for_vswitchd(next_cfg)
        self._restart_at = None
        flows = self._hostnet_resync("ovs-vswitchd restart", retry_for=VSWITCHD_WAIT)
        if self._watch is not None:
            self._watch.read()      # the same restart's later pid file events
        res = self._full_pass("ovs-vswitchd restart", trigger="vswitchd-restart")
        dt = time.monotonic() - t0
        if res is not None and not res.fatal:
            self.health.observe("vswitchd-restart", dt)
        LOG.info("after the ovs-vswitchd restart: %s; %d VM port(s) verified, %d repair(s), "
                 "%.3fs after the restart was seen", flows,
                 sum(len(d.interfaces) for d in (res.dqs if res else ())),
                 len(res.repairs) if res else 0, dt)

    def _hostnet_resync(self, why, retry_for=0.0):
        """Put the remembered host network QoS back (qos_hooks.hostnet.ovs.resync_host_networks).

        ``retry_for``: a restarted ovs-vswitchd may not listen on its bridges'
        OpenFlow management sockets yet; retry (bounded) until it does."""
        from qos_hooks.hostnet import ovs as hostnet_ovs
        from qos_hooks.hostnet import state as hostnet_state
        path = self.hostnet_state or hostnet_state.state_path(self.environ)
        if not os.path.exists(path):
            return "no host network QoS remembered"
        end = time.monotonic() + retry_for
        while True:
            try:
                results = hostnet_ovs.resync_host_networks(self.remote, self.timeout,
                                                           state_file=path, logger=LOG)
            except QosHooksError as e:
                if time.monotonic() < end:
                    LOG.debug("host network resync after %s: %s; retrying", why, e)
                    time.sleep(0.1)
                    continue
                self.health.count("errors", "hostnet-resync")
                LOG.error("host network QoS not re-applied after %s: %s", why, e)
                return "host network flows NOT re-applied"
            break
        if not results:
            return "no host network QoS remembered"
        for r in results:
            (LOG.error if r.error else LOG.info)("host network, after %s: %s", why, r)
            if not r.error:
                self.health.count("repairs", "hostnet-flows")
        return "host network flows re-applied on %s" % ", ".join(r.uplink for r in results)

    # -- reconciling -----------------------------------------------------------------
    def _domains(self, uuids):
        """[(dom, DomainDoc)] of the running domains among ``uuids`` (None: all)."""
        from qos_hooks.core.domxml import DomainDoc
        lv = self._libvirt
        if uuids is None:
            doms = self._lv.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        else:
            doms = []
            for u in uuids:
                try:
                    doms.append(self._lv.lookupByUUIDString(u))
                except lv.libvirtError:
                    continue
        out = []
        for dom in doms:
            try:
                if not dom.isActive():
                    continue
                xml = dom.XMLDesc(0)
            except lv.libvirtError:
                continue      # went away meanwhile
            try:
                out.append((dom, DomainDoc(xml, "domain %s (live)" % dom.name())))
            except QosHooksError as e:
                LOG.error("domain %s: live XML not usable: %s", dom.name(), e)
        return out

    def _maybe_profile(self, dom, doc):
        """Apply the domain's profile live once per run of the domain (set --live)."""
        from qos_hooks.virt import live
        from qos_hooks.core import profile_meta
        from qos_hooks.core.domxml import DomainDoc
        meta = profile_meta.read(doc.root)
        wanted = meta.profile or self.config.settings.default_profile
        if not wanted or meta.applied == wanted:
            return doc, None
        key = (doc.uuid, wanted)
        if key in self._profile_failed:
            return doc, None
        lv = self._libvirt
        src = "metadata" if meta.profile else "default_profile"
        try:
            summary = live.set_domain(self._lv, doc.uuid, self.config,
                                      profile=meta.profile or None, live=True, ovs=False,
                                      logger=LOG)
            profile_meta.store(lv, dom, profile_meta.ProfileMeta(meta.profile, wanted),
                               lv.VIR_DOMAIN_AFFECT_LIVE)
        except (QosHooksError, lv.libvirtError) as e:
            self._profile_failed.add(key)
            self.health.count("errors", "profile")
            LOG.error("domain %s: profile %s (%s) not applied: %s", doc.name, wanted, src, e)
            return doc, None
        self.health.count("repairs", "profile")
        LOG.info("domain %s: profile %s (%s) applied live: %s", doc.name, wanted, src,
                 "; ".join(summary["done"]) or "nothing to change")
        return DomainDoc(dom.XMLDesc(0), "domain %s (live)" % doc.name), wanted

    def _cause_for(self, dq, p):
        """The 'after X' of the log sentences."""
        if p is None:
            return None
        # a port's live <bandwidth> changed with no device event: someone ran
        # domiftune (virDomainSetInterfaceParameters emits no domain event)
        before = self._known_bw.get(dq.uuid)
        now = {i.target_dev: i.bandwidth for i in dq.interfaces}
        if before is not None and any(before.get(k) not in (None, v) for k, v in now.items()):
            return "domiftune"
        lv_causes = [c for c in p.causes if not c.startswith("OVSDB ")]
        if lv_causes:
            return lv_causes[-1]      # the latest: a hotplug right after a start is the news
        return None

    def _pass(self, batch, trigger, full=False, reason=None):
        """Reconcile the domains of ``batch`` ({uuid: Pending}); None: all running."""
        from qos_hooks.agent import reconcile as agent_reconcile
        from qos_hooks.core import desired
        t_start = time.monotonic()
        items = self._domains(None if full else list(batch))
        dqs, causes, kinds = [], {}, {}
        for dom, doc in items:
            p = batch.get(doc.uuid) if batch else None
            applied = None
            if full or (p is not None and (p.profile or p.libvirt)):
                doc, applied = self._maybe_profile(dom, doc)
            dq = desired.domain_qos(doc)
            if not dq.interfaces:
                continue
            dqs.append(dq)
            if applied:
                cause = "applying profile %s" % applied
            elif p is not None:
                cause = self._cause_for(dq, p)
            else:
                cause = "periodic check" if full else None
            if cause:
                causes[dq.uuid] = cause
            if p is not None:
                kinds[dq.uuid] = ("domiftune" if cause == "domiftune" else p.kind, p.first)
        echo_only = (not full and batch is not None
                     and all(not p.libvirt for p in batch.values()))
        # a burst of OVSDB changes only (often our own writes coming back):
        # when planning finds OVSDB as desired, no kernel read-back is needed
        res = agent_reconcile.run(self._ovs, dqs, timeout=self.timeout, remote=self.remote,
                                  netns=self.netns, causes=causes,
                                  verify_unchanged=not echo_only,
                                  kernel_check="qdisc" if full else True)
        res.dqs = dqs
        self.health.count("reconciles", trigger)
        gc_ops = self._gc()
        for r in res.repairs:
            self.health.count("repairs", r.kind)
            LOG.warning("%s", r.text)
        for name, port, detail in res.refused:
            LOG.warning("domain %s port %s: not ours to change: %s", name, port, detail)
        for name, label, detail in res.missing:
            LOG.info("domain %s interface %s: %s (not on OVS yet?)", name, label, detail)
        for d in res.fatal:
            LOG.error("verify: %s", d)
        now = time.monotonic()
        verified = set(res.verified)
        for dq in dqs:
            self._known_bw[dq.uuid] = {i.target_dev: i.bandwidth for i in dq.interfaces}
            k = kinds.get(dq.uuid)
            if dq.uuid in verified and k is not None:
                self.health.observe(k[0], now - k[1])
                level = LOG.info if (res.plan.ops or k[0] != "ovsdb") else LOG.debug
                level("domain %s: %d port(s) verified %.3fs after %s", dq.name,
                      len(dq.interfaces), now - k[1], causes.get(dq.uuid) or k[0])
        if full:
            self.health.set(last_full_reconcile=time.time())
            LOG.info("full reconcile (%s): %d domain(s), %d port(s), %d repair(s), %d "
                     "orphan(s) removed, %.3fs", reason or trigger, len(dqs),
                     sum(len(d.interfaces) for d in dqs), len(res.repairs), gc_ops,
                     time.monotonic() - t_start)
        return res

    def _gc(self):
        """Remove qos-hooks rows whose port is gone (a NIC unplugged without a hook)."""
        from qos_hooks.ovs.backend import execute
        from qos_hooks.ovs.mapping import plan_gc
        from qos_hooks.core.plan import BACKEND_OVSDB

        def build(snap, txn):
            plan = plan_gc(snap, libvirt_leftovers=self.config.settings.clean_libvirt_leftovers,
                           remote=self.remote)
            execute(self._ovs, txn, plan)
            return plan, bool(plan.for_backend(BACKEND_OVSDB))
        from qos_hooks.ovs.ovsdb import Deadline
        self._ovs.deadline = Deadline(self.timeout)
        plan, _, _ = self._ovs.transact(build, comment="qos-hooks agent gc")
        for op in plan.ops:
            self.health.count("repairs", "orphan")
            LOG.warning("%s", op.describe())
        return len(plan.ops)

    def _full_pass(self, reason, trigger="full"):
        LOG.debug("full reconcile: %s", reason)
        return self._pass({}, trigger, full=True, reason=reason)

    # -- the loop --------------------------------------------------------------------
    def _take_batch(self, now):
        with self._lock:
            if not self._pending:
                return None, None
            last = max(p.first for p in self._pending.values())
            first = min(p.first for p in self._pending.values())
            if now - last < self.debounce and now - first < MAX_DELAY:
                return None, min(first + MAX_DELAY, last + self.debounce)
            batch, self._pending = self._pending, {}
            return batch, None

    def _drain_wake(self):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def run_once(self, now=None):
        """One turn of the loop; returns the time to sleep at most."""
        now = time.monotonic() if now is None else now
        self._drain_wake()
        self._watch_tick(now)
        self._libvirt_tick(now)
        self._ovs_tick(now)
        ready = self._lv is not None and self._ovs is not None and self._ovs_was_connected
        sleep = self.interval
        if not ready:
            sleep = min(max(0.05, self._lv_retry - now) if self._lv is None else sleep,
                        max(0.05, self._ovs_retry - now) if self._ovs is None else sleep,
                        1.0)
            if not self._ready and (self._lv_attempt or self._ovs_attempt):
                self._notify_ready("waiting for %s" % " and ".join(
                    x for x, ok in (("libvirt", self._lv is not None),
                                    ("OVSDB", self._ovs is not None)) if not ok))
            return sleep
        try:
            if self._restart_at is not None:
                self._after_vswitchd_restart()
                now = time.monotonic()
                self._next_full = now + self.interval
            with self._lock:
                full_reason, self._full_requested = self._full_requested, None
            if full_reason or now >= self._next_full:
                with self._lock:
                    self._pending.clear()      # the full pass covers them
                self._full_pass(full_reason or "periodic")
                self._next_full = time.monotonic() + self.interval
                if not self._ready:
                    self._notify_ready("watching libvirt and OVSDB")
            batch, wait_until = self._take_batch(time.monotonic())
            if batch:
                self._pass(batch, "event")
            elif wait_until is not None:
                sleep = min(sleep, max(0.0, wait_until - time.monotonic()))
        except QosHooksError as e:
            self.health.count("errors", "reconcile")
            LOG.error("reconcile failed: %s; retrying", e)
            self.request_full("retry after: %s" % e)
            return 1.0
        except Exception as e:
            if self._libvirt is not None and isinstance(e, self._libvirt.libvirtError):
                self.health.count("errors", "reconcile")
                LOG.error("libvirt call failed: %s; retrying", e.get_error_message())
                self.request_full("retry after a libvirt error")
                return 1.0
            raise
        return max(0.0, min(sleep, self._next_full - time.monotonic()))

    def _notify_ready(self, status):
        self._ready = True
        sd_notify("READY=1\nSTATUS=%s" % status, self.environ)

    def run(self):
        from qos_hooks.ovs import ovsdb
        self._watch = PidfileWatch(self.vswitchd_pidfile)
        LOG.info("qos-hooks agent starting: libvirt %s, OVSDB %s, full reconcile every "
                 "%.0fs, debounce %.2fs", self.uri, self.remote, self.interval, self.debounce)
        ovs = ovsdb._ovs()
        try:
            while not self._stop:
                sleep = self.run_once()
                if self._stop:
                    break
                poller = ovs.poller.Poller()
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                if self._watch.fd is not None:
                    poller.fd_wait(self._watch.fd, ovs.poller.POLLIN)
                if self._ovs is not None:
                    self._ovs.idl.wait(poller)
                poller.timer_wait(max(0, int(sleep * 1000)))
                poller.block()
        finally:
            sd_notify("STOPPING=1", self.environ)
            self.close()
        return 0

    def close(self):
        if self._watch is not None:
            self._watch.close()
        if self._ovs is not None:
            self._ovs.close()
            self._ovs = None
        if self._lv is not None:
            try:
                self._lv.close()
            except Exception:
                pass
            self._lv = None


class HealthCollector:
    """The agent's own health for Prometheus (a prometheus_client collector),
    served next to the per-vNIC metrics (qos_hooks.observe.metrics): passes by
    trigger, repairs by reason, errors, the event-to-verified latency
    histogram by event kind, and whether libvirt and OVSDB are connected."""

    def __init__(self, health):
        self.health = health

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        d = self.health.to_dict()
        for name, key, label, doc in (
                ("reconciles", "reconciles", "trigger", "reconcile passes run, by trigger"),
                ("repairs", "repairs", "reason", "QoS repairs made, by reason"),
                ("errors", "errors", "what", "failed passes and connections, by what failed")):
            fam = CounterMetricFamily("qos_hooks_agent_" + name, doc, labels=[label])
            for k, v in sorted(d[key].items()):
                fam.add_metric([k], v)
            yield fam
        fam = CounterMetricFamily("qos_hooks_agent_libvirt_connects",
                                  "connections made to libvirtd (reconnects included)")
        fam.add_metric([], d["libvirt_connects"])
        yield fam
        fam = CounterMetricFamily("qos_hooks_agent_vswitchd_restarts",
                                  "ovs-vswitchd (re)starts seen")
        fam.add_metric([], d["vswitchd_restarts"])
        yield fam
        fam = GaugeMetricFamily("qos_hooks_agent_connected",
                                "1 while the agent is connected to the peer", labels=["peer"])
        fam.add_metric(["libvirt"], 1 if d["libvirt_connected"] else 0)
        fam.add_metric(["ovsdb"], 1 if d["ovsdb_connected"] else 0)
        yield fam
        if d["last_full_reconcile"] is not None:
            fam = GaugeMetricFamily("qos_hooks_agent_last_full_reconcile_timestamp_seconds",
                                    "when the last full reconcile (the safety net) finished")
            fam.add_metric([], d["last_full_reconcile"])
            yield fam
        fam = HistogramMetricFamily("qos_hooks_agent_event_to_verified_seconds",
                                    "from an event to QoS verified in OVSDB and the kernel",
                                    labels=["kind"])
        for kind in sorted(self.health.histograms):
            buckets, total, _ = self.health.histogram(kind)
            fam.add_metric([kind], buckets, total)
        yield fam


def parse_metrics_address(text):
    """``ADDR:PORT`` (``[v6]:PORT``) or ``off``: (address, port) or None."""
    from qos_hooks.observe import metrics
    if text is None:
        return metrics.DEFAULT_ADDRESS, metrics.DEFAULT_PORT
    if text.strip().lower() in ("off", "no", "none", ""):
        return None
    return metrics.parse_listen(text, "--metrics")


def start_metrics(agent, config, where):
    """Serve /metrics (per-vNIC metrics and the agent's health) when
    prometheus_client is there; the agent runs on without them otherwise."""
    if where is None:
        return None
    try:
        from qos_hooks.observe import metrics
        server, _ = metrics.serve(where[0], where[1], config=config,
                                  collector=metrics.HostCollector(
                                      config, remote=agent.remote, timeout=agent.timeout,
                                      netns=agent.netns, libvirt_uri=agent.uri),
                                  extra_collectors=[HealthCollector(agent.health)])
    except ImportError as e:
        LOG.warning("metrics not served: prometheus_client is missing (pip 'prometheus_client',"
                    " EL 'python3-prometheus_client'): %s", e)
        return None
    except OSError as e:
        LOG.error("metrics not served: cannot listen on %s:%d: %s", where[0], where[1],
                  e.strerror or e)
        return None
    LOG.info("metrics on http://%s:%d/metrics", *where)
    return server


def main(args):
    """``qos-hooks agent``."""
    config = policy.load_config(args.config, missing_ok=True)
    _log.apply_config_level(config.settings)
    interval = args.interval if args.interval is not None else DEFAULT_INTERVAL
    debounce = args.debounce if args.debounce is not None else DEFAULT_DEBOUNCE
    if interval <= 0 or debounce < 0:
        raise ConfigError("--interval must be > 0 and --debounce >= 0",
                          allowed="interval > 0, debounce >= 0")
    agent = Agent(config, uri=args.connect or DEFAULT_URI, remote=args.ovsdb,
                  timeout=args.timeout, interval=interval, debounce=debounce,
                  netns=args.netns)

    server = start_metrics(agent, config, parse_metrics_address(args.metrics))

    def on_term(signum, frame):
        agent.stop()

    def on_usr1(signum, frame):
        LOG.info("health: %s", json.dumps(agent.health.to_dict(), sort_keys=True))
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        return agent.run()
    finally:
        if server is not None:
            server.shutdown()


__all__ = ["Agent", "Health", "HealthCollector", "sd_notify", "main"]
