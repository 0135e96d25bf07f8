"""OVSDB access through the ``ovs`` Python IDL, with bounded time everywhere.

* ``Deadline``: one time budget for a whole operation (connect, read,
  transaction retries, waiting for ovs-vswitchd).  Nothing here blocks
  without a bound: every wait is a poller with a timer at the deadline.
* ``Connection(remote, deadline)``: fetches the schema from the server
  (``get_schema``), registers only the tables and columns qos-hooks uses, and
  waits for the IDL's first full copy.  Errors: BackendUnavailable (cannot
  connect: no socket, refused) and BackendTimeout (no answer in time).
* ``Connection.transact(build)``: ovsdbapp's shape: ``build(snapshot)``
  returns the ops to execute; they are written in ONE transaction with
  ``verify()`` on every column whose read value the decision used; on
  TRY_AGAIN (another writer got there first) the snapshot is re-read, the ops
  rebuilt and the transaction replayed, until the deadline.  Also increments
  ``Open_vSwitch.next_cfg`` so ``wait_for_vswitchd`` can wait until
  ovs-vswitchd has applied it (``cur_cfg >= next_cfg``).

``ovs`` is imported lazily: importing this module is cheap.
"""

import errno
import os
import sys
import time
import uuid as _uuid

from qos_hooks.core.errors import ApplyError, BackendTimeout, BackendUnavailable
from qos_hooks.ovs.mapping import InterfaceRow, PortRow, QosRow, QueueRow, Snapshot

DB_NAME = "Open_vSwitch"
# the tables and columns qos-hooks reads or writes (nothing else is replicated)
COLUMNS = {
    "Open_vSwitch": ("next_cfg", "cur_cfg"),
    # bridge names only: a bridge's local port (same name) is never a VM's
    "Bridge": ("name",),
    "Port": ("name", "qos", "interfaces", "external_ids"),
    "Interface": ("name", "type", "ingress_policing_rate", "ingress_policing_burst",
                  "external_ids"),
    "QoS": ("type", "other_config", "queues", "external_ids"),
    "Queue": ("other_config", "external_ids"),
}


class VswitchdBehind(BackendTimeout):
    """wait_for_vswitchd ran out of time while ovs-vswitchd was applying
    other configurations: busy, not down."""


class Deadline:
    def __init__(self, timeout):
        self.timeout = float(timeout)
        self.end = time.monotonic() + self.timeout

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def ms(self):
        return int(self.remaining() * 1000)


def load_library(only_remote=None):
    """Import the ``ovs`` library (and set it up) now rather than at the first
    connection (the root helper does it while waiting for its request).

    ``only_remote``: the one remote this (short-lived) process will ever
    reach.  Unless it is an ``ssl:`` remote, Python is told there is no
    ``ssl`` module before ``ovs`` is imported: ovs imports ssl (and with it
    OpenSSL) only to offer ``ssl:`` remotes and carries on without it
    (``try: import ssl / except ImportError``), and that import is 4-6 ms of
    every OVS hook's critical path (bench/bench_hooks.py).  Nothing else in
    such a process uses ssl; a process that already imported it keeps it."""
    if only_remote is not None and not only_remote.startswith(("ssl:", "pssl:")) \
            and "ssl" not in sys.modules:
        sys.modules["ssl"] = None
    _ovs()


def _ovs():
    try:
        import ovs.db.idl  # noqa: F401
        import ovs.jsonrpc  # noqa: F401
        import ovs.poller  # noqa: F401
        import ovs.stream  # noqa: F401
        import ovs.vlog
    except ImportError as e:  # pragma: no cover - packaging problem
        raise BackendUnavailable("the Open vSwitch Python library is missing (pip 'ovs', EL "
                                 "'python3-openvswitch'): %s" % e)
    ovs.vlog.Vlog.set_levels_from_string("console:emer")  # we report errors ourselves
    # the PyPI build has no ovs._json: parse the JSON-RPC stream with the
    # standard library's C decoder instead of ovs's pure-Python state machine
    from qos_hooks.ovs import jsonstream
    jsonstream.install(ovs)
    return ovs


def _block(ovs, deadline, *waiters):
    poller = ovs.poller.Poller()
    for w in waiters:
        w(poller)
    poller.timer_wait(max(1, min(deadline.ms(), 500)))
    poller.block()


