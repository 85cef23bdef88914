"""The correlation engine: from a recording to a verdict for every write fault.

``analyse(recording)`` walks the recorded events once and returns an
:class:`Analysis` with one :class:`Fault` per write fault, per-file and
per-process aggregates, a handler-latency histogram and a summary.

A recording is anything with the attributes of
``pfntrace.recording.Recording``: ``header``, ``meta``, ``lost``,
``trailer``, ``truncated``, ``truncation_reason`` and ``iter_events()``.
When it can also hand out raw event bytes (``iter_event_blocks()``) the engine unpacks those itself with one ``struct`` call per
block, which is several times faster than a dict per event.

Verdict rules (see ``_judge``):

* UPDATED     - mtime and ctime both changed between handler entry and return.
* CURRENT     - neither changed, and file_update_time ran inside the fault
                (the kernel itself found them current), or, when it did not
                run, mtime was already at (or after) the
                fault's clock tick minus the tolerance: the kernel correctly
                skipped the update (two faults in one coarse tick, or a
                fine-grained multigrain timestamp newer than the tick).  The
                tick: the fault's wall-clock time (ts_ns + realtime-minus-
                monotonic from the latest clock sample at or before ts_ns,
                else the header's) minus one clock tick (header
                clock.tick_ns), since the coarse clock lags ts_ns by less than
                a tick.
* MISSED      - did not move and is older than the tick (the stale-mtime bug),
                or only one of mtime/ctime moved.
* NO_NOTIFIER - do_wp_page made a shared PFN/mixed mapping writable without a
                ->pfn_mkwrite: the filesystem was never told.
* UNKNOWN     - the event carries no timestamps (all zero), nothing to judge.
"""

import bisect
import gc
import struct

from pfntrace import layout

C = layout.const

EV_WP = C("PFT_EV_WP")
EV_HANDLER = C("PFT_EV_HANDLER")
EV_DAX_FAULT = C("PFT_EV_DAX_FAULT")
EV_DAX_WRITEBACK = C("PFT_EV_DAX_WRITEBACK")
EV_DAX_MKWRITE = C("PFT_EV_DAX_MKWRITE")

ROLE_FAULT = C("PFT_ROLE_FAULT")
ROLE_HUGE_FAULT = C("PFT_ROLE_HUGE_FAULT")
ROLE_PAGE_MKWRITE = C("PFT_ROLE_PAGE_MKWRITE")
ROLE_PFN_MKWRITE = C("PFT_ROLE_PFN_MKWRITE")

F_IN_WP = C("PFT_F_IN_WP")
F_INODE_DAX = C("PFT_F_INODE_DAX")
F_PFN_PATH = C("PFT_F_PFN_PATH")
F_HAS_PFN_MKWRITE = C("PFT_F_HAS_PFN_MKWRITE")
F_HANDLER_RAN = C("PFT_F_HANDLER_RAN")
F_PMD = C("PFT_F_PMD")

FAULT_FLAG_WRITE = C("PFT_FAULT_FLAG_WRITE")
FAULT_FLAG_MKWRITE = C("PFT_FAULT_FLAG_MKWRITE")

VM_SHARED = C("PFT_VM_SHARED")
VM_PFN_OR_MIXED = C("PFT_VM_PFNMAP") | C("PFT_VM_MIXEDMAP")

VM_FAULT_RETRY = C("PFT_VM_FAULT_RETRY")
# VM_FAULT_ERROR = OOM | SIGBUS | SIGSEGV | HWPOISON | HWPOISON_LARGE | FALLBACK
VM_FAULT_ERROR = 0x0001 | 0x0002 | 0x0040 | 0x0010 | 0x0020 | 0x0800
VM_FAULT_FALLBACK = 0x0800

# bit 31 of i_ctime_nsec is I_CTIME_QUERIED on 6.13+; nsec < 2^30 so masking
# it is always safe.
NSEC_MASK = 0x7FFFFFFF
NS = 1_000_000_000

