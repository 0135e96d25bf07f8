"""``qos-hooks top``: a live view of every vNIC's limit and what it passes.

One line per vNIC, refreshed every ``--interval`` seconds (default 1): domain,
vNIC, configured average in and out, measured rate in and out over the last
interval, percent of the limit, limiter drops per second, and a DRIFT marker.
The numbers are the ones ``qos-hooks metrics`` exports (qos_hooks.observe.metrics
collects both): rates are the difference of two collections' byte counters
divided by the time between the two counter reads; drops per second count the htb class's and
the policer's drops.  "in"/"out" are the VM's inbound/outbound.

Live mode uses curses (standard library).  Keys: ``d`` domain, ``n`` vNIC,
``i`` rate in, ``o`` rate out, ``p`` percent of limit, ``x`` drops/s (the same
key again reverses the order), ``q`` quits.  Colours only in live mode on a
terminal that has them, and never with NO_COLOR set.  ``--once`` prints one
snapshot (two collections one interval apart) as plain text; ``--json`` prints
that snapshot as JSON.  Without a terminal, the live mode prints a plain table
every interval.
"""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

SORT_KEYS = {"d": "domain", "n": "vnic", "i": "rate_in", "o": "rate_out", "p": "percent",
             "x": "drops"}
DEFAULT_SORT = "percent"


@dataclass(frozen=True)
class Row:
    domain: str
    domain_uuid: str
    vnic: str
    mac: str
    backend: str
    average_in: Optional[int]        # bytes/s, configured
    average_out: Optional[int]
    rate_in: Optional[float]         # bytes/s, measured over the interval
    rate_out: Optional[float]
    percent_in: Optional[float]      # rate / average * 100
    percent_out: Optional[float]
    drops_per_second: float
    drift: bool
    interval: float

    @property
    def percent(self):
        return max([p for p in (self.percent_in, self.percent_out) if p is not None] or [-1.0])

    def to_dict(self):
        d = asdict(self)
        d["percent"] = None if self.percent < 0 else self.percent
        return d


def _key(v):
    return (v.backend, v.ifname, v.mac)


def _drops(v):
    return sum(s.drops for s in v.shaper.values()) + sum(v.policer_dropped.values())


def rows(prev, cur):
    """Rows for the vNICs of HostSample ``cur``, rates against ``prev``."""
    dt_all = max(cur.time - prev.time, 1e-6)
    before = {_key(v): v for v in prev.vnics}
    out = []
    for v in cur.vnics:
        p = before.get(_key(v))
        # the time between the two counter reads of THIS vNIC, not between the
        # ends of the collections (a slow OVSDB answer would skew the rate)
        dt = max(v.time - p.time, 1e-6) if p is not None and v.time and p.time else dt_all
        rate = {}
        for d in ("inbound", "outbound"):
            c, o = v.counters.get(d), p.counters.get(d) if p is not None else None
            if c is None or o is None or c.bytes < o.bytes or v.counter_source != p.counter_source:
                rate[d] = None
            else:
                rate[d] = (c.bytes - o.bytes) / dt
        avg = {d: v.limits[d].average if d in v.limits else None for d in ("inbound", "outbound")}
        pct = {d: (rate[d] * 100.0 / avg[d]) if avg[d] and rate[d] is not None else None
               for d in avg}
        drops = max(0, _drops(v) - _drops(p)) / dt if p is not None else 0.0
        out.append(Row(v.domain, v.domain_uuid, v.ifname, v.mac, v.backend, avg["inbound"],
                       avg["outbound"], rate["inbound"], rate["outbound"], pct["inbound"],
                       pct["outbound"], drops, v.drift, dt))
    return out


def sort_rows(rs, key=DEFAULT_SORT, reverse=None):
    """Numeric keys sort largest first, names alphabetically; ``reverse`` flips."""
    numeric = key not in ("domain", "vnic")

    def k(r):
        if key == "domain":
            return (r.domain or r.domain_uuid, r.vnic)
        if key == "vnic":
            return (r.vnic,)
        if key == "drops":
            return (r.drops_per_second,)
        if key == "percent":
            return (r.percent,)
        val = getattr(r, key)
        return (-1.0 if val is None else val,)
    desc = numeric if reverse is None else (numeric != reverse)
    return sorted(rs, key=k, reverse=desc)


def fmt_rate(bytes_per_s):
    """Bytes/s as bit/s with three significant digits: 1000000 -> '8.00Mbit/s'."""
    if bytes_per_s is None:
        return "-"
    b = bytes_per_s * 8.0
    for unit, f in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if b >= f:
            v = b / f
            return ("%.2f" if v < 10 else "%.1f" if v < 100 else "%.0f") % v + unit
    return "%.0fbit/s" % b


def _pct(p):
    return "-" if p is None else "%.0f%%" % p


COLUMNS = (("DOMAIN", 18), ("VNIC", 10), ("AVG-IN", 11), ("AVG-OUT", 11), ("RATE-IN", 11),
           ("RATE-OUT", 11), ("%IN", 5), ("%OUT", 5), ("DROPS/S", 8), ("", 5))


