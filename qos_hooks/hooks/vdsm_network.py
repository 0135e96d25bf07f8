"""The VDSM network hooks: ``before_network_setup``, ``after_network_setup``
and ``after_network_setup_fail``.

The hook protocol (vdsm lib/vdsm/common/hooks.py ``_runHooksDir`` and
``before_network_setup``/``after_network_setup``): ``$_hook_json`` names a
file holding ``json.dumps({"request": {"networks": ..., "bondings": ...,
"options": ...}})``; a hook rewrites it; exit 0 ok, 1 error, 2 error and
skip the remaining scripts.  A non-zero exit of a ``before_network_setup``
script makes VDSM raise HookError, so ``setupNetworks`` fails before anything
is configured; ``after_network_setup`` failures are only logged.  Both run
as root inside supervdsmd.  ``after_network_setup`` receives the request as
VDSM had it BEFORE the before-hooks changed it (api.py passes its own copy),
so the values that were stripped or filled come from the state file
(qos_hooks.hostnet.state), not from that request.

VDSM reads the file back with ``json.loads`` (``_runHooksDir``), so the
request is edited as data: ``json.loads``, change the ``hostQos`` of the
networks that change, ``json.dumps``, written atomically
(qos_hooks.core.fileio); a request with nothing to change is not rewritten at all.
"""

import json
import os

from qos_hooks.hooks import runner
from qos_hooks.core import log as _log
from qos_hooks.core.errors import ApplyError, InputError, QosHooksError
from qos_hooks.hostnet.decisions import _uplink, _vlan, decide, is_ovs
from qos_hooks.hostnet.state import State, StateLock, _entry, state_path

HOOK_BEFORE = "before_network_setup"
HOOK_AFTER = "after_network_setup"
HOOK_AFTER_FAIL = "after_network_setup_fail"

# What a failure does when [settings] on_error.<hook_point> is not set.
#  before: fail -- a bad hostQos must stop setupNetworks before VDSM half-applies
#          it (VDSM raises HookError on a non-zero exit, nothing is configured yet).
#  after:  continue -- VDSM ignores after_* exit codes anyway (raiseError=False);
#          the error is logged and ``qos-hooks status`` shows the drift.
DEFAULT_ON_ERROR = {HOOK_BEFORE: "fail", HOOK_AFTER: "continue",
                    HOOK_AFTER_FAIL: "continue"}

# The exit code of a failure under on_error=fail: 2 for before_network_setup,
# so VDSM's HookError carries our stderr (it reports the LAST script run,
# lib/vdsm/common/hooks.py _runHooksDir; qos_hooks.hooks.vdsm_vm.FAIL_EXIT).
FAIL_EXIT = {HOOK_BEFORE: 2}

# Slack on top of ovsdb_timeout (which bounds each OVSDB call) for process
# start and the OpenFlow bundle: a network hook never runs longer than
# ovsdb_timeout + HOOK_MARGIN seconds, whatever OVSDB or ovs-vswitchd do.
HOOK_MARGIN = 10.0


def edit_request(data, decisions):
    """Apply the decisions to the hook JSON document (a dict, changed in
    place); return True when anything changed."""
    networks = data["request"].get("networks") or {}
    changed = False
    for d in decisions:
        if d.action not in ("set", "strip"):
            continue
        attrs = networks.get(d.network)
        if not isinstance(attrs, dict):
            raise InputError("network %r not found in the request" % d.network)
        if d.action == "set":
            new = d.qos.to_json()
            if attrs.get("hostQos") != new:
                attrs["hostQos"] = new
                changed = True
        elif "hostQos" in attrs:
            del attrs["hostQos"]
            changed = True
    return changed


def _write_hook_json(path, data):
    runner.replace_hook_file(path, json.dumps(data).encode("utf-8"))


# -- hook handlers --------------------------------------------------------------------

