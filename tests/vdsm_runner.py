"""Run a VDSM hook directory the way VDSM does.

Copied semantics (vdsm lib/vdsm/common/hooks.py, ``_runHooksDir`` and
``_scriptsPerDir``; FIELD_NOTES section 3), not its code:

* the scripts are every entry of the directory that is executable
  (``os.access(X_OK)``), sorted by path; nothing else runs;
* the data goes to a fresh ``tempfile.mkstemp()`` file whose path is in
  ``$_hook_domxml`` (domain-XML hooks) or ``$_hook_json`` (JSON hooks);
* the environment is VDSM's own environment, updated with the device
  ``params`` first and the VM's ``custom`` properties second (so a VM
  property wins over a device property of the same name), plus ``vmId``;
* each script runs with no arguments and cwd ``/``; stdout is thrown away,
  stderr is collected (VDSM logs it);
* exit 0 ok; any non-zero exit is an error; exit 2 also skips the remaining
  scripts; for ``before_*`` hook points an error raises HookError (the VM
  start / hotplug / update is aborted), for ``after_*`` it is only logged;
* afterwards the (possibly rewritten) file is read back and returned.
"""

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import List, Tuple

DOMXML = "domxml"
JSON = "json"


class HookError(Exception):
    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


@dataclass
class ScriptRun:
    path: str
    rc: int
    stderr: str


@dataclass
class HookResult:
    data: object                       # domain XML text, or the JSON object
    runs: List[ScriptRun] = field(default_factory=list)
    error_seen: bool = False

    @property
    def stderr(self):
        return "".join(r.stderr for r in self.runs)

    @property
    def rcs(self) -> Tuple[int, ...]:
        return tuple(r.rc for r in self.runs)


def scripts_in(directory):
    if not os.path.isdir(directory):
        return []
    paths = [os.path.join(directory, n) for n in os.listdir(directory)]
    return sorted(p for p in paths if os.access(p, os.X_OK))


def run_hook_dir(directory, data, *, hook_point=None, vm_id=None, vm_custom=None,
                 params=None, kind=DOMXML, base_env=None, raise_error=None,
                 argv_prefix=(), timeout=120, owner=None):
    """Run every hook script in ``directory``; return a HookResult.

    ``argv_prefix`` (e.g. ``["ip", "netns", "exec", NS]``) runs the scripts
    inside another network namespace, where the test's OVS lives.
    ``raise_error`` defaults to True for ``before_*`` hook points.
    ``owner`` (uid, gid): chown the data file to the user the scripts run as
    (VDSM's own file belongs to vdsm).
    """
    hook_point = hook_point or os.path.basename(os.path.normpath(directory))
    if raise_error is None:
        raise_error = hook_point.startswith("before_")
    scripts = scripts_in(directory)
    if not scripts:
        return HookResult(data=data)
    fd, path = tempfile.mkstemp()
    try:
        if kind == JSON:
            os.write(fd, json.dumps(data).encode("utf-8"))
        else:
            os.write(fd, (data or "").encode("utf-8") if isinstance(data, str) else data)
        os.close(fd)
        if owner is not None:
            os.chown(path, owner[0], owner[1])
        env = dict(os.environ if base_env is None else base_env)
        for k, v in list((params or {}).items()) + list((vm_custom or {}).items()):
            env[k] = v
        if vm_id:
            env["vmId"] = vm_id
        env["_hook_json" if kind == JSON else "_hook_domxml"] = path
        result = HookResult(data=None)
        for s in scripts:
            p = subprocess.run(list(argv_prefix) + [s], cwd="/", env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=timeout)
            result.runs.append(ScriptRun(s, p.returncode,
                                         p.stderr.decode("utf-8", "replace")))
            if p.returncode != 0:
                result.error_seen = True
            if p.returncode == 2:
                break
        with open(path, "rb") as f:
            raw = f.read()
        result.data = json.loads(raw) if kind == JSON else raw.decode("utf-8")
        if result.error_seen and raise_error:
            raise HookError(result.runs[-1].stderr, result)
        return result
    finally:
        os.unlink(path)
