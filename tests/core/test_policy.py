"""Policy files: parsing, profile selection, and every validation rule.

Each rule has a test that feeds a bad value and checks that the message names
the file, the line, the profile, the key, the value as written and the
allowed range (ConfigError's format: ``FILE:LINE: profile 'P', key 'K' =
'V': reason (allowed: RANGE)``).
"""

import os
import textwrap

import pytest

from qos_hooks.core import policy
from qos_hooks.core.errors import EXIT_CONFIG, ConfigError
from qos_hooks.core.policy import Bandwidth, IoTune, Rate

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "examples", "qos-hooks.conf")


def write(tmp_path, body, name="qos-hooks.conf"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def load(tmp_path, body):
    return policy.load_config(write(tmp_path, body))


def line_of(path, needle):
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if needle in line:
                return n
    raise AssertionError("%r not in %s" % (needle, path))


def config_error(tmp_path, body, profile_line):
    """Load a config with one profile (its keys in ``body``) that must fail;
    return (error, path, line of ``profile_line``)."""
    path = write(tmp_path, "[profile p]\n" + textwrap.dedent(body))
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert e.value.exit_code == EXIT_CONFIG
    return e.value, path, line_of(path, profile_line)


def assert_names(err, path, line, key, value, allowed, profile="p"):
    msg = str(err)
    assert msg.startswith("%s:%d: " % (path, line)), msg
    assert "profile %r" % profile in msg, msg
    assert "key %r = %r" % (key, value) in msg, msg
    assert msg.endswith("(allowed: %s)" % allowed), msg
    assert "\n" not in msg
    assert (err.path, err.line, err.profile, err.key, err.value) == (path, line, profile, key,
                                                                     value)


# -- every validation rule ---------------------------------------------------------

RULES = [
    # (id, profile body, the key line, key, value as written, allowed, reason)
    # <bandwidth>: libvirt schema ranges
    ("rate zero", "inbound.average = 0\n", "inbound.average", "inbound.average", "0",
     "1..4294967295", "out of range"),
    ("rate above 2^32-1", "outbound.average = 4294967296\n", "outbound.average",
     "outbound.average", "4294967296", "1..4294967295", "out of range"),
    ("rate in human units above the bound", "inbound.average = 40Tbit\n", "inbound.average",
     "inbound.average", "40Tbit", "1..4294967295", "out of range"),
    ("floor out of range", "inbound.floor = 0\n", "inbound.floor", "inbound.floor", "0",
     "1..4294967295", "out of range"),
    ("burst above tc's 32-bit bytes", "inbound.average = 1000\ninbound.burst = 4194304\n",
     "inbound.burst", "inbound.burst", "4194304", "1..4194303", "out of range"),
    ("burst in human units too big", "inbound.average = 1000\ninbound.burst = 4GiB\n",
     "inbound.burst", "inbound.burst", "4GiB", "1..4194303", "out of range"),
    # <bandwidth>: libvirt's parser rules
    ("peak without average", "inbound.peak = 100Mbit\n", "inbound.peak", "inbound.peak",
     "100Mbit", "set inbound.average too", "peak needs inbound.average"),
    ("burst without average", "outbound.burst = 1MiB\n", "outbound.burst", "outbound.burst",
     "1MiB", "set outbound.average too", "burst needs outbound.average"),
    ("floor on outbound", "outbound.average = 10\noutbound.floor = 5\n", "outbound.floor",
     "outbound.floor", "5", "inbound.floor", "floor exists only for inbound"),
    # ours: peak below average
    ("peak below average", "inbound.average = 100Mbit\ninbound.peak = 50Mbit\n",
     "inbound.peak", "inbound.peak", "50Mbit", "12500..4294967295, at least the average",
     "peak (6250 KB/s) is below average (12500 KB/s)"),
    ("nova peak below average", "quota:vif_outbound_average = 200\n"
     "quota:vif_outbound_peak = 100\n", "quota:vif_outbound_peak",
     "quota:vif_outbound_peak", "100", "200..4294967295, at least the average", "below"),
    ("unit refused", "inbound.average = 100Mbps\n", "inbound.average", "inbound.average",
     "100Mbps", None, "ambiguous"),
    ("inexact unit", "inbound.average = 1Mibit\n", "inbound.average", "inbound.average",
     "1Mibit", "whole multiples of 8000 bit", "nearest exact values are 131 KB/s = 1048kbit/s and 132 KB/s = 1056kbit/s"),
    ("unknown bandwidth field", "inbound.ceil = 5\n", "inbound.ceil", "inbound.ceil", "5",
     "average, peak, burst, floor", "unknown bandwidth field"),
    # <iotune>: qemu throttle_is_valid / libvirt QEMU_BLOCK_IOTUNE_MAX
    ("iotune zero", "disk.total_iops_sec = 0\n", "disk.total_iops_sec", "disk.total_iops_sec",
     "0", "1..1000000000000000", "out of range"),
    ("iotune above 1e15", "disk.read_bytes_sec = 1000000000000001\n", "disk.read_bytes_sec",
     "disk.read_bytes_sec", "1000000000000001", "1..1000000000000000", "out of range"),
    ("total and read exclusive", "disk.total_bytes_sec = 100\ndisk.read_bytes_sec = 50\n",
     "disk.read_bytes_sec", "disk.read_bytes_sec", "50",
     "either total_bytes_sec or read_bytes_sec/write_bytes_sec", "mutually exclusive"),
    ("total and write iops exclusive (nova keys)", "quota:disk_total_iops_sec = 100\n"
     "quota:disk_write_iops_sec = 50\n", "quota:disk_write_iops_sec",
     "quota:disk_write_iops_sec", "50",
     "either total_iops_sec or read_iops_sec/write_iops_sec", "mutually exclusive"),
    ("total_max and write_max exclusive", "disk.total_iops_sec = 10\ndisk.write_iops_sec = 10\n"
     "disk.total_iops_sec_max = 20\ndisk.write_iops_sec_max = 20\n", "disk.write_iops_sec =",
     "disk.write_iops_sec", "10", "either total_iops_sec or read_iops_sec/write_iops_sec",
     "mutually exclusive"),
    ("max needs its base", "disk.read_iops_sec_max = 100\n", "disk.read_iops_sec_max",
     "disk.read_iops_sec_max", "100", "set read_iops_sec too", "require corresponding"),
    ("max below its base", "disk.total_bytes_sec = 200MB/s\n"
     "disk.total_bytes_sec_max = 100MB/s\n", "disk.total_bytes_sec_max",
     "disk.total_bytes_sec_max", "100MB/s", "200000000..1000000000000000",
     "total_bytes_sec_max is below total_bytes_sec (200000000)"),
    ("max_length above 1 needs max", "disk.total_iops_sec = 10\n"
     "disk.total_iops_sec_max_length = 5\n", "disk.total_iops_sec_max_length",
     "disk.total_iops_sec_max_length", "5", "set total_iops_sec_max too",
     "burst length set without burst rate"),
    ("max * length above 1e15", "disk.total_bytes_sec = 10\n"
     "disk.total_bytes_sec_max = 1000000000000\n"
     "disk.total_bytes_sec_max_length = 1001\n", "disk.total_bytes_sec_max_length",
     "disk.total_bytes_sec_max_length", "1001", "1..1000", "max * length <= 1e15"),
    ("size_iops_sec needs iops", "disk.total_bytes_sec = 10\ndisk.size_iops_sec = 4KiB\n",
     "disk.size_iops_sec", "disk.size_iops_sec", "4KiB",
     "set total_iops_sec or read_/write_iops_sec", "iops size requires an iops value"),
    ("group name characters", "disk.total_iops_sec = 10\ndisk.group_name = a b\n",
     "disk.group_name", "disk.group_name", "a b", "letters, digits, '_', '.', ':', '-'",
     "invalid group name"),
    ("unknown iotune element", "disk.total_iops = 10\n", "disk.total_iops",
     "disk.total_iops", "10", ", ".join(policy.IOTUNE_KEYS), "unknown <iotune> element"),
    # <cputune>: libvirt vircgroup.h
    ("period below 1000", "cpu.period = 999\n", "cpu.period", "cpu.period", "999",
     "1000..1000000", "out of range"),
    ("period above 1000000", "quota:cpu_period = 1000001\n", "quota:cpu_period",
     "quota:cpu_period", "1000001", "1000..1000000", "out of range"),
    ("quota below 1000", "cpu.quota = 999\n", "cpu.quota", "cpu.quota", "999",
     "-1 or 1000..17592186044415", "out of range"),
    ("quota -2", "cpu.quota = -2\n", "cpu.quota", "cpu.quota", "-2",
     "-1 or 1000..17592186044415", "out of range"),
    ("quota above the kernel maximum", "quota:cpu_quota = 17592186044416\n", "quota:cpu_quota",
     "quota:cpu_quota", "17592186044416", "-1 or 1000..17592186044415", "out of range"),
    ("shares 1", "cpu.shares = 1\n", "cpu.shares", "cpu.shares", "1", "2..10000",
     "out of range"),
    ("shares above cgroup v2 weight", "quota:cpu_shares = 262144\n", "quota:cpu_shares",
     "quota:cpu_shares", "262144", "2..10000", "out of range"),
    ("limit 0", "cpu.limit = 0\n", "cpu.limit", "cpu.limit", "0", "1..100", "out of range"),
    ("limit 101", "cpu.limit = 101%\n", "cpu.limit", "cpu.limit", "101%", "1..100",
     "out of range"),
    ("limit and quota", "cpu.limit = 50\ncpu.quota = 50000\n", "cpu.quota", "cpu.quota",
     "50000", "either cpu.limit or cpu.quota/cpu.period", "contradictory"),
    ("unknown cpu key", "cpu.weight = 5\n", "cpu.weight", "cpu.weight", "5",
     "limit, period, quota, shares", "unknown cpu setting"),
    ("cpu value not a number", "cpu.limit = half\n", "cpu.limit", "cpu.limit", "half",
     "an integer", "not a whole number"),
    # profile keys
    ("on_existing", "on_existing = replace\n", "on_existing", "on_existing", "replace",
     "fill, override", "unknown mode"),
    ("unknown key", "bandwidth = 5\n", "bandwidth =", "bandwidth", "5",
     policy.PROFILE_KEYS_HELP, "unknown key"),
    ("same setting twice (nova + native)", "inbound.average = 100\n"
     "quota:vif_inbound_average = 100\n", "quota:vif_inbound_average",
     "quota:vif_inbound_average", "100", "only one of 'inbound.average' and "
     "'quota:vif_inbound_average'", "sets the same thing"),
]


@pytest.mark.parametrize("body,line_key,key,value,allowed,reason",
                         [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_validation_rule(tmp_path, body, line_key, key, value, allowed, reason):
    err, path, line = config_error(tmp_path, body, line_key)
    if allowed is None:
        allowed = err.allowed
    assert_names(err, path, line, key, value, allowed)
    assert reason in str(err)


def test_floor_alone_is_valid(tmp_path):
    # libvirt: "average or floor" is required; floor alone is fine inbound
    c = load(tmp_path, "[profile p]\ninbound.floor = 1000\n")
    assert c.profiles["p"].bandwidth.inbound == Rate(floor=1000)


def test_max_length_1_without_max_is_valid(tmp_path):
    # qemu only refuses a burst length above 1 without a burst rate
    c = load(tmp_path, "[profile p]\ndisk.total_iops_sec = 5\n"
                       "disk.total_iops_sec_max_length = 1\n")
    assert c.profiles["p"].iotune.as_dict() == {"total_iops_sec": 5,
                                               "total_iops_sec_max_length": 1}


def test_quota_minus_one_is_valid(tmp_path):
    c = load(tmp_path, "[profile p]\ncpu.quota = -1\ncpu.period = 1000000\n")
    assert (c.profiles["p"].cpu.quota, c.profiles["p"].cpu.period) == (-1, 1000000)


def test_bounds_are_inclusive(tmp_path):
    c = load(tmp_path, """\
        [profile p]
        inbound.average = 4294967
        inbound.burst = 4194303
        outbound.average = 536870911
        disk.total_bytes_sec = 1000000000000000
        disk.total_bytes_sec_max = 1000000000000000
        disk.total_bytes_sec_max_length = 1
        cpu.shares = 10000
        cpu.period = 1000
        cpu.quota = 17592186044415
        """)
    p = c.profiles["p"]
    # inbound: Open vSwitch linux-htb's bound; outbound: its policing column's
    assert p.bandwidth.inbound == Rate(average=4294967, burst=4194303)
    assert p.bandwidth.outbound == Rate(average=536870911)
    assert p.cpu.shares == 10000


# -- rules inside [profile NAME disk ...] sections ------------------------------------

def test_disk_rule_error_names_its_section_line(tmp_path):
    path = write(tmp_path, """\
        [profile p]
        disk.total_iops_sec = 100

        [profile p disk bus=sata]
        read_iops_sec = 10
        read_iops_sec_max = 5
        """)
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert_names(e.value, path, 6, "read_iops_sec_max", "5", "10..1000000000000000")


def test_disk_rule_duplicate_setting(tmp_path):
    path = write(tmp_path, """\
        [profile p]
        [profile p disk target=vd*]
        read_iops_sec = 10
        disk.read_iops_sec = 20
        """)
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert_names(e.value, path, 4, "disk.read_iops_sec", "20",
                 "only one of 'read_iops_sec' and 'disk.read_iops_sec'")


def test_disk_rule_unknown_element(tmp_path):
    path = write(tmp_path, "[profile p]\n[profile p disk bus=virtio]\nspeed = 5\n")
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert_names(e.value, path, 3, "speed", "5", ", ".join(policy.IOTUNE_KEYS))


def test_group_name_means_one_set_of_values(tmp_path):
    path = write(tmp_path, """\
        [profile p]
        disk.total_iops_sec = 100
        disk.group_name = shared

        [profile p disk bus=sata]
        total_iops_sec = 50
        group_name = shared
        """)
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert_names(e.value, path, 7, "group_name", "shared",
                 "one set of <iotune> values per group_name")
    assert "qemu keeps one set of limits per throttle group" in str(e.value)


def test_disk_rule_without_profile(tmp_path):
    path = write(tmp_path, "[profile p]\n[profile q disk bus=sata]\ntotal_iops_sec = 5\n")
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert str(e.value).startswith("%s:2: profile 'q': disk rule for profile 'q'" % path)
    assert "(allowed: p)" in str(e.value)


# -- file syntax -------------------------------------------------------------------------

@pytest.mark.parametrize("body,line,needle", [
    ("[profile p]\nkey_without_value\n", 2, "cannot parse line 'key_without_value'"),
    ("inbound.average = 5\n[profile p]\n", 1, "key before the first [section]"),
    ("[profile p]\n[profile p]\n", 2, "section [profile p] appears twice (first on line 1)"),
    ("[profile p]\n[profile  p]\n", 2, "appears twice"),
    ("[profile p]\ninbound.average = 5\ninbound.average = 6\n", 3,
     "key appears twice in one section (first on line 2)"),
    ("[profile p]\ninbound.average = 5\n  outbound.average = 6\n", 3, "indented line"),
    ("[profile p\n", 1, "cannot parse section header"),
    ("[]\n", 1, "cannot parse section header"),
    ("[profile p]\n= 5\n", 2, "no key before '='"),
    ("[profiles]\n", 1, "unknown section [profiles]"),
    ("[profile p q]\n", 1, "a profile name cannot contain spaces"),
    ("[settings]\ndefault_profile = gold\n[profile p]\n", 2,
     "names a profile that does not exist"),
    ("[settings]\novsdb = /run/db.sock\n", 2, "not an OVSDB remote"),
    ("[settings]\novsdb_timeout = 0\n", 2, "out of range (allowed: 0.1..60 seconds)"),
    ("[settings]\non_error.before_vm_start = ignore\n", 2, "unknown failure mode"),
    ("[settings]\nhost_cpus = 0\n", 2, "not a CPU count (allowed: 1..65536)"),
    ("[settings]\nlog_level = LOUD\n", 2, "unknown log level"),
    ("[settings]\ncolour = blue\n", 2, "unknown setting"),
])
def test_syntax_errors_name_file_and_line(tmp_path, body, line, needle):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert str(e.value).startswith("%s:%d: " % (path, line)), str(e.value)
    assert needle in str(e.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_bytes(b"[profile p]\n# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        policy.load_config(str(path))
    assert str(e.value) == "%s:2: not UTF-8 text" % path


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert str(e.value).startswith("%s: config file not found" % path)


def test_missing_default_file_is_ok_for_hooks(tmp_path):
    c = policy.load_config(environ={policy.CONFIG_ENV: str(tmp_path / "nope.conf")},
                           missing_ok=True)
    assert c.profiles == {} and c.path is None


def test_comments_everywhere(tmp_path):
    c = load(tmp_path, """\
        # a comment
        ; another
        [settings]   ; trailing
        default_profile = p # after one space
        [profile p]
        inbound.average = 100Mbit ; single space
        outbound.average = 50Mbit\t# a tab
        """)
    p = c.profiles["p"]
    assert p.bandwidth == Bandwidth(inbound=Rate(average=12500), outbound=Rate(average=6250))
    assert c.settings.default_profile == "p"


def test_hash_without_space_is_not_a_comment(tmp_path):
    err, path, line = config_error(tmp_path, "disk.total_iops_sec = 5\ndisk.group_name = a#b\n",
                                   "group_name")
    assert err.value == "a#b"


def test_keys_are_case_insensitive(tmp_path):
    c = load(tmp_path, "[profile p]\nInbound.Average = 10\nON_EXISTING = Override\n")
    assert c.profiles["p"].bandwidth.inbound == Rate(average=10)
    assert c.profiles["p"].on_existing == policy.ON_EXISTING_OVERRIDE


# -- what a good file gives --------------------------------------------------------------

def test_shipped_example():
    c = policy.load_config(EXAMPLE)
    assert sorted(c.profiles) == ["gold", "nova-m1", "silver", "vm-network"]
    gold = c.profiles["gold"]
    assert gold.on_existing == policy.ON_EXISTING_FILL
    assert gold.bandwidth == Bandwidth(inbound=Rate(average=12500, peak=25000, burst=1024),
                                       outbound=Rate(average=6250, burst=512))
    assert gold.iotune.values == (("total_bytes_sec", 200000000), ("total_iops_sec", 2000),
                                  ("total_iops_sec_max", 4000),
                                  ("total_iops_sec_max_length", 10))
    assert (gold.cpu.limit, gold.cpu.shares) == (50, 2048)
    assert gold.iotune_for("sata", "sdb") == (IoTune((("total_iops_sec", 500),)), "bus=sata")
    assert gold.iotune_for("virtio", "vda")[1] == "profile"
    # no on_error line: every built-in (fail-closed) default holds (issue 9 item 11;
    # tests/core/test_hostile_policy.py checks each hook point)
    assert dict(c.settings.on_error) == {}


def test_nova_keys_verbatim():
    nova = policy.load_config(EXAMPLE).profiles["nova-m1"]
    assert nova.bandwidth == Bandwidth(inbound=Rate(average=12500, peak=25000, burst=1024),
                                       outbound=Rate(average=12500))
    assert nova.iotune.as_dict() == {"read_bytes_sec": 104857600, "write_iops_sec": 400}
    assert (nova.cpu.quota, nova.cpu.period) == (50000, 100000)


def test_every_iotune_element_is_accepted(tmp_path):
    body = "[profile p]\n" + "".join("disk.%s = %s\n" % kv for kv in [
        ("read_bytes_sec", "1MB/s"), ("write_bytes_sec", 2000000), ("read_iops_sec", 10),
        ("write_iops_sec", 20), ("read_bytes_sec_max", "2MB/s"),
        ("write_bytes_sec_max", 4000000), ("read_iops_sec_max", 40),
        ("write_iops_sec_max", 80), ("size_iops_sec", "4KiB"), ("group_name", "g1"),
        ("read_bytes_sec_max_length", 3), ("write_bytes_sec_max_length", 4),
        ("read_iops_sec_max_length", 5), ("write_iops_sec_max_length", 6)])
    io = load(tmp_path, body).profiles["p"].iotune
    # kept in libvirt's RNG order
    assert [k for k, _ in io.values] == [k for k in policy.IOTUNE_KEYS if k in io.as_dict()]
    assert io.as_dict()["size_iops_sec"] == 4096
    assert io.as_dict()["read_bytes_sec"] == 1000000


def test_disk_rule_precedence(tmp_path):
    c = load(tmp_path, """\
        [profile p]
        disk.total_iops_sec = 100
        [profile p disk bus=virtio]
        total_iops_sec = 200
        [profile p disk target=vd[c-z]]
        total_iops_sec = 300
        [profile p disk target=sdx]
        """)
    p = c.profiles["p"]
    # a target rule beats a bus rule, which beats the profile-wide keys
    assert p.iotune_for("virtio", "vdc") == (IoTune((("total_iops_sec", 300),)),
                                             "target=vd[c-z]")
    assert p.iotune_for("virtio", "vda") == (IoTune((("total_iops_sec", 200),)), "bus=virtio")
    assert p.iotune_for("sata", "sda") == (IoTune((("total_iops_sec", 100),)), "profile")
    # an empty rule exempts the disks it matches
    assert p.iotune_for("sata", "sdx") == (IoTune(), "target=sdx")


def test_config_path_precedence():
    env = {policy.CONFIG_ENV: "/from/env.conf"}
    assert policy.config_path("/from/cli.conf", env) == "/from/cli.conf"
    assert policy.config_path(None, env) == "/from/env.conf"
    assert policy.config_path(None, {}) == policy.DEFAULT_CONFIG_PATH == \
        "/etc/qos-hooks/qos-hooks.conf"


# -- profile selection ---------------------------------------------------------------------

SELECT = """\
[settings]
default_profile = d
[profile d]
[profile cli]
[profile env]
[profile md]
[profile nic]
"""


def test_vm_profile_precedence(tmp_path):
    c = load(tmp_path, SELECT)
    S = policy.Selection
    assert S(cli_profile="cli", env_vm_profile="env").vm_profile(c, "md")[0].name == "cli"
    assert S(env_vm_profile="env").vm_profile(c, "md")[0].name == "env"
    p, src = S().vm_profile(c, "md")
    assert p.name == "md" and src == "VM custom property qos_profile (metadata)"
    p, src = S().vm_profile(c, None)
    assert (p.name, src) == ("d", "default_profile")


def test_no_profile_at_all(tmp_path):
    c = load(tmp_path, "[profile p]\n")
    assert policy.Selection().vm_profile(c, None) == (None, None)


def test_nic_profile_precedence(tmp_path):
    c = load(tmp_path, SELECT)
    vm = policy.Selection(cli_profile="cli").vm_profile(c, None)
    # the vNIC's own property wins over --profile for that vNIC
    assert policy.Selection(cli_profile="cli").nic_profile(c, "nic", vm)[0].name == "nic"
    assert policy.Selection(env_nic_profile="env").nic_profile(c, "nic", vm)[0].name == "env"
    assert policy.Selection().nic_profile(c, None, vm) == vm


def test_unknown_profile_names_its_source(tmp_path):
    path = write(tmp_path, "[profile gold]\n[profile silver]\n")
    c = policy.load_config(path)
    with pytest.raises(ConfigError) as e:
        policy.Selection().vm_profile(c, "bronze")
    assert str(e.value) == ("%s: unknown profile 'bronze' named by VM custom property "
                            "qos_profile (metadata) (allowed: gold, silver)" % path)
    assert e.value.exit_code == EXIT_CONFIG


# -- CPU helpers -----------------------------------------------------------------------------

def test_cpu_cap_follows_mom():
    # vdsm mom.d/04-cputune.policy: quota = limit/100 * period * hostCPUs / vCPUs
    assert policy.cpu_period_quota_for_limit(50, 16, 4) == (100000, 200000)
    assert policy.cpu_period_quota_for_limit(100, 2, 2) == (100000, 100000)
    # below 1000 us MOM stretches period and quota by the same factor
    period, quota = policy.cpu_period_quota_for_limit(1, 1, 64)
    assert period > 100000 and quota >= 1000
    assert period <= policy.CPU_PERIOD_MAX
    assert policy.cpu_quota_for_limit(50, 100000, 16, 4) == 200000


# -- the documented examples parse -----------------------------------------------------------

def test_examples_in_the_docs_parse():
    """Every ```ini block of docs/policy.md and the example in policy's
    docstring is a valid policy file."""
    import re
    root = os.path.dirname(EXAMPLE)
    with open(os.path.join(root, "..", "docs", "policy.md")) as f:
        blocks = re.findall(r"```ini\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 2
    block = policy.__doc__.split("::\n\n", 1)[1].split("\n\nValidation", 1)[0]
    for text in blocks + [textwrap.dedent(block)]:
        c = policy.parse_config(text, "doc")
        assert c.profiles


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbf[profile p]\ninbound.average = 5\n")
    assert policy.load_config(str(path)).profiles["p"].bandwidth.inbound == Rate(average=5)


def test_host_keys_in_a_later_profile_are_parsed(tmp_path):
    # regression: the host.* parsers were looked up only for the first profile
    cfg = load(tmp_path, """\
        [profile vm]
        inbound.average = 100
        [profile net]
        host.ls.m2 = 50
        host.ul.m2 = 500Mbit
        """)
    # kept as written, with their lines, for the network side to parse
    assert cfg.profiles["net"].host == (("host.ls.m2", "50", 4), ("host.ul.m2", "500Mbit", 5))
    from qos_hooks.hostnet.hostqos import Curve, HostQos, profile_host_qos
    assert profile_host_qos(cfg.profiles["net"]) == HostQos(ls=Curve(m2=50),
                                                            ul=Curve(m2=500000000))


def test_shipped_example_host_network_profile():
    cfg = policy.load_config(EXAMPLE)
    assert cfg.settings.clean_libvirt_leftovers is True
    from qos_hooks.hostnet.hostqos import Curve, HostQos, profile_host_qos
    assert [k for k, _, _ in cfg.profiles["vm-network"].host] == [
        "host.ls.m2", "host.ul.m2", "host.rt.m2"]
    assert profile_host_qos(cfg.profiles["vm-network"]) == HostQos(
        ls=Curve(m2=50), ul=Curve(m2=500000000), rt=Curve(m2=100000000))


def test_clean_libvirt_leftovers_setting(tmp_path):
    cfg = load(tmp_path, "[settings]\nclean_libvirt_leftovers = no\n")
    assert cfg.settings.clean_libvirt_leftovers is False
    path = write(tmp_path, "[settings]\nclean_libvirt_leftovers = maybe\n")
    with pytest.raises(ConfigError) as e:
        policy.load_config(path)
    assert "%s:2:" % path in str(e.value) and "clean_libvirt_leftovers" in str(e.value)
    assert "yes, no" in str(e.value)