def _read_hook_json(env):
    path = env.get("_hook_json")
    if not path:
        raise InputError("$_hook_json is not set: not run by VDSM?")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("cannot read $_hook_json %s: %s" % (path, e.strerror))
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except ValueError as e:
        raise InputError("$_hook_json %s is not JSON: %s" % (path, e))
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise InputError("$_hook_json %s has no \"request\" object" % path)
    return path, data


def before_network_setup(env, config, logger):
    path, data = _read_hook_json(env)
    request = data["request"]
    decisions = decide(request.get("networks") or {}, config)
    for d in decisions:
        for fx in d.fixes:
            logger.warning("network %r: fixed hostQos%s", d.network, fx)
        if d.action != "keep" or d.qos is not None:
            logger.info("%s", d.describe())
        if d.ovs and d.qos is not None:
            dropped = [c for c, cv in d.qos.curves() if cv.m1 is not None]
            if dropped:
                logger.warning("network %r: OVS has no service curves; m1/d of %s are "
                               "not applied (only m2)", d.network, ", ".join(dropped))
    changed = edit_request(data, decisions)
    ovs = [d for d in decisions if d.ovs]
    spath = state_path(env)
    if ovs or os.path.exists(spath):
        # pending always describes THIS setupNetworks (a stale one, left by a
        # supervdsmd crash between the hooks, is replaced)
        with StateLock(spath):
            st = State.load(spath)
            st.pending = {d.network: _entry(d) for d in ovs}
            st.save()
    if changed:
        _write_hook_json(path, data)
    return 0


def vdsm_applied_host_qos(attrs):
    """Whether VDSM's ``_setup_qos`` applies this network's ``hostQos`` itself
    (lib/vdsm/network/netswitch/configurator.py ``_get_qos_out``: a non-empty
    ``hostQos["out"]``), which it does whenever before_network_setup did not
    take it out."""
    q = attrs.get("hostQos") if isinstance(attrs, dict) else None
    return isinstance(q, dict) and bool(q.get("out"))


def _removed(attrs):
    return isinstance(attrs, dict) and attrs.get("remove") in (True, "true", "True", 1, "1")


def after_network_setup(env, config, logger):
    """Move this setupNetworks' pending OVS entries to ``applied`` and make the
    OVS bridges match; networks removed, or set up again without hostQos,
    lose the QoS qos-hooks gave them."""
    _, data = _read_hook_json(env)
    request = data["request"]
    networks = request.get("networks") or {}
    spath = state_path(env)
    with StateLock(spath):
        st = State.load(spath)
        touched = set()
        for net, attrs in sorted(networks.items()):
            old = st.applied.get(net)
            if _removed(attrs):
                if old is not None:
                    touched.add(old.get("uplink"))
                    del st.applied[net]
                st.pending.pop(net, None)
                continue
            if not isinstance(attrs, dict) or not is_ovs(attrs):
                if old is not None:      # moved to the legacy switch
                    touched.add(old.get("uplink"))
                    del st.applied[net]
                continue
            entry = st.pending.pop(net, None)
            if entry is None:
                # the before hook did not see this network: a setupNetworks that
                # changes the switch type takes _change_switch_type
                # (lib/vdsm/network/api.py), which skips before_network_setup,
                # or the hook was not installed then.  VDSM's _setup_qos
                # (netswitch/configurator.py) then applied hostQos itself, as
                # hfsc on the uplink, although the network is on OVS: apply the
                # OVS equivalent and remove VDSM's qdisc (reconcile evict_vdsm).
                if vdsm_applied_host_qos(attrs):
                    logger.warning(
                        "network %r: before_network_setup did not see this setupNetworks "
                        "(VDSM skips it when the switch type changes): VDSM applied its "
                        "hostQos itself as hfsc on %s; qos-hooks moves it to the OVS "
                        "switch", net, _uplink(attrs))
                # validate what VDSM was asked for
                d = [x for x in decide({net: attrs}, config) if x.network == net]
                entry = _entry(d[0]) if d else {"hostQos": None, "uplink": _uplink(attrs),
                                                "vlan": _vlan(attrs), "profile": None}
            if old is not None:
                touched.add(old.get("uplink"))
            touched.add(entry.get("uplink"))
            if entry.get("hostQos"):
                st.applied[net] = entry
            else:
                st.applied.pop(net, None)
        st.pending = {}
        st.save()
        touched.discard(None)
        if not touched:
            return 0
        from qos_hooks.hostnet import ovs as hostnet_ovs
        remote = config.settings.ovsdb
        timeout = config.settings.ovsdb_timeout
        results = hostnet_ovs.reconcile(st.applied, sorted(touched), remote, timeout,
                                        logger=logger, evict_vdsm=True)
    failed = [r for r in results if r.error]
    for r in results:
        if r.error:
            logger.error("%s", r)
        else:
            logger.info("%s", r)
    if failed:
        raise ApplyError("host network QoS not applied on %s (see above; 'qos-hooks status' "
                         "shows the drift)" % ", ".join(r.uplink for r in failed))
    return 0