def _cells(r):
    name = r.domain or (r.domain_uuid[:8] if r.domain_uuid else "-")
    return (name, r.vnic, fmt_rate(r.average_in), fmt_rate(r.average_out), fmt_rate(r.rate_in),
            fmt_rate(r.rate_out), _pct(r.percent_in), _pct(r.percent_out),
            "%.1f" % r.drops_per_second, "DRIFT" if r.drift else "")


def _line(cells):
    parts = []
    for (_, w), c in zip(COLUMNS, cells):
        c = str(c)
        if len(c) > w:
            c = c[:w - 1] + "~"
        parts.append(c.ljust(w))
    return " ".join(parts).rstrip()


def header():
    return _line([h for h, _ in COLUMNS])


def render(rs, sample=None, sort=DEFAULT_SORT):
    """Plain-text screen lines (what --once prints; live mode draws the same)."""
    lines = ["qos-hooks top  %d vNIC(s)  interval %.1fs  sort %s  %s" % (
        len(rs), rs[0].interval if rs else 0.0, sort, time.strftime("%H:%M:%S")), header()]
    lines += [_line(_cells(r)) for r in rs]
    if not rs:
        lines.append("(no vNIC with QoS found)")
    for p in (sample.problems if sample is not None else ()):
        lines.append("problem: %s" % p)
    return lines


def snapshot(collector, interval):
    first = collector.sample()
    time.sleep(interval)
    cur = collector.sample()
    return rows(first, cur), cur


def _live_curses(collector, interval, sort):
    import curses

    def main(scr):
        color = False
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        if curses.has_colors() and not os.environ.get("NO_COLOR"):
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
            curses.init_pair(2, curses.COLOR_YELLOW, -1)
            color = True
        scr.timeout(100)
        state = {"sort": sort, "reverse": None}
        prev = collector.sample()
        due = time.monotonic() + interval
        rs, cur = [], prev
        dirty = True
        while True:
            ch = scr.getch()
            if ch in (ord("q"), ord("Q"), 27):
                return
            if 0 <= ch < 256 and chr(ch) in SORT_KEYS:
                key = SORT_KEYS[chr(ch)]
                state["reverse"] = (not state["reverse"]) if key == state["sort"] else None
                state["sort"] = key
                dirty = True
            if ch == curses.KEY_RESIZE:
                dirty = True
            if time.monotonic() >= due:
                cur = collector.sample()
                # pyroute2 reads another network namespace (--netns) through a
                # child process, which leaves the terminal in cooked mode
                # (measured: 'stty -a' shows icanon echo again): restore ours
                curses.reset_prog_mode()
                curses.cbreak()
                curses.noecho()
                rs = rows(prev, cur)
                prev = cur
                due += interval
                if due < time.monotonic():
                    due = time.monotonic() + interval
                dirty = True
            if not dirty:
                continue
            dirty = False
            shown = sort_rows(rs, state["sort"], state["reverse"])
            lines = render(shown, cur, state["sort"])
            lines.append("keys: d domain  n vnic  i rate-in  o rate-out  p percent  x drops  "
                         "(again: reverse)  q quit")
            scr.clear()           # a full repaint each refresh: nothing stale survives
            h, w = scr.getmaxyx()
            for y, text in enumerate(lines[:h]):
                attr = 0
                if y == 1:
                    attr = curses.A_BOLD
                elif 2 <= y < 2 + len(shown) and color:
                    r = shown[y - 2]
                    if r.drift:
                        attr = curses.color_pair(1) | curses.A_BOLD
                    elif r.percent >= 95:
                        attr = curses.color_pair(2)
                try:
                    scr.addnstr(y, 0, text, max(0, w - 1), attr)
                except curses.error:
                    pass
            scr.refresh()
    curses.wrapper(main)


def _live_plain(collector, interval, sort, out):
    prev = collector.sample()
    while True:
        time.sleep(interval)
        cur = collector.sample()
        for line in render(sort_rows(rows(prev, cur), sort), cur, sort):
            out.write(line + "\n")
        out.write("\n")
        out.flush()
        prev = cur


def top_main(args):
    from qos_hooks.core.errors import UsageError
    from qos_hooks.observe.metrics import collector_from_args
    if args.interval <= 0:
        raise UsageError("--interval %s: want a positive number of seconds" % args.interval)
    collector = collector_from_args(args)
    collector.log_problems = False       # shown on the screen / in the JSON
    sort = args.sort
    if args.once or args.json:
        rs, cur = snapshot(collector, args.interval)
        rs = sort_rows(rs, sort)
        if args.json:
            sys.stdout.write(json.dumps({"interval": rs[0].interval if rs else args.interval,
                                         "sort": sort, "vnics": [r.to_dict() for r in rs],
                                         "problems": list(cur.problems)}, indent=2) + "\n")
        else:
            for line in render(rs, cur, sort):
                sys.stdout.write(line + "\n")
        return 0
    if sys.stdout.isatty() and sys.stdin.isatty() and os.environ.get("TERM", "dumb") != "dumb":
        _live_curses(collector, args.interval, sort)
    else:
        _live_plain(collector, args.interval, sort, sys.stdout)
    return 0
