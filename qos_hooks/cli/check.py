"""``qos-hooks check``: validate a policy file without a domain.

The hooks read the policy file on every call, and a file they cannot parse
makes every hook point whose failure policy is ``fail`` fail -- with the
defaults, EVERY VM start, NIC hotplug, vNIC update and setupNetworks on the
host, also those that ask for no QoS at all (docs/hooks.md).  This command
runs the very same parser the hooks run (qos_hooks.core.policy.load_config: every
section and key, every value in range, ``default_profile`` naming a profile
that exists) plus what the network hooks only check when a network asks for
a profile: the ``host.*`` keys of every profile must form a valid set of hfsc
curves (qos_hooks.hostnet.hostqos.profile_host_qos / check_consistency).  A fleet
rollout runs it on the new file before swapping it in; the RPM's %post and
``qos-hooks install`` run it on the installed file.

Exit 0 when the file is valid, 3 (configuration error) with the usual
``FILE:LINE: profile P, key K = V: reason (allowed: ...)`` message when not.
``--json`` prints one object either way.
"""

import json
import sys

from qos_hooks.core import policy
from qos_hooks.core.errors import EXIT_CONFIG, EXIT_OK, ConfigError, InputError


def _line_of(path, section, key):
    """The line of ``key`` in ``[section]`` of the file, or of the header."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
        _, lines = policy.read_ini(text, path)
    except (OSError, ValueError, ConfigError):
        return None
    return lines.get((section, key), lines.get((section, None)))


def _check_host_keys(config):
    """Every profile's ``host.*`` keys as the network hooks would use them."""
    from qos_hooks.hostnet import hostqos as hostnet_qos
    summary = {}
    for name in sorted(config.profiles):
        profile = config.profiles[name]
        if not profile.host:
            continue
        section = "profile %s" % name
        try:
            qos = hostnet_qos.profile_host_qos(profile, config.path)
        except ConfigError as e:
            if e.line is None and config.path:
                e = ConfigError(e.reason, path=config.path,
                                line=_line_of(config.path, section, e.key),
                                profile=name, key=e.key, value=e.value, allowed=e.allowed)
            raise e
        try:
            hostnet_qos.check_consistency(name, qos)
        except InputError as e:
            msg = str(e).split(": ", 1)[1] if ": " in str(e) else str(e)
            keys = [k for k, _, _ in profile.host]
            raise ConfigError(msg, path=config.path,
                              line=_line_of(config.path, section, keys[0]) if config.path
                              else None, profile=name)
        summary[name] = qos.describe()
    return summary


def check_file(path):
    """Validate the policy file at ``path`` (None: $QOS_HOOKS_CONFIG or the
    default path); return a dict describing it, or raise ConfigError."""
    config = policy.load_config(path)
    host = _check_host_keys(config)
    return {
        "path": config.path,
        "ok": True,
        "profiles": sorted(config.profiles),
        "default_profile": config.settings.default_profile,
        "host_profiles": host,
    }


def error_dict(path, e):
    return {"path": e.path or path, "ok": False, "error": str(e), "line": e.line,
            "profile": e.profile, "key": e.key,
            "value": e.value if e.value is None or isinstance(e.value, (int, str)) else str(e.value),
            "allowed": e.allowed}


def main(args):
    path = policy.config_path(args.config)
    try:
        info = check_file(args.config)
    except ConfigError as e:
        every = (e,) + tuple(e.more)
        if args.json:
            d = error_dict(path, e)
            d["errors"] = [error_dict(path, x) for x in every]
            sys.stdout.write(json.dumps(d, sort_keys=True) + "\n")
        else:
            for x in every:
                sys.stderr.write("qos-hooks check: INVALID: %s\n" % x)
            if len(every) > 1:
                sys.stderr.write("qos-hooks check: %d problems (the first of each section)\n"
                                 % len(every))
        return EXIT_CONFIG
    if args.json:
        sys.stdout.write(json.dumps(info, sort_keys=True) + "\n")
    else:
        sys.stdout.write("ok: %s: %d profile%s (%s); default_profile %s\n" % (
            info["path"], len(info["profiles"]), "" if len(info["profiles"]) == 1 else "s",
            ", ".join(info["profiles"]) or "none", info["default_profile"] or "not set"))
        for name, desc in sorted(info["host_profiles"].items()):
            sys.stdout.write("ok: profile %s host network QoS: %s\n" % (name, desc))
    return EXIT_OK


def warn_if_invalid(path, stream=None):
    """For installers: check ``path``; on failure print a loud warning to
    ``stream`` (stderr) and return False.  Never raises."""
    stream = stream or sys.stderr
    try:
        check_file(path)
        return True
    except ConfigError as e:
        bar = "!" * 72
        stream.write("%s\nWARNING: the qos-hooks policy file is INVALID:\n  %s\n"
                     "Until it is fixed, every hook point whose on_error is 'fail' fails\n"
                     "(by default: every VM start, NIC hotplug, vNIC update and\n"
                     "setupNetworks on this host). Fix it, then run:\n"
                     "  qos-hooks check --config %s\n%s\n" % (bar, e, path, bar))
        return False
    except Exception as e:   # an installer must not die on a check
        stream.write("WARNING: could not check %s: %s\n" % (path, e))
        return False
