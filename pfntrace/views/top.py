"""`pfntrace top`'s screen, from aggregate Snapshots (pfntrace/aggregate.py).

:class:`TopState` keeps the latest two snapshots and what the keys changed
(sort column, pause, name filter); :func:`render` builds the rich screen and
:func:`plain` the text snapshot printed when stdout is not a terminal.  Both
take the current monotonic time as an argument, so tests render synthetic
snapshots to fixed text.
"""

import time

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from pfntrace.aggregate import Counts

SORTS = ("faults/s", "total", "missed", "p99", "last", "name")
SPARK = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 60


def fmt_ns(ns):
    """Short duration: '512ns', '16us', '4.2ms', '3.0s'."""
    if ns is None:
        return "-"
    if ns < 1_000:
        return "%dns" % ns
    if ns < 1_000_000:
        return "%dus" % round(ns / 1e3)
    if ns < 1_000_000_000:
        return "%.1fms" % (ns / 1e6)
    return "%.1fs" % (ns / 1e9)


def fmt_age(ns):
    """Time since the last fault: '0.4s', '12s', '3m05s'."""
    if ns is None:
        return "-"
    s = max(ns, 0) / 1e9
    if s < 10:
        return "%.1fs" % s
    if s < 600:
        return "%ds" % s
    return "%dm%02ds" % (s // 60, s % 60)


def fmt_rate(r):
    if r is None:
        return "-"
    if r >= 100:
        return "%d" % round(r)
    return "%.1f" % r


def sparkline(values):
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v * (len(SPARK) - 1) / top + 0.5))]
                   for v in values)


class TopState:
    """What the screen shows: the latest snapshot, rates since the one before,
    and the interactive settings."""

    def __init__(self, kernel="?", plan_counts=None, mounts=(), interval_s=1.0, pid=0,
                 multigrain=False):
        self.kernel = kernel
        self.multigrain = multigrain   # 6.13+: an invisible write is a kernel bug
        self.plan_counts = plan_counts or {}   # {"attached": n, "inferred": n, "missing": n}
        self.mounts = list(mounts)
        self.interval_s = interval_s
        self.pid = pid
        self.cur = None
        self.prev = None
        self.paths = {}       # (dev, ino) -> path
        self.sort = 0         # index into SORTS
        self.paused = False
        self.filter = ""      # substring of path / comm
        self.prompt = None    # the filter being typed, or None
        self.message = ""

    # --- input -------------------------------------------------------------

    def update(self, snap, paths=None):
        if paths is not None:
            self.paths = paths
        self.prev, self.cur = self.cur, snap

    def key(self, ch):
        """Apply one key; returns False when the user asked to quit."""
        if self.prompt is not None:
            if ch in ("\r", "\n"):
                self.filter, self.prompt = self.prompt, None
            elif ch == "\x1b":
                self.prompt = None
            elif ch in ("\x7f", "\b"):
                self.prompt = self.prompt[:-1]
            elif ch.isprintable():
                self.prompt += ch
            return True
        if ch in ("q", "Q"):
            return False
        if ch == "s":
            self.sort = (self.sort + 1) % len(SORTS)
        elif ch == "p":
            self.paused = not self.paused
        elif ch == "f":
            self.prompt = ""
        return True

    # --- derived -----------------------------------------------------------

    def _elapsed_s(self):
        if self.prev is None or self.cur is None:
            return None
        dt = (self.cur.mono_ns - self.prev.mono_ns) / 1e9
        return dt if dt > 0 else None

    def rate(self, table, key):
        """Faults/s of one row of `files` or `procs` since the previous snapshot."""
        dt = self._elapsed_s()
        if dt is None:
            return None
        now = getattr(self.cur, table).get(key)
        before = getattr(self.prev, table).get(key)
        n = (now.total if now else 0) - (before.total if before else 0)
        return max(n, 0) / dt

    def total_rate(self):
        dt = self._elapsed_s()
        if dt is None:
            return None
        return max(self.cur.total.total - self.prev.total.total, 0) / dt

    def cost(self):
        """(share of one CPU, runs/s) spent in our BPF programs, or None."""
        dt = self._elapsed_s()
        if dt is None or self.cur.bpf_run_ns is None or self.prev.bpf_run_ns is None:
            return None
        ns = self.cur.bpf_run_ns - self.prev.bpf_run_ns
        runs = self.cur.bpf_run_cnt - self.prev.bpf_run_cnt
        return ns / (dt * 1e9), runs / dt

    def path(self, key):
        dev, ino = key
        return self.paths.get(key) or "%d:%d:%d" % (dev >> 20, dev & 0xFFFFF, ino)

    def rate_series(self, points=SPARK_POINTS):
        """Write faults per second in each of the last `points` intervals."""
        snap = self.cur
        if snap is None:
            return []
        iv = snap.interval_ns or 1_000_000_000
        last = snap.mono_ns // iv
        counts = dict(snap.rate)
        return [counts.get(e, 0) * 1e9 / iv for e in range(last - points + 1, last + 1)]

    def _sort_key(self, table, key, c):
        col = SORTS[self.sort]
        if col == "faults/s":
            return (-(self.rate(table, key) or 0), -c.total)
        if col == "total":
            return (-c.total,)
        if col == "missed":
            return (-(c.verdict("MISSED") + c.verdict("NO_NOTIFIER")), -c.total)
        if col == "p99":
            return (-(c.percentile(0.99) or 0), -c.total)
        if col == "last":
            return (-c.last_ts,)
        name = self.path(key) if table == "files" else c.comm
        return (name, key)

    def file_rows(self):
        if self.cur is None:
            return []
        rows = [(k, c) for k, c in self.cur.files.items()
                if not self.filter or self.filter in self.path(k)]
        rows.sort(key=lambda kc: self._sort_key("files", kc[0], kc[1]))
        return rows

    def proc_rows(self):
        if self.cur is None:
            return []
        rows = [(k, c) for k, c in self.cur.procs.items()
                if not self.filter or self.filter in c.comm]
        rows.sort(key=lambda kc: self._sort_key("procs", kc[0], kc[1]))
        return rows