VERDICTS = ("UPDATED", "CURRENT", "MISSED", "NO_NOTIFIER", "UNKNOWN")
V_UPDATED, V_CURRENT, V_MISSED, V_NO_NOTIFIER, V_UNKNOWN = range(5)
PROBLEM_VERDICTS = ("MISSED", "NO_NOTIFIER")

KINDS = ("pfn_mkwrite", "page_mkwrite", "pmd", "fault", "no_notifier")
K_PFN, K_PAGE, K_PMD, K_FAULT, K_NONOTIFY = range(5)

LATENCY_BUCKETS = 65

# There is no coarse clock reading in the event (bpf_ktime_get_coarse_ns is
# refused for kprobe/tracepoint programs): the coarse clock timestamps come
# from lags ts_ns by less than one tick, header["clock"]["tick_ns"].  Without
# it assume HZ=100, the longest tick.
DEFAULT_TICK_NS = 10_000_000


# ---------------------------------------------------------------------------
# Raw rows: one struct.Struct over the cffi layout, unused fields skipped.

# The fields the engine reads, in row order.  Arrays are flattened
# (mtime_sec0, mtime_sec1, ...), comm stays bytes.
ROW_FIELDS = (
    "ts_ns", "duration_ns", "ino", "pgoff", "vm_flags",
    "mtime_sec0", "mtime_sec1", "ctime_sec0", "ctime_sec1",
    "mtime_nsec0", "mtime_nsec1", "ctime_nsec0", "ctime_nsec1",
    "type", "pid", "tid", "dev", "fault_flags", "ret", "roles", "flags",
    "ftu_calls", "arg", "comm",
)
ROW_INDEX = {name: i for i, name in enumerate(ROW_FIELDS)}


def _build_row_struct():
    ffi = layout.ffi
    wanted = set(ROW_FIELDS)
    parts = []   # (offset, name, code, size)
    for name, field in ffi.typeof("struct pft_event").fields:
        t = field.type
        if t.kind == "array":
            if t.item.cname == "char":
                parts.append((field.offset, name, "%ds" % t.length, t.length))
                continue
            code = _int_code(t.item.cname)
            size = ffi.sizeof(t.item)
            for i in range(t.length):
                parts.append((field.offset + i * size, "%s%d" % (name, i), code, size))
        else:
            parts.append((field.offset, name, _int_code(t.cname), ffi.sizeof(t)))
    by_name = {p[1]: p for p in parts}
    missing = wanted - set(by_name)
    assert not missing, missing
    # Row order must be ROW_FIELDS order, while struct order is offset order:
    # ROW_FIELDS is declared in offset order, check it.
    offsets = [by_name[n][0] for n in ROW_FIELDS]
    assert offsets == sorted(offsets), "ROW_FIELDS out of layout order"
    fmt = ["="]   # native byte order: the recording machine's (as decode.py)
    pos = 0
    for off, name, code, size in sorted(parts):
        if name not in wanted:
            continue
        if off > pos:
            fmt.append("%dx" % (off - pos))
        fmt.append(code)
        pos = off + size
    if layout.EVENT_SIZE > pos:
        fmt.append("%dx" % (layout.EVENT_SIZE - pos))
    st = struct.Struct("".join(fmt))
    assert st.size == layout.EVENT_SIZE, (st.size, layout.EVENT_SIZE)
    return st


def _int_code(cname):
    return {
        "uint64_t": "Q", "int64_t": "q", "uint32_t": "I", "int32_t": "i",
        "uint16_t": "H", "int16_t": "h", "uint8_t": "B", "int8_t": "b",
        "__u64": "Q", "__s64": "q", "__u32": "I", "__s32": "i",
    }[cname]


ROW_STRUCT = _build_row_struct()


def iter_rows(payload):
    """Rows (tuples in ROW_FIELDS order) from concatenated raw events."""
    n = len(payload) - len(payload) % ROW_STRUCT.size
    if n != len(payload):
        payload = memoryview(payload)[:n]
    return ROW_STRUCT.iter_unpack(payload)


def row_from_dict(ev):
    """A row from a decoded event dict (as layout.decode gives)."""
    out = []
    for name in ROW_FIELDS:
        if name == "comm":
            c = ev.get("comm", b"")
            out.append(c.encode() if isinstance(c, str) else c)
        elif name[-1] in "01" and name[:-1] in ev:
            out.append(ev[name[:-1]][int(name[-1])])
        else:
            out.append(ev.get(name, 0))
    return tuple(out)