def after_network_setup_fail(env, config, logger):
    """setupNetworks failed: forget what the before hook remembered."""
    spath = state_path(env)
    if not os.path.exists(spath):
        return 0
    with StateLock(spath):
        st = State.load(spath)
        if st.pending:
            logger.info("setupNetworks failed: dropping pending host QoS of %s",
                        ", ".join(sorted(st.pending)))
            st.pending = {}
            st.save()
    return 0


def drop_unvalidated_host_qos(env, config, logger):
    """on_error=continue in before_network_setup: take ``hostQos`` off every
    network whose host QoS does not validate (byte-preserving edit, atomic
    write), and say so; VDSM then sets those networks up without host QoS
    instead of applying values nobody validated.  A file that cannot be read
    is left as it is (logged)."""
    try:
        path, data = _read_hook_json(env)
        networks = data["request"].get("networks") or {}
        bad = []
        for net in sorted(networks) if isinstance(networks, dict) else ():
            attrs = networks[net]
            if not isinstance(attrs, dict) or "hostQos" not in attrs:
                continue
            try:
                decide({net: attrs}, config)
            except QosHooksError as e:
                bad.append((net, e))
        if not bad:
            return
        for net, _ in bad:
            del networks[net]["hostQos"]
        _write_hook_json(path, data)
    except (OSError, ValueError, QosHooksError) as e:
        logger.error("on_error=continue: could not remove the unvalidated hostQos: %s; "
                     "the request goes on unchanged", e)
        return
    for net, e in bad:
        logger.warning("on_error=continue: removed the hostQos of network %r, which could "
                       "not be validated (%s): the network carries on without host QoS",
                       net, e)


HANDLERS = {HOOK_BEFORE: before_network_setup, HOOK_AFTER: after_network_setup,
            HOOK_AFTER_FAIL: after_network_setup_fail}


def vdsm_main(hook_point, environ=None):
    """Entry point of the network hook executables; returns the exit code.

    0 on success; on failure when the failure policy of the hook point is
    ``fail`` (``on_error.<hook_point>`` in [settings], defaults in
    DEFAULT_ON_ERROR: a bad hostQos stops setupNetworks before VDSM changes
    anything): 2 for before_network_setup (VDSM then reports our message and
    skips the scripts after ours, FAIL_EXIT), 1 for the after_* points.
    """
    env = os.environ if environ is None else environ
    logger = _log.setup({"hook": hook_point})
    loaded = {}

    def handler(config):
        loaded["config"] = config
        return HANDLERS[hook_point](env, config, logger)

    def on_failure(code):
        # on_error=continue: carry on WITHOUT the host QoS that failed validation
        if code == 0 and hook_point == HOOK_BEFORE and loaded.get("config") is not None:
            drop_unvalidated_host_qos(env, loaded["config"], logger)
    return runner.run(hook_point, handler, environ=env, logger=logger,
                      defaults=DEFAULT_ON_ERROR, margin=HOOK_MARGIN, on_failure=on_failure,
                      fail_exit=FAIL_EXIT)
