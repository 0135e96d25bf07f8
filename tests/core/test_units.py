"""Units: human quantities convert exactly, or are refused with the nearest exact values."""

import pytest

from qos_hooks.core import units
from qos_hooks.core.units import UnitError


@pytest.mark.parametrize("text,expected", [
    (12500, 12500),              # an int is already in libvirt units
    ("12500", 12500),            # so is a bare number
    ("100Mbit", 12500),          # 100e6 bit/s / 8000
    ("100 Mbit", 12500),
    ("100Mbit/s", 12500),
    ("100mbit", 12500),          # SI prefixes are case-insensitive (no milli)
    ("1Gbit", 125000),
    ("8kbit", 1),                # the smallest unit: 8000 bit/s
    ("12MB/s", 12000),           # 12e6 B/s / 1000
    ("1kB/s", 1),
    ("1KB/s", 1),                # K = k = 1000, as tc's kbps
    ("1.5MB/s", 1500),
    ("0.5Gbit", 62500),
    ("1000KiB/s", 1024),         # 1024000 B/s / 1000
])
def test_libvirt_rate(text, expected):
    assert units.parse_libvirt_rate(text) == expected


@pytest.mark.parametrize("text,expected", [
    (1024, 1024), ("1024", 1024), ("1MiB", 1024), ("512KiB", 512), ("1KiB", 1),
    ("2GiB", 2 * 1024 * 1024), ("8Kibit", 1), ("0.5MiB", 512), ("1024B", 1),
])
def test_libvirt_burst(text, expected):
    assert units.parse_libvirt_burst(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("200MB/s", 200000000), ("1MiB/s", 1048576), ("8bit/s", 1), ("4096", 4096),
    ("1Gbit", 125000000),
])
def test_bytes_per_second(text, expected):
    assert units.parse_bytes_per_second(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("4096", 4096), ("4KiB", 4096), ("1MB", 1000000), ("8bit", 1),
])
def test_bytes(text, expected):
    assert units.parse_bytes(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("10Mbit", 10 ** 7), ("1MB/s", 8 * 10 ** 6), ("123", 123), ("1Gibit", 2 ** 30),
])
def test_bits_per_second(text, expected):
    assert units.parse_bits_per_second(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("50", 50), ("50%", 50), (" 7 ", 7), ("-1", -1), (3, 3),
])
def test_count(text, expected):
    assert units.parse_count(text) == expected


def test_inexact_rate_names_the_nearest_exact_values():
    # 8 Mibit/s = 8388608 bit/s = 1048.576 libvirt units
    with pytest.raises(UnitError) as e:
        units.parse_libvirt_rate("8Mibit")
    assert "'8Mibit' is not a whole number of KB/s units" in str(e.value)
    assert "1048 KB/s = 8384kbit/s and 1049 KB/s = 8392kbit/s" in str(e.value)
    assert e.value.allowed == "whole multiples of 8000 bit"


def test_inexact_burst_names_the_nearest_exact_values():
    with pytest.raises(UnitError) as e:
        units.parse_libvirt_burst("1MB")   # 1e6 bytes = 976.5625 KiB
    assert "976 KiB = 7995392bit and 977 KiB = 8003584bit" in str(e.value)


@pytest.mark.parametrize("fn,text,needle", [
    (units.parse_libvirt_rate, "100Mbps", "ambiguous"),
    (units.parse_libvirt_rate, "100kbps", "ambiguous"),
    (units.parse_libvirt_rate, "12MB", "is a size, not a rate"),
    (units.parse_libvirt_rate, "100furlongs", "unknown rate unit"),
    (units.parse_libvirt_rate, "fast", "not a quantity"),
    (units.parse_libvirt_rate, "-5", "not a quantity"),
    (units.parse_libvirt_rate, "1.5", "whole numbers of KB/s"),
    (units.parse_libvirt_rate, "", "not a quantity"),
    (units.parse_libvirt_burst, "1MB/s", "unknown size unit"),
    (units.parse_libvirt_burst, "2.5", "whole numbers of KiB"),
    (units.parse_bytes_per_second, "1.5", "whole number"),
    (units.parse_bytes, "0.5", "whole number"),
    (units.parse_count, "ten", "not a whole number"),
    (units.parse_count, "1.5", "not a whole number"),
])
def test_refused(fn, text, needle):
    with pytest.raises(UnitError) as e:
        fn(text)
    assert needle in str(e.value)


def test_bool_is_not_a_number():
    with pytest.raises(UnitError):
        units.parse_libvirt_rate(True)


def test_conversions_are_exact():
    # FIELD_NOTES section 1: rate unit = 8000 bit/s, burst unit = 8192 bit
    assert units.libvirt_rate_to_bps(12500) == 100 * 10 ** 6
    assert units.libvirt_rate_to_ovs_kbps(12500) == 100000
    assert units.libvirt_burst_to_bits(1024) == 8 * 2 ** 20
    assert units.libvirt_burst_to_ovs_kbit(1024) == 8192
    assert units.libvirt_burst_to_bytes(1024) == 2 ** 20


@pytest.mark.parametrize("text", ["100Mbit", "12MB/s", "1Gbit", "8kbit", "250kB/s"])
def test_rate_round_trip(text):
    v = units.parse_libvirt_rate(text)
    assert units.parse_libvirt_rate(units.format_bps(units.libvirt_rate_to_bps(v))) == v


def test_formatting():
    assert units.format_bps(100 * 10 ** 6) == "100Mbit/s"
    assert units.format_bps(1500) == "1.500kbit/s"
    assert units.format_bps(7) == "7bit/s"
    assert units.format_libvirt_rate(12500) == "100Mbit/s (12500 KB/s)"
    assert units.format_libvirt_burst(1024) == "1MiB"
    assert units.format_bytes(1000) == "1000B"