def invisible_note(state, snap):
    """'invisible N' (write faults the last stat before them cannot tell
    from no write), loud on a multigrain kernel; '' when there are none."""
    n = snap.total.invisible
    if not n:
        return ""
    if state.multigrain:
        return "invisible %d ON A MULTIGRAIN KERNEL (should never happen)" % n
    return "invisible %d" % n


# --- the rich screen ---------------------------------------------------------

def _header(state):
    snap = state.cur or _EMPTY
    pc = state.plan_counts
    t = Text()
    t.append("pfntrace top", style="bold")
    t.append("  kernel %s  probes: %d attached, %d inferred, %d missing  mounts: %s"
             % (state.kernel, pc.get("attached", 0), pc.get("inferred", 0),
                pc.get("missing", 0), ", ".join(state.mounts) or "all DAX"))
    if state.pid:
        t.append("  pid %d+children" % state.pid)
    t.append("\nwrite faults: ")
    t.append("%s/s" % fmt_rate(state.total_rate()), style="bold")
    t.append("  total %d  lost " % snap.total.total)
    t.append(str(snap.lost), style="bold red" if snap.lost else "")
    undecided = snap.total.verdict("UNDECIDED")
    if undecided:   # faults the rules could not judge: never hidden in CURRENT
        t.append("  undecided ")
        t.append(str(undecided), style="bold yellow")
    invisible = invisible_note(state, snap)
    if invisible:
        t.append("  ")
        t.append(invisible, style="bold red" if state.multigrain else "bold yellow")
    t.append("  pfntrace cost: ")
    cost = state.cost()
    if cost is None:
        t.append("unknown" if snap.bpf_run_ns is None else "measuring")
    else:
        share, runs = cost
        t.append("BPF %.2f%% of a CPU (%s runs/s)" % (share * 100, fmt_rate(runs)))
    series = state.rate_series()
    t.append("\nrate  ")
    t.append(sparkline(series), style="cyan")
    t.append("  peak %s/s" % fmt_rate(max(series) if series else 0))
    return t


def _verdict_cell(n, style):
    return Text(str(n), style=style if n else "")


def _files_table(state, now_ns):
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False,
                  title="files (sort: %s)" % SORTS[state.sort], title_justify="left")
    for col in ("FLT/S", "TOTAL", "PFN", "PAGE", "PMD", "TOUCH", "UPDATED", "CURRENT",
                "MISSED", "NO_NOTIF", "P50", "P99", "LAST"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("PATH", no_wrap=True, overflow="ellipsis")
    for key, c in state.file_rows():
        table.add_row(
            fmt_rate(state.rate("files", key)), str(c.total),
            str(c.kind("pfn_mkwrite")), str(c.kind("page_mkwrite")), str(c.kind("pmd")),
            str(c.kind("fault")),
            str(c.verdict("UPDATED")), str(c.verdict("CURRENT")),
            _verdict_cell(c.verdict("MISSED"), "bold red"),
            _verdict_cell(c.verdict("NO_NOTIFIER"), "bold magenta"),
            fmt_ns(c.percentile(0.5)), fmt_ns(c.percentile(0.99)),
            fmt_age(now_ns - c.last_ts if c.last_ts else None),
            state.path(key))
    return table


def _procs_table(state, now_ns):
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False,
                  title="processes", title_justify="left")
    for col in ("PID", "COMM", "FLT/S", "TOTAL", "PFN", "PAGE", "PMD", "TOUCH",
                "MISSED", "NO_NOTIF", "LAST"):
        table.add_column(col, justify="left" if col == "COMM" else "right", no_wrap=True)
    for pid, c in state.proc_rows():
        table.add_row(
            str(pid), c.comm, fmt_rate(state.rate("procs", pid)), str(c.total),
            str(c.kind("pfn_mkwrite")), str(c.kind("page_mkwrite")), str(c.kind("pmd")),
            str(c.kind("fault")),
            _verdict_cell(c.verdict("MISSED"), "bold red"),
            _verdict_cell(c.verdict("NO_NOTIFIER"), "bold magenta"),
            fmt_age(now_ns - c.last_ts if c.last_ts else None))
    return table