def _row_source(recording):
    """Yield row iterables (one per block) from a recording."""
    for attr in ("iter_event_blocks", "iter_payloads"):
        fn = getattr(recording, attr, None)
        if callable(fn):
            return (iter_rows(p) for p in fn())
    return ((row_from_dict(ev) for ev in recording.iter_events()),)


# ---------------------------------------------------------------------------
# Results


def file_key(dev, ino):
    return "%d:%d:%d" % (dev >> 20, dev & 0xFFFFF, ino)


_WALL_CACHE = {}


def fmt_wall(ns):
    """Wall-clock ns as 'YYYY-mm-dd HH:MM:SS.nnnnnnnnn' (UTC)."""
    if ns is None:
        return "-"
    sec, nsec = divmod(ns, NS)
    day = _WALL_CACHE.get(sec)
    if day is None:
        import datetime
        try:
            dt = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc)
            day = dt.strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            day = str(sec)
        if len(_WALL_CACHE) > 4096:
            _WALL_CACHE.clear()
        _WALL_CACHE[sec] = day
    return "%s.%09d" % (day, nsec)


class Fault:
    """One write fault and its verdict."""

    __slots__ = ("ts", "kind", "verdict", "file", "pgoff", "pid", "tid",
                 "comm", "latency", "ftu_calls", "mtime_before",
                 "mtime_after", "ctime_before", "ctime_after", "wall",
                 "external", "_detail")

    def __init__(self, row):
        (self.ts, kind, verdict, self.file, self.pgoff, self.pid, self.tid,
         comm, self.latency, self.ftu_calls, self.mtime_before,
         self.mtime_after, self.ctime_before, self.ctime_after, self.wall,
         self.external) = row
        self.kind = KINDS[kind]
        self.verdict = VERDICTS[verdict]
        self.comm = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
        self._detail = None

    @property
    def key(self):
        return self.file.key

    @property
    def path(self):
        return self.file.path

    @property
    def detail(self):
        if self._detail is None:
            self._detail = _detail(self)
        return self._detail

    def as_dict(self):
        return {
            "ts_ns": self.ts, "kind": self.kind, "verdict": self.verdict,
            "detail": self.detail, "file": self.key, "path": self.path,
            "pgoff": self.pgoff, "pid": self.pid, "tid": self.tid,
            "comm": self.comm, "latency_ns": self.latency,
            "ftu_calls": self.ftu_calls,
            "mtime_before_ns": self.mtime_before,
            "mtime_after_ns": self.mtime_after,
            "ctime_before_ns": self.ctime_before,
            "ctime_after_ns": self.ctime_after,
            "fault_wall_ns": self.wall,
        }

    def __repr__(self):
        return "<Fault %s %s %s pgoff=%d pid=%d>" % (
            self.kind, self.verdict, self.key, self.pgoff, self.pid)


def _detail(f):
    m0, m1, c0, c1 = f.mtime_before, f.mtime_after, f.ctime_before, f.ctime_after
    note = "; timestamps set externally before this fault" if f.external else ""
    if f.verdict == "UNKNOWN":
        return "no timestamps recorded"
    if f.verdict == "NO_NOTIFIER":
        out = "made writable without ->pfn_mkwrite: the filesystem was not told"
        if m1:
            out += "; mtime %s" % fmt_wall(m1)
        return out + note
    if f.verdict == "UPDATED":
        return "mtime %s -> %s%s" % (fmt_wall(m0), fmt_wall(m1), note)
    if f.verdict == "CURRENT":
        return "mtime %s already current at the fault (%s)%s" % (
            fmt_wall(m1), fmt_wall(f.wall), note)
    # MISSED
    ftu = ("file_update_time called %d time(s)" % f.ftu_calls if f.ftu_calls
           else "file_update_time not called")
    m_moved, c_moved = m0 != m1, c0 != c1
    if m_moved and not c_moved:
        return ("mtime moved but ctime stayed at %s, %s%s"
                % (fmt_wall(c1), ftu, note))
    if c_moved and not m_moved:
        return ("ctime moved but mtime stayed at %s, %s%s"
                % (fmt_wall(m1), ftu, note))
    return ("mtime stayed at %s, %s before the fault (%s), %s%s"
            % (fmt_wall(m1), fmt_span(f.wall - m1), fmt_wall(f.wall), ftu, note))


