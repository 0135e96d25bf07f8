"""Policy texts shared by the hook tests (VDSM and libvirt) and the hook benches."""

# {remote}, {timeout}: the OVSDB the hooks talk to; {extra}: more [settings] lines
GOLD_CONF = """\
[settings]
default_profile = gold
ovsdb = {remote}
ovsdb_timeout = {timeout}
{extra}

[profile gold]
inbound.average = 1000
inbound.peak = 2000
inbound.burst = 256
outbound.average = 500
outbound.burst = 128

[profile silver]
inbound.average = 250
outbound.average = 125
"""
