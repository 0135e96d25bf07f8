"""The Open vSwitch backend: apply, clear, garbage-collect and check VM QoS in OVSDB.

Public API (called by the hooks, the root helper and the CLI; stable)::

    apply_domain(dq, *, remote=DEFAULT_OVSDB, timeout=5.0, verify=True,
                 replace_libvirt=True, netns=None) -> BackendReport
    clear_domain(dq, *, remote=DEFAULT_OVSDB, timeout=5.0,
                 libvirt_leftovers=False, netns=None) -> BackendReport
    gc(*, remote=DEFAULT_OVSDB, timeout=5.0, dry_run=False,
       libvirt_leftovers=False) -> BackendReport
    status(dq=None, *, remote=DEFAULT_OVSDB, timeout=5.0, netns=None) -> StatusReport

* ``dq`` is a :class:`qos_hooks.desired.DomainQos` (bandwidth in libvirt units,
  guest point of view).  Each interface is found by ``target_dev`` (the Port /
  Interface name, ``vnetN``) or, when that is None (VDSM ``after_nic_hotplug``),
  by the Interface's ``external_ids:attached-mac``.
* ``clear_domain`` removes what qos-hooks owns for the domain's uuid and, for
  each interface in ``dq``, for its MAC: a hot-unplug passes a DomainQos with
  the one interface to clear.  An interface with an empty Bandwidth in ``dq``
  given to ``apply_domain`` also clears that interface.
* ``libvirt_leftovers=True`` (documented mode, off by default; CLI
  ``--libvirt-leftovers``): also destroy QoS/Queue rows tagged by libvirt with
  ``external_ids:vm-id`` == this domain's uuid that no Port references
  (libvirt < 10.3 leaks them when a domain goes away).
* ``replace_libvirt=True`` (documented mode, on by default): when libvirt
  (>= 7.10) already put its own QoS on the Port of THIS domain (QoS row tagged
  ``vm-id`` == dq.uuid), apply replaces it by ours and destroys libvirt's
  superseded QoS and Queue rows in the same transaction.  QoS rows owned by
  Neutron (``external_ids:id``/``_type``) or by nobody are never touched: the
  port is reported and apply raises OwnershipError after doing the rest.
* ``timeout`` bounds the whole call (connect, read, transaction retries, wait
  for ovs-vswitchd, verification).  ``netns`` names the network namespace the
  port devices live in, for the kernel read-back (None: this process's).

Errors (qos_hooks.errors): BackendUnavailable / BackendTimeout (OVSDB not
reachable or not answering within ``timeout``; exit 5), ApplyError (the
transaction failed), VerifyError (the read-back differs; ``.differences`` and
``.report`` carry the details; exit 6), OwnershipError (a port carries a QoS
qos-hooks may not replace; exit 6).  Every raised ApplyError has a ``report``
attribute with what was done before the failure.

Reports are frozen dataclasses with ``to_dict()``: see BackendReport,
PortOutcome, Difference.

The mapping (units, directions, measurements) is documented in
docs/ovs-mapping.md and implemented in qos_hooks.ovs_plan, which also builds
the plan that ``qos-hooks dry-run`` prints: apply executes exactly that plan.
"""