def fetch_schema(remote, deadline):
    """The server's Open_vSwitch schema (JSON), within the deadline."""
    ovs = _ovs()
    if remote.startswith("unix:") and not os.path.exists(remote[5:]):
        raise BackendUnavailable("OVSDB at %s: no such socket (is ovsdb-server running?)" % remote)
    error, stream = ovs.stream.Stream.open(remote)
    if not error:
        error, stream = ovs.stream.Stream.open_block((error, stream), max(1, deadline.ms()))
    if error == errno.ETIMEDOUT:
        raise BackendTimeout("OVSDB at %s: connection not completed within %.1fs"
                             % (remote, deadline.timeout))
    if error:
        raise BackendUnavailable("OVSDB at %s: cannot connect: %s" % (remote, os.strerror(error)))
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [DB_NAME])
        error = rpc.send(request)
        while not error:
            rpc.run()
            error, msg = rpc.recv()
            if error == errno.EAGAIN:
                if deadline.expired():
                    raise BackendTimeout("OVSDB at %s: no answer to get_schema within %.1fs "
                                         "(server hung?)" % (remote, deadline.timeout))
                _block(ovs, deadline, rpc.wait, rpc.recv_wait)
                error = 0
                continue
            if error:
                break
            if msg.type == ovs.jsonrpc.Message.T_ERROR and msg.id == request.id:
                raise BackendUnavailable("OVSDB at %s: get_schema failed: %s" % (remote, msg.error))
            if msg.type == ovs.jsonrpc.Message.T_REPLY and msg.id == request.id:
                return msg.result
        raise BackendUnavailable("OVSDB at %s: connection failed: %s"
                                 % (remote, os.strerror(error) if error > 0 else "EOF"))
    finally:
        rpc.close()