def fmt_span(ns):
    """A positive duration in the unit that reads best."""
    if ns < 1_000_000:
        return "%.1f us" % (ns / 1e3)
    if ns < NS:
        return "%.3f ms" % (ns / 1e6)
    return "%.3f s" % (ns / 1e9)


class FileStats:
    """Per-file aggregate."""

    __slots__ = ("dev", "ino", "key", "path", "index", "selected",
                 "write_faults", "kinds", "verdicts", "reads", "retries",
                 "wp_entries", "nested", "fallbacks", "errors", "dax_pte_faults",
                 "dax_pmd_faults",
                 "dax_write_faults", "map_sync", "reprotects",
                 "reprotect_pages", "first_ts", "last_ts", "last_fault_ts",
                 "last_mtime",
                 "last_ctime", "external", "deleted", "final_mtime",
                 "final_ctime", "final_cmp")

    def __init__(self, dev, ino, path, index):
        self.dev, self.ino, self.index = dev, ino, index
        self.key = file_key(dev, ino)
        self.path = path or self.key
        self.selected = True
        self.write_faults = 0
        self.kinds = [0] * len(KINDS)
        self.verdicts = [0] * len(VERDICTS)
        self.reads = self.retries = self.wp_entries = self.nested = 0
        self.fallbacks = self.errors = 0
        self.dax_pte_faults = self.dax_pmd_faults = self.dax_write_faults = 0
        self.map_sync = self.reprotects = self.reprotect_pages = 0
        self.first_ts = self.last_fault_ts = None   # selected faults
        self.last_ts = None                         # any fault (ordering)
        self.last_mtime = self.last_ctime = None
        self.external = 0
        self.deleted = False
        self.final_mtime = self.final_ctime = None
        self.final_cmp = None      # "equal" | "newer" | "older" | "deleted" | None

    @property
    def devstr(self):
        return "%d:%d" % (self.dev >> 20, self.dev & 0xFFFFF)

    def kind_counts(self):
        return dict(zip(KINDS, self.kinds))

    def verdict_counts(self):
        return dict(zip(VERDICTS, self.verdicts))

    @property
    def problems(self):
        return self.verdicts[V_MISSED] + self.verdicts[V_NO_NOTIFIER]


class ProcStats:
    __slots__ = ("pid", "comm", "cmdline", "write_faults", "kinds",
                 "verdicts", "reads", "files")

    def __init__(self, pid, comm, cmdline=None):
        self.pid, self.comm, self.cmdline = pid, comm, cmdline
        self.write_faults = self.reads = 0
        self.kinds = [0] * len(KINDS)
        self.verdicts = [0] * len(VERDICTS)
        self.files = set()

    def kind_counts(self):
        return dict(zip(KINDS, self.kinds))

    def verdict_counts(self):
        return dict(zip(VERDICTS, self.verdicts))


class Selection:
    """Which faults the aggregates count: all None means everything."""

    def __init__(self, file=None, pid=None, comm=None, verdict=None):
        self.file = file
        self.pid = pid
        self.comm = comm
        self.verdict = verdict.upper() if verdict else None

    @property
    def active(self):
        return any(v is not None for v in (self.file, self.pid, self.comm, self.verdict))

    def describe(self):
        parts = []
        for name in ("file", "pid", "comm", "verdict"):
            v = getattr(self, name)
            if v is not None:
                parts.append("%s=%s" % (name, v))
        return ", ".join(parts)


