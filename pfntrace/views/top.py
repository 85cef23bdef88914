"""`pfntrace top`'s screen, from aggregate Snapshots (pfntrace/aggregate.py).

:class:`TopState` keeps the latest two snapshots and what the keys changed
(sort column, pause, name filter); :func:`render` builds the rich screen and
:func:`plain` the text snapshot printed when stdout is not a terminal.  Both
take the current monotonic time as an argument, so tests render synthetic
snapshots to fixed text.
"""

import time

from rich.cells import cell_len
from rich.console import Group
from rich.text import Text

from pfntrace.aggregate import Counts
from pfntrace.views.columns import Column, lines

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
#
# Laid out for the terminal's size (views/columns.py): nothing is cut but a
# path's head; the header wraps between its parts, never inside one; rows
# that do not fit the height are counted, not cropped by rich.

# Files and processes tables: (column, priority).  Lower priority numbers
# stay longest: the verdicts and the totals are what top is for; the split
# by kind and the latencies go first.
FILE_COLUMNS = (
    Column("FLT/S", 3), Column("TOTAL", 1), Column("PFN", 9), Column("PAGE", 10),
    Column("PMD", 11), Column("TOUCH", 12), Column("UPDATED", 4), Column("CURRENT", 5),
    Column("MISSED", 2), Column("NO_NOTIF", 2), Column("P50", 8), Column("P99", 6),
    Column("LAST", 7), Column("PATH", 0, justify="left", flex=True, min_width=20),
)
PROC_COLUMNS = (
    Column("PID", 0), Column("COMM", 0, justify="left"), Column("FLT/S", 3),
    Column("TOTAL", 1), Column("PFN", 9), Column("PAGE", 10), Column("PMD", 11),
    Column("TOUCH", 12), Column("MISSED", 2), Column("NO_NOTIF", 2), Column("LAST", 7),
)


def _wrap(parts, width):
    """Text parts joined by two spaces, a new line before a part that would
    not fit: the header fits without cutting a word."""
    lines = [Text()]
    for part in parts:
        if len(lines[-1]) and cell_len(lines[-1].plain) + 2 + cell_len(part.plain) > width:
            lines.append(Text())
        elif len(lines[-1]):
            lines[-1].append("  ")
        lines[-1].append_text(part)
    return lines


def _probes_text(pc):
    text = "probes: %d attached" % pc.get("attached", 0)
    if pc.get("fentry"):    # of which BPF trampolines rather than kprobes
        text += " (%d fentry)" % pc["fentry"]
    text += ", %d inferred" % pc.get("inferred", 0)
    if pc.get("n/a"):
        text += ", %d n/a" % pc["n/a"]
    return Text(text + ", %d missing" % pc.get("missing", 0),
                style="yellow" if pc.get("missing") else "")


def _header(state, width):
    snap = state.cur or _EMPTY
    parts = [Text("pfntrace top", style="bold"), Text("kernel %s" % state.kernel),
             _probes_text(state.plan_counts),
             Text("mounts: %s" % (", ".join(state.mounts) or "all DAX"))]
    if state.pid:
        parts.append(Text("pid %d+children" % state.pid))
    lines = _wrap(parts, width)

    rate = Text("write faults: ")
    rate.append("%s/s" % fmt_rate(state.total_rate()), style="bold")
    parts = [rate, Text("total %d" % snap.total.total),
             Text("lost %d" % snap.lost, style="bold red" if snap.lost else "")]
    undecided = snap.total.verdict("UNDECIDED")
    if undecided:   # faults the rules could not judge: never hidden in CURRENT
        parts.append(Text("undecided %d" % undecided, style="bold yellow"))
    invisible = invisible_note(state, snap)
    if invisible:
        parts.append(Text(invisible, style="bold red" if state.multigrain else "bold yellow"))
    cost = state.cost()
    if cost is None:
        parts.append(Text("pfntrace cost: %s"
                          % ("unknown" if snap.bpf_run_ns is None else "measuring")))
    else:
        share, runs = cost
        parts.append(Text("pfntrace cost: BPF %.2f%% of a CPU (%s runs/s)"
                          % (share * 100, fmt_rate(runs))))
    lines += _wrap(parts, width)

    series = state.rate_series()
    peak = "  peak %s/s" % fmt_rate(max(series) if series else 0)
    room = max(0, width - len("rate  ") - len(peak))
    t = Text("rate  ")
    t.append(sparkline(series[-room:] if room else []), style="cyan")
    t.append(peak)
    return lines + [t]