def _footer(state):
    t = Text()
    if state.prompt is not None:
        t.append("filter by name: %s_  (Enter applies, Esc cancels)" % state.prompt,
                 style="reverse")
        return t
    t.append("s", style="bold")
    t.append(" sort  ")
    t.append("p", style="bold")
    t.append(" pause  ")
    t.append("f", style="bold")
    t.append(" filter  ")
    t.append("q", style="bold")
    t.append(" quit")
    if state.paused:
        t.append("   PAUSED", style="bold yellow")
    if state.filter:
        t.append("   filter: %s" % state.filter, style="bold")
    if state.message:
        t.append("   " + state.message)
    return t


def render(state, now_ns=None):
    """The whole screen as one rich renderable."""
    if now_ns is None:
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return Group(_header(state), Text(""), _files_table(state, now_ns),
                 _procs_table(state, now_ns), _footer(state))


# --- plain text (stdout not a terminal) -------------------------------------

PLAIN_COLUMNS = ("FLT/S", "TOTAL", "PFN", "PAGE", "PMD", "TOUCH", "UPDATED", "CURRENT",
                 "MISSED", "NO_NOTIF", "P50", "P99", "LAST")


def plain(state, now_ns=None, wall=None):
    """One text snapshot: a header line, then a line per file (like bcc's
    filetop -C), then a line per process.  Fixed columns: easy to awk."""
    if now_ns is None:
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    if wall is None:
        wall = time.strftime("%H:%M:%S")
    snap = state.cur or _EMPTY
    cost = state.cost()
    undecided = snap.total.verdict("UNDECIDED")
    invisible = invisible_note(state, snap)
    lines = ["%s  write faults %s/s  total %d  lost %d%s%s  bpf %s" % (
        wall, fmt_rate(state.total_rate()), snap.total.total, snap.lost,
        "  undecided %d" % undecided if undecided else "",
        "  " + invisible if invisible else "",
        "unknown" if cost is None else "%.2f%%cpu" % (cost[0] * 100))]
    lines.append("%7s %8s %7s %7s %7s %7s %7s %7s %7s %8s %6s %6s %6s  %s"
                 % (PLAIN_COLUMNS + ("PATH",)))
    for key, c in state.file_rows():
        lines.append("%7s %8d %7d %7d %7d %7d %7d %7d %7d %8d %6s %6s %6s  %s" % (
            fmt_rate(state.rate("files", key)), c.total,
            c.kind("pfn_mkwrite"), c.kind("page_mkwrite"), c.kind("pmd"), c.kind("fault"),
            c.verdict("UPDATED"), c.verdict("CURRENT"), c.verdict("MISSED"),
            c.verdict("NO_NOTIFIER"),
            fmt_ns(c.percentile(0.5)), fmt_ns(c.percentile(0.99)),
            fmt_age(now_ns - c.last_ts if c.last_ts else None), state.path(key)))
    procs = state.proc_rows()
    if procs:
        lines.append("%7s %-16s %7s %8s %7s %7s %7s %7s %7s %8s"
                     % ("PID", "COMM", "FLT/S", "TOTAL", "PFN", "PAGE", "PMD", "TOUCH",
                        "MISSED", "NO_NOTIF"))
        for pid, c in procs:
            lines.append("%7d %-16s %7s %8d %7d %7d %7d %7d %7d %8d" % (
                pid, c.comm, fmt_rate(state.rate("procs", pid)), c.total,
                c.kind("pfn_mkwrite"), c.kind("page_mkwrite"), c.kind("pmd"),
                c.kind("fault"), c.verdict("MISSED"), c.verdict("NO_NOTIFIER")))
    return "\n".join(lines) + "\n"


class _Empty:
    total = Counts()
    lost = 0
    bpf_run_ns = None
    rate = []


_EMPTY = _Empty()