class Analysis:
    """What analyse() returns."""

    def __init__(self):
        self.header = {}
        self.meta = {}
        self.trailer = None
        self.tolerance_ns = 0
        self.tick_ns = DEFAULT_TICK_NS
        self.truncated = False
        self.truncation_reason = None
        self.lost = []
        self.files = []          # FileStats, in first-seen order
        self.processes = []      # ProcStats, in first-seen order
        self.latency = [0] * LATENCY_BUCKETS   # log2 buckets of handler ns
        self.events = 0
        self.counts = {}         # event type name -> count
        self.selection = Selection()
        self.first_ts = self.last_ts = None
        self._fault_rows = []
        self._problem_rows = []
        self.faults_kept = True
        self._faults = None

    # -- faults -----------------------------------------------------------
    @property
    def faults(self):
        """Every kept write fault (selected ones), in stream order."""
        if self._faults is None:
            self._faults = [Fault(r) for r in self._fault_rows]
        return self._faults

    @property
    def problems(self):
        """MISSED and NO_NOTIFIER faults (always kept)."""
        return [Fault(r) for r in self._problem_rows]

    # -- totals -----------------------------------------------------------
    def _sum(self, attr):
        return sum(getattr(f, attr) for f in self.files)

    @property
    def write_faults(self):
        return self._sum("write_faults")

    def kind_counts(self):
        out = [0] * len(KINDS)
        for f in self.files:
            for i, n in enumerate(f.kinds):
                out[i] += n
        return dict(zip(KINDS, out))

    def verdict_counts(self):
        out = [0] * len(VERDICTS)
        for f in self.files:
            for i, n in enumerate(f.verdicts):
                out[i] += n
        return dict(zip(VERDICTS, out))

    @property
    def lost_total(self):
        return sum(self.lost or [])

    @property
    def kernel(self):
        return self.header.get("kernel")

    @property
    def duration_ns(self):
        if self.trailer and self.trailer.get("duration_ns") is not None:
            return self.trailer["duration_ns"]
        if self.first_ts is not None:
            return self.last_ts - self.first_ts
        return None

    def summary(self):
        kinds = self.kind_counts()
        verdicts = self.verdict_counts()
        s = {
            "kernel": self.kernel,
            "duration_ns": self.duration_ns,
            "events": self.events,
            "event_counts": dict(self.counts),
            "write_faults": self.write_faults,
            "pfn_mkwrite": kinds["pfn_mkwrite"],
            "page_mkwrite": kinds["page_mkwrite"],
            "pmd": kinds["pmd"],
            "first_touch": kinds["fault"],
            "no_notifier": kinds["no_notifier"],
            "reads": self._sum("reads"),
            "retries": self._sum("retries"),
            "huge_fault_fallbacks": self._sum("fallbacks"),
            "handler_errors": self._sum("errors"),
            "wp_entries": self._sum("wp_entries"),
            "nested_handler_calls": self._sum("nested"),
            "map_sync": self._sum("map_sync"),
            "reprotects": self._sum("reprotects"),
            "reprotect_pages": self._sum("reprotect_pages"),
            "dax_pte_faults": self._sum("dax_pte_faults"),
            "dax_pmd_faults": self._sum("dax_pmd_faults"),
            "dax_write_faults": self._sum("dax_write_faults"),
            "files": len(self.files),
            "processes": len(self.processes),
            "lost": self.lost_total,
            "lost_per_cpu": list(self.lost or []),
            "verdicts": verdicts,
            "truncated": bool(self.truncated),
            "truncation_reason": self.truncation_reason,
            "tolerance_ns": self.tolerance_ns,
            "tick_ns": self.tick_ns,
            "plan": self.header.get("plan"),
            "command": self.header.get("command"),
            "exit_code": (self.trailer or {}).get("exit_code"),
            "filter": self.selection.describe() or None,
        }
        return s


# ---------------------------------------------------------------------------
# The engine


def _pmd_arg(plan):
    """The huge_fault size argument values meaning PMD and PUD."""
    if (plan or {}).get("huge_fault_arg_is_order"):
        return 9, 18
    return 1, 2