def _verdict_cell(n, style):
    return (str(n), style if n else "")


def _file_cells(state, now_ns, key, c):
    return (fmt_rate(state.rate("files", key)), str(c.total),
            str(c.kind("pfn_mkwrite")), str(c.kind("page_mkwrite")), str(c.kind("pmd")),
            str(c.kind("fault")), str(c.verdict("UPDATED")), str(c.verdict("CURRENT")),
            _verdict_cell(c.verdict("MISSED"), "bold red"),
            _verdict_cell(c.verdict("NO_NOTIFIER"), "bold magenta"),
            fmt_ns(c.percentile(0.5)), fmt_ns(c.percentile(0.99)),
            fmt_age(now_ns - c.last_ts if c.last_ts else None), state.path(key))


def _proc_cells(state, now_ns, pid, c):
    return (str(pid), c.comm or "?", fmt_rate(state.rate("procs", pid)), str(c.total),
            str(c.kind("pfn_mkwrite")), str(c.kind("page_mkwrite")), str(c.kind("pmd")),
            str(c.kind("fault")),
            _verdict_cell(c.verdict("MISSED"), "bold red"),
            _verdict_cell(c.verdict("NO_NOTIFIER"), "bold magenta"),
            fmt_age(now_ns - c.last_ts if c.last_ts else None))


def _table(title, columns, rows, shown, width, what):
    """Title, header, rule, `shown` rows, and a line counting the others."""
    out = [Text(title, style="italic")]
    out += lines(columns, rows[:shown], width)
    if len(rows) > shown:
        out.append(Text("+%d more %s" % (len(rows) - shown, what), style="dim"))
    return out


def _row_budget(free, nfiles, nprocs):
    """How many file and process rows fit in `free` lines (a row beyond them
    costs a '+N more' line): files first, processes get at least a few."""
    if nfiles + nprocs <= free:
        return nfiles, nprocs
    free -= 2                           # the two '+N more' lines, at most
    procs = min(nprocs, max(free // 3, 1))
    files = min(nfiles, max(free - procs, 1))
    procs = min(nprocs, max(free - files, procs))
    return files, procs


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


def screen_lines(state, now_ns=None, width=80, height=None):
    """The whole screen as rich Text lines, none wider than `width`, at most
    `height` of them (None: as many as the rows need)."""
    if now_ns is None:
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    head = _header(state, width)
    files = [_file_cells(state, now_ns, k, c) for k, c in state.file_rows()]
    procs = [_proc_cells(state, now_ns, p, c) for p, c in state.proc_rows()]
    # Fixed lines: header, 2 x (blank, title, column names, rule), footer.
    fixed = len(head) + 8 + 1
    nf, np_ = len(files), len(procs)
    if height is not None:
        nf, np_ = _row_budget(max(height - fixed, 2), nf, np_)
    out = head + [Text("")]
    out += _table("files (sort: %s)" % SORTS[state.sort], FILE_COLUMNS, files, nf, width,
                  "files")
    out.append(Text(""))
    out += _table("processes", PROC_COLUMNS, procs, np_, width, "processes")
    out.append(_footer(state))
    for line in out:
        line.no_wrap = True
    return out if height is None else out[:height]


def render(state, now_ns=None, width=80, height=None):
    """The whole screen as one rich renderable."""
    return Group(*screen_lines(state, now_ns, width, height))


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