class Connection:
    """An IDL replica of the tables in COLUMNS, opened within ``deadline``."""

    def __init__(self, remote, deadline, extra_columns=None):
        """``extra_columns``: {table: (column, ...)} replicated on top of
        COLUMNS (qos_hooks.observe.metrics adds Bridge and Interface statistics)."""
        self.remote = remote
        self.deadline = deadline
        self.idl = None
        self._name_index = {}
        self.ovs = _ovs()
        schema_json = fetch_schema(remote, deadline)
        helper = self.ovs.db.idl.SchemaHelper(schema_json=schema_json)
        tables = schema_json.get("tables", {})
        wanted = {t: list(c) for t, c in COLUMNS.items()}
        for table, cols in (extra_columns or {}).items():
            wanted.setdefault(table, [])
            wanted[table] += [c for c in cols if c not in wanted[table]]
        for table, cols in wanted.items():
            have = tables.get(table, {}).get("columns", {})
            helper.register_columns(table, [c for c in cols if c in have])
        self.idl = self.ovs.db.idl.Idl(remote, helper, leader_only=False)
        try:
            self._wait_until(lambda: self.idl.state == self.idl.IDL_S_MONITORING
                             and self.idl.has_ever_connected(),
                             "OVSDB at %s: no database contents received" % remote)
        except BaseException:
            self.close()
            raise
        self._cfg_at_connect = self._cur_cfg() or 0

    def close(self):
        if self.idl is not None:
            self.idl.close()
            self.idl = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- waiting -----------------------------------------------------------------
    def _wait_until(self, predicate, what):
        while True:
            self.idl.run()
            if predicate():
                return
            if self.deadline.expired():
                raise BackendTimeout("%s within %.1fs" % (what, self.deadline.timeout))
            _block(self.ovs, self.deadline, self.idl.wait)

    def settle(self):
        """Process what the server has sent so far (bounded)."""
        self.idl.run()

    # -- reading -----------------------------------------------------------------
    def snapshot(self):
        t = self.idl.tables

        def ids(row, col="external_ids"):
            return dict(getattr(row, col, {}) or {})

        ports, ifaces, qos, queues = {}, {}, {}, {}
        for row in t["Port"].rows.values():
            q = row.qos
            ports[row.name] = PortRow(str(row.uuid), row.name, str(q[0].uuid) if q else None,
                                      tuple(str(i.uuid) for i in row.interfaces), ids(row))
        for row in t["Interface"].rows.values():
            rate = row.ingress_policing_rate
            burst = row.ingress_policing_burst
            ifaces[str(row.uuid)] = InterfaceRow(str(row.uuid), row.name, row.type,
                                                 int(rate), int(burst), ids(row))
        for row in t["QoS"].rows.values():
            qos[str(row.uuid)] = QosRow(str(row.uuid), row.type, ids(row, "other_config"),
                                        {int(k): str(v.uuid) for k, v in row.queues.items()},
                                        ids(row))
        for row in t["Queue"].rows.values():
            queues[str(row.uuid)] = QueueRow(str(row.uuid), ids(row, "other_config"), ids(row))
        cur = nxt = 0
        for row in t["Open_vSwitch"].rows.values():
            cur, nxt = int(row.cur_cfg), int(row.next_cfg)
        bridges = frozenset(row.name for row in t["Bridge"].rows.values()) \
            if "Bridge" in t else frozenset()
        return Snapshot(ports, ifaces, qos, queues, cur, nxt, bridges)

    def row(self, table, uuid_str):
        return self.idl.tables[table].rows.get(_uuid.UUID(uuid_str))

    def _by_name(self, table, name):
        key = (table, self.idl.change_seqno)
        index = self._name_index.get(table)
        if index is None or index[0] != key:
            index = (key, {row.name: row for row in self.idl.tables[table].rows.values()})
            self._name_index[table] = index
        row = index[1].get(name)
        if row is not None and row.uuid not in self.idl.tables[table].rows:
            return None
        return row

    def port_row(self, name):
        return self._by_name("Port", name)

    def interface_row(self, name):
        return self._by_name("Interface", name)

    # -- writing -----------------------------------------------------------------
    def transact(self, build, comment="qos-hooks"):
        """Run ``build(snapshot, txn) -> (result, changed)`` until it commits.

        ``build`` writes through ``txn`` (an ovs.db.idl.Transaction) and this
        Connection's row accessors; when ``changed`` is false nothing is
        committed.  Returns (result, next_cfg or None, attempts).
        """
        Transaction = self.ovs.db.idl.Transaction
        attempts = 0
        while True:
            attempts += 1
            # ovs/db/idl.py Transaction docs: on TRY_AGAIN, wait for change_seqno
            # to differ from its value BEFORE the commit (the conflicting update
            # has usually arrived by the time the reply does)
            seq = self.idl.change_seqno
            snap = self.snapshot()
            txn = Transaction(self.idl)
            txn.add_comment(comment)
            try:
                result, changed = build(snap, txn)
            except BaseException:
                # a refused plan (PortRefused...) writes nothing at all
                txn.abort()
                raise
            if not changed:
                txn.abort()
                return result, None, attempts
            ovs_rows = list(self.idl.tables["Open_vSwitch"].rows.values())
            if ovs_rows:
                ovs_rows[0].increment("next_cfg")
            status = self._commit(txn)
            if status == Transaction.SUCCESS:
                nxt = txn.get_increment_new_value() if ovs_rows else None
                return result, nxt, attempts
            if status == Transaction.UNCHANGED:
                return result, None, attempts
            if status == Transaction.TRY_AGAIN:
                if self.deadline.expired():
                    raise BackendTimeout("OVSDB at %s: transaction still conflicting after %d "
                                         "attempts in %.1fs" % (self.remote, attempts,
                                                                 self.deadline.timeout))
                self._wait_until(lambda: self.idl.change_seqno != seq
                                 and self.idl.state == self.idl.IDL_S_MONITORING,
                                 "OVSDB at %s: no update after a conflict" % self.remote)
                continue
            err = txn.get_error() if hasattr(txn, "get_error") else ""
            raise ApplyError("OVSDB at %s: transaction %s: %s"
                             % (self.remote, Transaction.status_to_string(status), err))

    def _commit(self, txn):
        Transaction = self.ovs.db.idl.Transaction
        while True:
            status = txn.commit()
            if status != Transaction.INCOMPLETE:
                return status
            if self.deadline.expired():
                txn.abort()
                raise BackendTimeout("OVSDB at %s: transaction not confirmed within %.1fs (it "
                                     "may still be applied by the server)"
                                     % (self.remote, self.deadline.timeout))
            self.idl.run()
            _block(self.ovs, self.deadline, self.idl.wait, txn.wait)

    def _cur_cfg(self):
        """Open_vSwitch.cur_cfg: the configuration ovs-vswitchd has applied
        (None before the database has its row)."""
        for row in self.idl.tables["Open_vSwitch"].rows.values():
            return int(row.cur_cfg)
        return None

    def wait_for_vswitchd(self, next_cfg):
        """Wait until ovs-vswitchd reports ``cur_cfg >= next_cfg`` (it applied our change)."""
        if next_cfg is None:
            return

        def done():
            cur = self._cur_cfg()
            return cur is None or cur >= next_cfg
        try:
            self._wait_until(done, "ovs-vswitchd did not apply configuration %d" % next_cfg)
        except BackendTimeout as e:
            # a vswitchd that applied nothing since we connected may be down;
            # one that moved on is busy: many ports with a QoS, or a mass
            # start (bench/bench_ovs_apply.py --concurrent)
            cur = self._cur_cfg()
            if cur is not None and cur > self._cfg_at_connect:
                raise VswitchdBehind("%s: it is busy (it has applied configuration %d "
                                     "meanwhile, %d behind ours; the change will be applied "
                                     "when it gets there)" % (e, cur, next_cfg - cur)) from None
            raise BackendTimeout("%s: it applied nothing meanwhile (is ovs-vswitchd running?)"
                                 % e) from None


def read_snapshot(remote, timeout):
    """A read-only snapshot of the OVSDB contents qos-hooks cares about."""
    deadline = Deadline(timeout)
    with Connection(remote, deadline) as conn:
        return conn.snapshot()


def unix_socket_missing(remote):
    """True only when ``remote`` is ``unix:PATH`` and PATH does not exist:
    no ovsdb-server on this host, so no interface here can be on OVS.

    A path we may not look at (PermissionError: the vdsm user and a
    root-only run directory) is NOT "missing": the caller goes on and asks.
    """
    if not remote or not remote.startswith("unix:"):
        return False
    try:
        os.stat(remote[len("unix:"):])
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def linux_bridge(name, sysfs="/sys/class/net"):
    """True when ``name`` is a Linux bridge in this network namespace
    (``/sys/class/net/NAME/bridge`` exists): certainly not Open vSwitch."""
    if not name or "/" in name or name in (".", ".."):
        return False
    return os.path.isdir(os.path.join(sysfs, name, "bridge"))