def analyse(recording, tolerance_ns=1_000_000, keep_faults=True, selection=None):
    """Correlate a recording: see the module docstring for the rules.

    keep_faults: keep every (selected) write fault for ``Analysis.faults``;
    False keeps only the MISSED/NO_NOTIFIER ones (``Analysis.problems``),
    which is what a report without --events needs.
    selection: a :class:`Selection` restricting which faults are counted.
    """
    # Millions of small tuples, none of them in a cycle: the cyclic GC would
    # only rescan them over and over.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _analyse(recording, tolerance_ns, keep_faults, selection)
    finally:
        if was_enabled:
            gc.enable()


def _analyse(recording, tolerance_ns, keep_faults, selection):
    an = Analysis()
    an.header = dict(getattr(recording, "header", None) or {})
    an.meta = dict(getattr(recording, "meta", None) or {})
    an.trailer = getattr(recording, "trailer", None)
    an.lost = list(getattr(recording, "lost", None) or [])
    an.truncated = bool(getattr(recording, "truncated", False))
    an.truncation_reason = getattr(recording, "truncation_reason", None)
    an.tolerance_ns = tolerance_ns
    an.faults_kept = keep_faults
    sel = selection or Selection()
    an.selection = sel

    plan = an.header.get("plan") or {}
    pmd_arg, pud_arg = _pmd_arg(plan)
    clock = an.header.get("clock") or {}
    base_off = int(clock.get("realtime_minus_monotonic_ns") or 0)
    tick_len = int(clock.get("tick_ns") or DEFAULT_TICK_NS)
    an.tick_ns = tick_len
    samples = sorted((int(a), int(b)) for a, b in (an.meta.get("clock_samples") or []))
    s_mono = [a for a, _ in samples]
    s_off = [b for _, b in samples]
    nsamples = len(samples)
    meta_files = an.meta.get("files") or {}
    meta_procs = an.meta.get("procs") or {}

    files = {}          # (dev, ino) -> FileStats
    procs = {}          # pid -> ProcStats
    fault_rows = an._fault_rows
    problem_rows = an._problem_rows
    latency = an.latency
    nested_probe = {}   # tid -> (ts, end) of the last huge_fault first-touch
    counts = {EV_WP: 0, EV_HANDLER: 0, EV_DAX_FAULT: 0, EV_DAX_WRITEBACK: 0,
              EV_DAX_MKWRITE: 0}
    other_types = 0
    events = 0
    first_ts = last_ts = None

    f_substr = sel.file
    f_pid = sel.pid
    f_comm = sel.comm
    f_verdict = VERDICTS.index(sel.verdict) if sel.verdict else None
    proc_filter = f_pid is not None or f_comm is not None

    def new_file(dev, ino):
        key = file_key(dev, ino)
        path = (meta_files.get(key) or {}).get("path")
        fs = FileStats(dev, ino, path, len(files))
        if f_substr is not None:
            fs.selected = f_substr in fs.path
        files[(dev, ino)] = fs
        return fs

    def proc_of(pid, comm):
        p = procs.get(pid)
        if p is None:
            m = meta_procs.get(str(pid)) or meta_procs.get(pid) or {}
            name = m.get("comm") or comm.split(b"\0", 1)[0].decode("utf-8", "replace")
            p = procs[pid] = ProcStats(pid, name, m.get("cmdline"))
        return p

    def proc_ok(pid, comm):
        if f_pid is not None and pid != f_pid:
            return False
        if f_comm is not None:
            return proc_of(pid, comm).comm == f_comm
        return True

    last_dev = last_ino = None
    fs = None
    for rows in _row_source(recording):
        for (ts, dur, ino, pgoff, vm_flags, ms0, ms1, cs0, cs1,
             mn0, mn1, cn0, cn1, typ, pid, tid, dev, ff, ret, roles, flags,
             ftu, arg, comm) in rows:
            events += 1
            if ino != last_ino or dev != last_dev:
                fs = files.get((dev, ino))
                if fs is None:
                    fs = new_file(dev, ino)
                last_dev, last_ino = dev, ino

            if typ == EV_HANDLER:
                counts[EV_HANDLER] += 1
                if ret & VM_FAULT_RETRY:
                    if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                        fs.retries += 1
                    continue
                if ret & VM_FAULT_ERROR:
                    # Mostly FALLBACK: a ->huge_fault that could not map a
                    # PMD (a vma smaller than 2 MiB, unaligned blocks); the
                    # PTE fault that follows is the real one.
                    if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                        if ret & VM_FAULT_FALLBACK:
                            fs.fallbacks += 1
                        else:
                            fs.errors += 1
                    continue
                if flags & F_IN_WP:
                    if flags & F_PFN_PATH:
                        kind = K_PFN  # probed, not inferred
                    elif roles & ROLE_PFN_MKWRITE:
                        if roles & ROLE_PAGE_MKWRITE and not flags & F_INODE_DAX:
                            kind = K_PAGE
                        else:
                            kind = K_PFN
                    elif roles & ROLE_PAGE_MKWRITE:
                        kind = K_PAGE
                    else:
                        # e.g. ext4_dax_huge_fault(PTE) nested in
                        # ext4_dax_fault: the outer event is the fault.
                        if fs.selected:
                            fs.nested += 1
                        continue
                elif not ff & FAULT_FLAG_WRITE:
                    if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                        fs.reads += 1
                        proc_of(pid, comm).reads += 1
                    continue
                elif roles & ROLE_HUGE_FAULT and (arg == pmd_arg or arg == pud_arg):
                    kind = K_PMD
                elif ff & FAULT_FLAG_MKWRITE or not roles & (ROLE_FAULT | ROLE_HUGE_FAULT):
                    if fs.selected:
                        fs.nested += 1
                    continue
                else:
                    if roles & ROLE_HUGE_FAULT:
                        # PTE-size ->huge_fault: remember it, an enclosing
                        # ->fault of the same task (ext4_dax_fault calls
                        # ext4_dax_huge_fault) is the same fault.
                        nested_probe[tid] = (ts, ts + dur, pgoff)
                    elif nested_probe:
                        inner = nested_probe.pop(tid, None)
                        if inner is not None and ts <= inner[0] and \
                                inner[1] <= ts + dur and inner[2] == pgoff:
                            if fs.selected:
                                fs.nested += 1
                            continue
                    kind = K_FAULT
                verdict_from_handler = True
            elif typ == EV_WP:
                counts[EV_WP] += 1
                if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                    fs.wp_entries += 1
                if flags & F_HANDLER_RAN:
                    continue
                if ret & VM_FAULT_RETRY:
                    if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                        fs.retries += 1
                    continue
                if (vm_flags & VM_SHARED and vm_flags & VM_PFN_OR_MIXED
                        and not flags & F_HAS_PFN_MKWRITE
                        and not ret & VM_FAULT_ERROR):
                    kind = K_NONOTIFY
                    verdict_from_handler = False
                else:
                    continue
            elif typ == EV_DAX_FAULT:
                counts[EV_DAX_FAULT] += 1
                if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                    if flags & F_PMD:
                        fs.dax_pmd_faults += 1
                    else:
                        fs.dax_pte_faults += 1
                    if ff & FAULT_FLAG_WRITE:
                        fs.dax_write_faults += 1
                continue
            elif typ == EV_DAX_WRITEBACK:
                counts[EV_DAX_WRITEBACK] += 1
                if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                    fs.reprotects += 1
                    fs.reprotect_pages += arg
                continue
            elif typ == EV_DAX_MKWRITE:
                counts[EV_DAX_MKWRITE] += 1
                if fs.selected and (not proc_filter or proc_ok(pid, comm)):
                    fs.map_sync += 1
                continue
            else:
                other_types += 1
                continue

            # ---- a write fault: judge it --------------------------------
            m0 = ms0 * NS + mn0
            m1 = ms1 * NS + mn1
            c0 = cs0 * NS + (cn0 & NSEC_MASK)
            c1 = cs1 * NS + (cn1 & NSEC_MASK)
            if nsamples:
                if nsamples == 1:
                    off = s_off[0] if ts >= s_mono[0] else base_off
                else:
                    i = bisect.bisect_right(s_mono, ts)
                    off = s_off[i - 1] if i else base_off
            else:
                off = base_off
            wall = ts + off
            tick = wall - tick_len

            # Timestamps set externally (utimensat/touch) between the
            # previous fault on this file and this one?
            external = False
            if fs.last_ts is None or ts >= fs.last_ts:
                if fs.last_mtime is not None and m0 < fs.last_mtime:
                    external = True
                    fs.external += 1
                fs.last_ts = ts
                fs.last_mtime = m1
                fs.last_ctime = c1

            if not verdict_from_handler:
                verdict = V_NO_NOTIFIER
            elif m0 != m1:
                verdict = V_UPDATED if c0 != c1 else V_MISSED
            elif c0 != c1:
                verdict = V_MISSED
            elif ftu:
                # file_update_time ran and left them alone: the kernel found
                # them equal to its current_time() (inode_needs_update_time).
                # Its coarse clock can lag ours by more than a tick when
                # ticks are late (seen under QEMU TCG: 6 ms at HZ=250).
                verdict = V_CURRENT
            elif m1 >= tick - tolerance_ns:   # tick = wall - one clock tick
                verdict = V_CURRENT
            elif not (ms0 or ms1 or mn0 or mn1 or cs0 or cs1):
                verdict = V_UNKNOWN
            else:
                verdict = V_MISSED

            if not fs.selected:
                continue
            if proc_filter and not proc_ok(pid, comm):
                continue
            p = procs.get(pid)
            if p is None:
                p = proc_of(pid, comm)
            if f_verdict is not None and verdict != f_verdict:
                continue

            fs.write_faults += 1
            fs.kinds[kind] += 1
            fs.verdicts[verdict] += 1
            if fs.first_ts is None or ts < fs.first_ts:
                fs.first_ts = ts
            if fs.last_fault_ts is None or ts > fs.last_fault_ts:
                fs.last_fault_ts = ts
            if first_ts is None or ts < first_ts:
                first_ts = ts
            if last_ts is None or ts > last_ts:
                last_ts = ts
            p.write_faults += 1
            p.kinds[kind] += 1
            p.verdicts[verdict] += 1
            p.files.add(fs.index)
            if verdict_from_handler:
                latency[dur.bit_length()] += 1
            if keep_faults or verdict == V_MISSED or verdict == V_NO_NOTIFIER:
                row = (ts, kind, verdict, fs, pgoff, pid, tid, comm, dur, ftu,
                       m0, m1, c0, c1, wall, external)
                if keep_faults:
                    fault_rows.append(row)
                if verdict == V_MISSED or verdict == V_NO_NOTIFIER:
                    problem_rows.append(row)

    an.events = events
    # A corrupt EVENTS block is only found while reading: look again.
    an.truncated = bool(getattr(recording, "truncated", False))
    an.truncation_reason = getattr(recording, "truncation_reason", None)
    names = layout.EVENT_TYPES
    an.counts = {names.get(t, str(t)): n for t, n in counts.items()}
    if other_types:
        an.counts["other"] = other_types
    an.first_ts, an.last_ts = first_ts, last_ts

    # Files the metadata knows but no event touched are not listed; files
    # excluded by --file are dropped.
    an.files = [f for f in files.values() if f.selected and _file_has_data(f)]
    an.processes = [p for p in procs.values()
                    if p.write_faults or p.reads]
    _final_statx(an, files)
    return an


def _file_has_data(f):
    return bool(f.write_faults or f.reads or f.retries or f.wp_entries
                or f.dax_pte_faults or f.dax_pmd_faults or f.map_sync
                or f.reprotects or f.nested)


def _final_statx(an, files):
    statx = (an.trailer or {}).get("statx") or {}
    by_key = {f.key: f for f in files.values()}
    for key, st in statx.items():
        f = by_key.get(key)
        if f is None:
            continue
        if st.get("path") and f.path == f.key:
            f.path = st["path"]
        if st.get("exists") is False:
            f.deleted = True
            f.final_cmp = "deleted"
            continue
        f.final_mtime = st.get("mtime_ns")
        f.final_ctime = st.get("ctime_ns")
        if f.final_mtime is None or f.last_mtime is None:
            continue
        if f.final_mtime == f.last_mtime:
            f.final_cmp = "equal"
        elif f.final_mtime > f.last_mtime:
            f.final_cmp = "newer"
        else:
            f.final_cmp = "older"
