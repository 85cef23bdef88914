"""The correlation engine: from a recording to a verdict for every write fault.

``analyse(recording)`` walks the recorded events once and returns an
:class:`Analysis` with one :class:`Fault` per write fault, per-file and
per-process aggregates, a latency histogram and a summary.

A recording is anything with the attributes of
``pfntrace.recording.Recording``: ``header``, ``meta``, ``lost``,
``trailer``, ``truncated``, ``truncation_reason`` and ``iter_events()``;
when it can hand out raw event blocks (``iter_event_blocks()``) they are
decoded in bulk by pfntrace.decode, the one decoder of the event layout.

Each event goes through four steps of one job each:

* classify - what it is: a kind of write fault, or why not (verdict.classify);
* judge    - the fault's verdict from its timestamps and the kernel's clock
             (verdict.judge; the rules are written once, in bpf/verdict.h);
* select   - whether report's filters (file, pid, comm, verdict) keep it;
* aggregate - counted per file, per process, in the latency histogram, and
             kept as a Fault.

Beside the verdict, each write fault is checked against the last getattr
(stat, fstat, statx) of its file before it: a fault that left mtime and
ctime where that getattr saw them is an *invisible write* (verdict.invisible,
verdict.h's pft_invisible), one that a tool comparing timestamps with its
last stat can never see.

And each write fault opens a write-exposure window on its page, which the
recording's PFT_EV_CLOSE events end (written back, unmapped); a getattr
made while one of its file's windows is open is an exposed observation
(pfntrace.exposure): stores after it change data under the mtime it saw.
"""

import gc
import itertools
import operator
from collections import Counter

from pfntrace import decode, layout
from pfntrace import verdict as V
from pfntrace.exposure import Exposure
from pfntrace.probeplan import UNMAP_HOOKS   # in a plan: the recording has window closes
from pfntrace.verdict import (  # noqa: F401  (the names views and tests use)
    K_FAULT, K_NONOTIFY, K_PAGE, K_PFN, K_PMD, KINDS, NKINDS, PROBLEM_VERDICTS,
    V_CURRENT, V_MISSED, V_NO_NOTIFIER, V_UNDECIDED, V_UPDATED, VERDICTS)

C = layout.const
EV_WP = C("PFT_EV_WP")
EV_HANDLER = C("PFT_EV_HANDLER")
EV_DAX_FAULT = C("PFT_EV_DAX_FAULT")
EV_DAX_WRITEBACK = C("PFT_EV_DAX_WRITEBACK")
EV_DAX_MKWRITE = C("PFT_EV_DAX_MKWRITE")
EV_GETATTR = C("PFT_EV_GETATTR")
EV_CLOSE = C("PFT_EV_CLOSE")
F_CLOSE_UNMAP = C("PFT_F_CLOSE_UNMAP")
F_CLOSE_FOREIGN = C("PFT_F_CLOSE_FOREIGN")
PMD_PAGES = 512
F_PMD = C("PFT_F_PMD")
F_IN_WP = C("PFT_F_IN_WP")
F_HANDLER_FOLDED = C("PFT_F_HANDLER_FOLDED")
FAULT_FLAG_WRITE = C("PFT_FAULT_FLAG_WRITE")
VM_FAULT_RETRY = C("PFT_VM_FAULT_RETRY")
ROLE_HUGE_FAULT = C("PFT_ROLE_HUGE_FAULT")
C_IN_WP, C_NESTED, C_RETRY, C_FALLBACK, C_ERROR, C_READ = (
    V.C_IN_WP, V.C_NESTED, V.C_RETRY, V.C_FALLBACK, V.C_ERROR, V.C_READ)
NSEC_MASK = V.NSEC_MASK
QUERIED = V.QUERIED
NS = V.NS
LATENCY_BUCKETS = 65
# Without a clock tick in the header assume HZ=100, the longest.
DEFAULT_TICK_NS = 10_000_000

# The fields the engine reads, in struct order: decoded by one struct
# unpack (pfntrace.decode.picker), comm with its NUL padding.
_FIELDS = (
    "ts_ns", "duration_ns", "ino", "pgoff", "vm_flags", "handler", "ops_pfn_mkwrite",
    "ops_page_mkwrite", "mtime_sec0", "mtime_sec1", "ctime_sec0", "ctime_sec1",
    "mtime_nsec0", "mtime_nsec1", "ctime_nsec0", "ctime_nsec1", "type", "pid", "tid",
    "dev", "fault_flags", "ret", "roles", "flags", "ftu_calls", "arg", "time_gran",
    "clock_ns0", "clock_ns1", "comm",
)
_rows = decode.picker(_FIELDS)
_pick = operator.itemgetter(*(decode.ROW_INDEX[n] for n in _FIELDS))


_rows_at = decode.picker_at(_FIELDS)


def _feeds(recording, engine):
    """(feed, batches): the engine's fastest way through the recording's
    events, one call of feed per batch."""
    blocks = getattr(recording, "iter_event_blocks", None)
    if not callable(blocks):
        return engine.feed, (map(_pick, map(decode.row_from_dict, recording.iter_events())),)
    if engine.proc_filter:
        return engine.feed, map(_rows, blocks())
    return engine.feed_block, blocks()


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
                 "external", "clock", "queried", "handler", "observer", "_an",
                 "_detail")

    def __init__(self, row, an=None):
        (self.ts, kind, verdict, self.file, self.pgoff, self.pid, self.tid,
         comm, self.latency, self.ftu_calls, self.mtime_before,
         self.mtime_after, self.ctime_before, self.ctime_after, self.wall,
         self.external, clock0, clock1, self.queried, self.handler, observer) = row
        # (pid, comm, ns between its getattr's return and this fault) of the
        # process this write is invisible to, or None.
        self.observer = observer
        self.clock = (clock0, clock1)
        self.kind = KINDS[kind]
        self.verdict = VERDICTS[verdict]
        self.comm = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
        self._an = an
        self._detail = None

    @property
    def key(self):
        return self.file.key

    @property
    def path(self):
        return self.file.path

    @property
    def handler_name(self):
        """The handler the fault's vm_ops named (kallsyms, at record time)."""
        if not self.handler:
            return None
        symbols = (self._an.meta.get("symbols") if self._an else None) or {}
        return symbols.get("0x%x" % self.handler) or "0x%x" % self.handler

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
            "ftu_calls": self.ftu_calls, "handler": self.handler_name,
            "mtime_before_ns": self.mtime_before,
            "mtime_after_ns": self.mtime_after,
            "ctime_before_ns": self.ctime_before,
            "ctime_after_ns": self.ctime_after,
            "ctime_queried": bool(self.queried),
            "kernel_clock_ns": list(self.clock),
            "fault_wall_ns": self.wall,
            "invisible": self.invisible_dict(),
        }

    @property
    def invisible(self):
        return self.observer is not None

    def invisible_dict(self):
        """Who this write is invisible to, for the JSON contract, or None."""
        if self.observer is None:
            return None
        pid, comm, gap = self.observer
        return {"observer_pid": pid, "observer_comm": _comm(comm),
                "observed_ns_before": gap, "mtime_ns": self.mtime_after,
                "ctime_ns": self.ctime_after}

    @property
    def invisible_detail(self):
        """Why the write is invisible, in one line."""
        pid, comm, gap = self.observer
        return ("mtime %s and ctime unchanged since pid %d (%s) read them %s before the "
                "write: a tool comparing timestamps cannot see it (%s)" % (
                    fmt_wall(self.mtime_after), pid, _comm(comm), fmt_span(gap),
                    self.verdict))

    def __repr__(self):
        return "<Fault %s %s %s pgoff=%d pid=%d>" % (
            self.kind, self.verdict, self.key, self.pgoff, self.pid)


def _comm(raw):
    if isinstance(raw, bytes):
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return raw


def _detail(f):
    """Why the verdict, in one line: the evidence verdict.h judged on."""
    m0, m1, c0, c1 = f.mtime_before, f.mtime_after, f.ctime_before, f.ctime_after
    lo, hi = f.clock
    note = "; timestamps set externally before this fault" if f.external else ""
    via = (" (%s)" % f.handler_name) if f.handler else ""
    if f.verdict == "NO_NOTIFIER":
        out = "made writable without ->pfn_mkwrite: the filesystem was not told"
        if m1:
            out += "; mtime %s" % fmt_wall(m1)
        return out + note
    if f.verdict == "UNDECIDED":
        if not (m0 or m1 or c0 or c1):
            return "no timestamps were read" + note
        return ("mtime %s -> %s, ctime %s -> %s: not both moved, and the kernel's clock "
                "was not readable to tell current from stale%s"
                % (fmt_wall(m0), fmt_wall(m1), fmt_wall(c0), fmt_wall(c1), note))
    if f.verdict == "UPDATED":
        return "mtime %s -> %s%s%s" % (fmt_wall(m0), fmt_wall(m1), via, note)
    if f.verdict == "CURRENT":
        return "mtime %s already equal to the kernel's clock during the fault (%s)%s%s" % (
            fmt_wall(m1), fmt_wall(lo), via, note)
    # MISSED
    ftu = ("file_update_time called %d time(s)" % f.ftu_calls if f.ftu_calls
           else "file_update_time not called")
    if f.queried and c0 == c1:
        return ("ctime %s had been read by a stat (I_CTIME_QUERIED) and did not move: the "
                "kernel owed this write a fresh stamp%s, %s%s" % (fmt_wall(c1), via, ftu, note))
    for name, t in (("mtime", m1), ("ctime", c1)):
        if lo and t < lo:
            return ("%s stayed at %s, %s before the kernel's clock at the fault (%s)%s, %s%s"
                    % (name, fmt_wall(t), fmt_span(lo - t), fmt_wall(lo), via, ftu, note))
        if hi and t > hi:
            return ("%s is %s, %s after the kernel's clock at the fault (%s)%s, %s%s"
                    % (name, fmt_wall(t), fmt_span(t - hi), fmt_wall(hi), via, ftu, note))
    return "mtime %s, ctime %s%s, %s%s" % (fmt_wall(m1), fmt_wall(c1), via, ftu, note)


def fmt_span(ns):
    """A positive duration in the unit that reads best."""
    if ns < 1_000:
        return "%d ns" % ns
    if ns < 1_000_000:
        return "%.1f us" % (ns / 1e3)
    if ns < NS:
        return "%.3f ms" % (ns / 1e6)
    return "%.3f s" % (ns / 1e9)


class FileStats:
    """Per-file aggregate."""

    __slots__ = ("dev", "ino", "key", "path", "index", "selected",
                 "write_faults", "kinds", "verdicts", "reads", "retries",
                 "wp_entries", "nested", "handler_calls", "fallbacks", "errors",
                 "dax_pte_faults",
                 "dax_pmd_faults",
                 "dax_write_faults", "map_sync", "reprotects",
                 "reprotect_pages", "first_ts", "last_ts", "last_fault_ts",
                 "last_mtime", "invisible", "observations",
                 "external", "deleted", "unmounted", "final_mtime",
                 "final_ctime", "final_cmp")

    def __init__(self, dev, ino, path, index):
        self.dev, self.ino, self.index = dev, ino, index
        self.key = file_key(dev, ino)
        self.path = path or self.key
        self.selected = True
        self.write_faults = 0
        self.kinds = [0] * len(KINDS)
        self.verdicts = [0] * len(VERDICTS)
        self.reads = self.retries = self.wp_entries = self.nested = self.handler_calls = 0
        self.fallbacks = self.errors = 0
        self.dax_pte_faults = self.dax_pmd_faults = self.dax_write_faults = 0
        self.map_sync = self.reprotects = self.reprotect_pages = 0
        self.first_ts = self.last_fault_ts = None   # selected faults
        self.last_ts = None                         # any fault (ordering)
        self.last_mtime = None
        self.invisible = 0          # write faults invisible to the last getattr
        self.observations = 0       # getattrs of this file (any process)
        self.external = 0
        self.deleted = False
        self.unmounted = False     # its filesystem was unmounted before the end
        self.final_mtime = self.final_ctime = None
        self.final_cmp = None      # "equal" | "newer" | "older" | "deleted" | "unmounted" | None

    @property
    def shown_path(self):
        """The path as a finding shows it: marked when the file was gone
        by the end (its name is the one it had at the fault)."""
        if self.deleted:
            return self.path + " (deleted)"
        return self.path + " (unmounted)" if self.unmounted else self.path

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
                 "verdicts", "reads", "files", "invisible")

    def __init__(self, pid, comm, cmdline=None):
        self.pid, self.comm, self.cmdline = pid, comm, cmdline
        self.write_faults = self.reads = self.invisible = 0
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
        self.tick_ns = DEFAULT_TICK_NS
        self.truncated = False
        self.truncation_reason = None
        self.warnings = []       # the reader's, other than the truncation
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
        self._undecided_rows = []
        self._invisible_rows = []
        self.faults_kept = True
        self.findings_kept = True   # problems, undecided, invisible (not when streamed)
        self._faults = None
        # Write-exposure windows (pfntrace.exposure.Exposure); None for a
        # recording made without their closes.
        self.exposure = None
        self._exposure_sink = None   # stream_batches(): where windows go as they end
        self._files_seen = {}        # (dev, ino) -> FileStats, the engine's

    # -- faults -----------------------------------------------------------
    @property
    def faults(self):
        """Every kept write fault (selected ones), in stream order."""
        if self._faults is None:
            self._faults = [Fault(r, self) for r in self._fault_rows]
        return self._faults

    @property
    def problems(self):
        """MISSED and NO_NOTIFIER faults (always kept)."""
        return [Fault(r, self) for r in self._problem_rows]

    @property
    def undecided(self):
        """UNDECIDED faults (always kept: check --strict names them)."""
        return [Fault(r, self) for r in self._undecided_rows]

    @property
    def invisible(self):
        """Write faults invisible to the last getattr before them (always
        kept: check --invisible names them)."""
        return [Fault(r, self) for r in self._invisible_rows]

    @property
    def getattr_probed(self):
        """Whether the recording watched getattr at all: without it nothing
        can be invisible, and nothing is known to be visible either."""
        hooks = (self.header.get("plan") or {}).get("hooks") or ()
        return any(h.get("hook") == "vfs_getattr_nosec" and h.get("status") == "attach"
                   for h in hooks)

    @property
    def exposure_recorded(self):
        """Whether the recording carries the closes of write-exposure
        windows (made by a pfntrace that sends PFT_EV_CLOSE: its plan has
        the unmap hook, attached or not)."""
        hooks = (self.header.get("plan") or {}).get("hooks") or ()
        return any(h.get("hook") in UNMAP_HOOKS for h in hooks)

    @property
    def multigrain(self):
        """The kernel has multigrain timestamps (6.13+: the mg_floor clock):
        an invisible write there is the kernel's fault."""
        return bool(((self.header.get("plan") or {}).get("clock") or {}).get("mg_floor"))

    def multigrain_warning(self):
        """The loud line when a multigrain kernel let a write go invisible."""
        n = self._sum("invisible")
        if not (n and self.multigrain):
            return None
        return ("%d invisible write(s) on a kernel with multigrain timestamps (6.13+), where "
                "a stat'ed ctime forces the next change to a distinct stamp: this should "
                "never happen — a kernel or filesystem bug" % n)

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

    def warning_lines(self):
        """Everything wrong with the recording, one line each: what the
        reader found may change the counts, so it is always shown."""
        lines = []
        if self.truncated:
            lines.append("the recording is truncated (%s); reporting what is there"
                         % (self.truncation_reason or "cut short"))
        return lines + self.warnings

    @property
    def blind(self):
        """{reason: count} of what the recording could not see (the trailer's)."""
        return dict((self.trailer or {}).get("blind") or {})

    @property
    def lost_total(self):
        """Events and faults not seen: the kernel's per-CPU count (ring full,
        per-thread states not made, return probes that never ran) plus faults whose
        return was still awaited at the end, plus program runs the kernel skipped."""
        blind = self.blind
        return (sum(self.lost or []) + int(blind.get("unfinished") or 0)
                + int(blind.get("skipped_by_kernel") or 0))

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
            "handler_calls_in_wp": self._sum("handler_calls"),
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
            "lost_by_reason": self.blind,
            "verdicts": verdicts,
            "invisible_writes": self._sum("invisible"),
            # None: a recording made without the closes of exposure windows.
            "exposed_observations": None if self.exposure is None else self.exposure.exposed,
            "exposure_windows": None if self.exposure is None else self.exposure.opened,
            "getattrs": self._sum("observations"),
            "getattr_probed": self.getattr_probed,
            "multigrain": self.multigrain,
            "truncated": bool(self.truncated),
            "truncation_reason": self.truncation_reason,
            "tick_ns": self.tick_ns,
            "clock": (self.header.get("plan") or {}).get("clock"),
            "plan": self.header.get("plan"),
            "command": self.header.get("command"),
            "exit_code": (self.trailer or {}).get("exit_code"),
            "filter": self.selection.describe() or None,
        }
        return s


# ---------------------------------------------------------------------------
# The engine


def analyse(recording, keep_faults=True, selection=None):
    """Correlate a recording: see the module docstring for the steps.

    keep_faults: keep every (selected) write fault for ``Analysis.faults``;
    False keeps only the findings (``Analysis.problems``) and the UNDECIDED
    (``Analysis.undecided``), which is what a report without --events needs.
    selection: a :class:`Selection` restricting which faults are counted.
    """
    an = _new_analysis(recording, keep_faults, True, selection)
    for _ in _passes(recording, an):
        pass
    return an


def stream(recording, selection=None):
    """Correlate a recording without keeping its faults: (an, faults).

    faults iterates every selected write fault as a :class:`Fault`, in
    stream order, as the engine judges it; no fault, finding or invisible
    write is kept, so memory does not grow with the recording (one event
    block's faults at a time).  an is an :class:`Analysis` whose aggregates
    (files, processes, latency, summary, warnings) are complete once faults
    is exhausted; its ``faults``, ``problems``, ``undecided`` and
    ``invisible`` lists stay empty.
    """
    an, batches = stream_batches(recording, selection)
    return an, (Fault(row, an) for rows in batches if type(rows) is not ExposureBatch
                for row in rows)


def stream_batches(recording, selection=None):
    """stream(), a batch of faults at a time: (an, batches), each batch a
    list of the engine's fault rows (``Fault(row, an)`` is the fault of
    one, the list good until the next is asked for), or an ExposureBatch,
    for a consumer that hands them on as they are (pickled to another
    process: views.perfetto)."""
    an = _new_analysis(recording, True, False, selection)
    an._exposure_sink = ExposureBatch()
    return an, _batches(recording, an)


class ExposureBatch(list):
    """A batch of stream_batches() that holds, instead of fault rows, the
    write-exposure windows that ended (pfntrace.exposure.Window) and the
    exposed observations (Observation), in the order they happened, each
    with its file's FileStats: (item, file_stats).  end_ns: when the
    recording ended, where a window still open then ends (None before the
    last batch); a consumer in another process has no Exposure to ask."""

    end_ns = None


def _batches(recording, an):
    # One list of each, emptied before the next batch is made: a batch is
    # good until the consumer asks for the next, and no two are ever held
    # at once.
    rows, ended = an._fault_rows, an._exposure_sink
    for _ in _passes(recording, an):
        if rows:
            yield rows
            rows.clear()
        if ended:
            yield _with_files(ended, an)
            ended.clear()
    if ended:                   # what finish() left open
        yield _with_files(ended, an)


def _with_files(items, an):
    files = an._files_seen
    batch = ExposureBatch((item, files.get((item.dev, item.ino))) for item in items)
    batch.end_ns = an.exposure.end_ns
    return batch


def _new_analysis(recording, keep_faults, keep_findings, selection):
    an = Analysis()
    an.header = dict(getattr(recording, "header", None) or {})
    an.meta = dict(getattr(recording, "meta", None) or {})
    an.trailer = getattr(recording, "trailer", None)
    an.lost = list(getattr(recording, "lost", None) or [])
    an.faults_kept = keep_faults
    an.findings_kept = keep_findings
    an.selection = selection or Selection()
    return an


def _passes(recording, an):
    """Run the engine over the recording, pausing (yield) after each batch
    of events: the selected faults of that batch are then in
    an._fault_rows (when kept).  Finishes the Analysis at the end."""
    # Millions of small tuples, none of them in a cycle: the cyclic GC would
    # only rescan them over and over.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        engine = _Engine(an)
        feed, batches = _feeds(recording, engine)
        for batch in batches:
            feed(batch)
            yield
        engine.finish(recording)
    finally:
        if was_enabled:
            gc.enable()


class _Engine:
    """One pass over the events: classify, judge, select, aggregate."""

    def __init__(self, an):
        self.an = an
        plan = an.header.get("plan") or {}
        self.pmd_arg, self.pud_arg = V.huge_fault_args(plan)
        clock = an.header.get("clock") or {}
        self.wall_offset = int(clock.get("realtime_minus_monotonic_ns") or 0)
        an.tick_ns = int(clock.get("tick_ns") or DEFAULT_TICK_NS)
        self.meta_files = an.meta.get("files") or {}
        self.meta_procs = an.meta.get("procs") or {}
        # Files gone by the end (the trailer's statx), known from their
        # first fault on: a view that streams (perfetto) names them so too.
        statx = (an.trailer or {}).get("statx") or {}
        self.gone = {key: "unmounted" if st.get("unmounted") else "deleted"
                     for key, st in statx.items() if st.get("exists") is False}
        self.files = an._files_seen = {}     # (dev, ino) -> FileStats
        self.procs = {}          # pid -> ProcStats
        self.first_touch = {}    # tid -> (start, end, pgoff) of the last PTE ->huge_fault
        self.counts = dict.fromkeys((EV_WP, EV_HANDLER, EV_DAX_FAULT, EV_DAX_WRITEBACK,
                                     EV_DAX_MKWRITE, EV_GETATTR, EV_CLOSE), 0)
        if an.exposure_recorded:
            an.exposure = Exposure(keep=an.findings_kept, keep_windows=an.faults_kept,
                                   sink=an._exposure_sink)
        self.expo = an.exposure
        self.last_event_ts = None  # the last event's, in stream order
        # (dev, ino) -> (end, mtime, ctime, pid, comm) of its last getattr.
        self.observed = {}
        self.other_types = 0
        self.events = 0
        sel = an.selection
        self.f_verdict = VERDICTS.index(sel.verdict) if sel.verdict else None
        self.proc_filter = sel.pid is not None or sel.comm is not None

    # -- whose event ---------------------------------------------------------
    def file_of(self, dev, ino):
        fs = self.files.get((dev, ino))
        if fs is None:
            key = file_key(dev, ino)
            fs = FileStats(dev, ino, (self.meta_files.get(key) or {}).get("path"),
                           len(self.files))
            gone = self.gone.get(key)
            fs.deleted, fs.unmounted = gone == "deleted", gone == "unmounted"
            if self.an.selection.file is not None:
                fs.selected = self.an.selection.file in fs.path
            self.files[(dev, ino)] = fs
        return fs

    def proc_of(self, pid, comm):
        p = self.procs.get(pid)
        if p is None:
            m = self.meta_procs.get(str(pid)) or self.meta_procs.get(pid) or {}
            name = m.get("comm") or comm.split(b"\0", 1)[0].decode("utf-8", "replace")
            p = self.procs[pid] = ProcStats(pid, name, m.get("cmdline"))
        return p

    def proc_ok(self, pid, comm):
        sel = self.an.selection
        if sel.pid is not None and pid != sel.pid:
            return False
        if sel.comm is not None:
            return self.proc_of(pid, comm).comm == sel.comm
        return True

    def counted(self, fs, pid, comm):
        """Whether the selection counts this file's and process's events."""
        return fs.selected and (not self.proc_filter or self.proc_ok(pid, comm))

    # -- the steps -----------------------------------------------------------
    def feed(self, rows):
        """Each event of rows through the steps (one loop, the engine's
        state in locals: this is where a report spends its time)."""
        counts, observed, files, procs = self.counts, self.observed, self.files, self.procs
        classify, judge, invisible = V.classify, V.judge, V.invisible
        not_a_fault, inner_half = self.not_a_fault, self.inner_half
        set_externally, aggregate, proc_of = self.set_externally, self.aggregate, self.proc_of
        counted = self.counted
        expo = self.expo
        pmd_arg, pud_arg, wall_offset = self.pmd_arg, self.pud_arg, self.wall_offset
        f_verdict = self.f_verdict
        # Without a process filter a file's selection says it all.
        everyone = not self.proc_filter
        last_dev = last_ino = fs = None
        n = 0
        for (ts, dur, ino, pgoff, vm_flags, handler, ops_pfn, ops_page, ms0, ms1, cs0, cs1,
             mn0, mn1, cn0, cn1, typ, pid, tid, dev, ff, ret, roles, flags, ftu, arg, gran,
             clk0, clk1, comm) in rows:
            n += 1
            if dev != last_dev or ino != last_ino:
                fs = files.get((dev, ino)) or self.file_of(dev, ino)
                last_dev, last_ino = dev, ino
            if typ in counts:
                counts[typ] += 1
            else:
                self.other_types += 1
            if typ == EV_WP:
                if fs.selected:
                    if flags & F_HANDLER_FOLDED:    # its handler's event, folded in
                        fs.handler_calls += 1
                    if everyone or counted(fs, pid, comm):
                        fs.wp_entries += 1
            elif typ == EV_GETATTR:
                if not ret:
                    fs.observations += 1
                    observed[(dev, ino)] = (ts + dur, ms0 * NS + mn0,
                                            cs0 * NS + (cn0 & NSEC_MASK), pid, comm)
                    if expo is not None:
                        expo.observe(ts + dur, dev, ino, pid, _comm(comm), ms0 * NS + mn0)
                continue
            elif typ == EV_CLOSE:
                if expo is not None:
                    if flags & F_CLOSE_UNMAP:
                        expo.unmap(ts, dev, ino, pgoff, arg, pid, bool(flags & F_CLOSE_FOREIGN))
                    else:
                        expo.writeback(ts, dev, ino, pgoff, arg, pid)
                continue

            kind = classify(typ, flags, vm_flags, ff, ret, roles, arg, ops_pfn,
                            pmd_arg, pud_arg)
            if kind >= NKINDS:
                not_a_fault(kind, typ, fs, pid, comm, ff, flags, arg)
                continue
            if kind == K_FAULT and inner_half(tid, ts, dur, pgoff, roles):
                if fs.selected:
                    fs.nested += 1
                continue

            m0 = ms0 * NS + mn0
            m1 = ms1 * NS + mn1
            c0 = cs0 * NS + (cn0 & NSEC_MASK)
            c1 = cs1 * NS + (cn1 & NSEC_MASK)
            verdict = judge(kind, m0, m1, c0, c1, cn0, clk0, clk1, gran,
                            bool(ms0 | ms1 | cs0 | cs1))
            if expo is not None:
                # Every write fault leaves its page writable: a window.
                if kind == K_PMD:
                    expo.fault(ts, dev, ino, pgoff - pgoff % PMD_PAGES, pid, npages=PMD_PAGES,
                               mtime_ns=m1 if ms1 | mn1 else None)
                else:
                    expo.fault(ts, dev, ino, pgoff, pid, mtime_ns=m1 if ms1 | mn1 else None)
            external = set_externally(fs, ts, m0, m1)
            observer = None
            obs = observed.get((dev, ino))
            if obs is not None and invisible(ts, m1, c1, obs[0], obs[1], obs[2]):
                observer = (obs[3], obs[4], ts - obs[0])

            if not (fs.selected and (everyone or counted(fs, pid, comm))):
                continue
            if f_verdict is not None and verdict != f_verdict:
                continue
            if typ == EV_WP:
                handler = ops_pfn if kind == K_PFN or kind == K_NONOTIFY else ops_page
            aggregate(fs, procs.get(pid) or proc_of(pid, comm), kind, verdict, dur,
                      (ts, kind, verdict, fs, pgoff, pid, tid, comm, dur, ftu, m0, m1, c0,
                       c1, clk0 or ts + wall_offset, external, clk0, clk1, cn0 & QUERIED,
                       handler, observer))
        self.events += n
        if n:
            self.last_event_ts = ts

    def feed_block(self, payload):
        """feed() of one raw EVENTS block, with the same result, faster.

        Most events on a DAX mount only add to their file's counters: the
        do_wp_page that the per-VMA lock retries, the fs_dax tracepoints,
        and in recordings made before PFT_F_HANDLER_FOLDED the handler
        called inside do_wp_page.  Those are tallied
        by (file, _lane_codes()) at C speed, without a tuple of fields each;
        only the others (write faults, handler calls of their own,
        getattrs) are decoded and go through feed(), in stream order.
        Without a process filter only: that needs each event's pid
        (_feeds() sends those recordings to feed()).  A unit test holds
        feed_block() to feed() of every event.
        """
        codes = _lane_codes(payload)
        if codes is None:
            self.feed(_rows(payload))
            return
        devs, inos, args, tss = decode.columns(payload, ("dev", "ino", "arg", "ts_ns"))
        tally = Counter(zip(devs, inos, codes))
        files = self.files
        # Files numbered in the order their first events come, as feed()
        # does: the tally's keys are in the order of their first events.
        for dev, ino, _ in tally:
            if (dev, ino) not in files:
                self.file_of(dev, ino)
        judged = codes.translate(_JUDGED)
        if judged.count(0) != len(judged):
            self.feed(_rows_at(payload, itertools.compress(itertools.count(), judged)))
        if tss:
            self.last_event_ts = tss[-1]    # as feed() of the whole block leaves it
        counts = self.counts
        writebacks = False
        for (dev, ino, code), n in tally.items():
            if _JUDGED[code]:
                continue
            typ = code & _LANE_TYPE
            self.events += n
            if typ in counts:
                counts[typ] += n
            else:
                self.other_types += n
            fs = files[(dev, ino)]
            if not fs.selected:
                continue
            if typ == EV_WP:                # retried: classify() says C_RETRY
                fs.wp_entries += n
                fs.retries += n
            elif typ == EV_HANDLER:         # inside do_wp_page: C_IN_WP
                fs.handler_calls += n
            elif typ == EV_DAX_FAULT:
                if code & _LANE_PMD:
                    fs.dax_pmd_faults += n
                else:
                    fs.dax_pte_faults += n
                if code & _LANE_WRITE:
                    fs.dax_write_faults += n
            elif typ == EV_DAX_WRITEBACK:
                fs.reprotects += n
                writebacks = True
            elif typ == EV_DAX_MKWRITE:
                fs.map_sync += n
        if writebacks:
            for dev, ino, pages in itertools.compress(
                    zip(devs, inos, args), codes.translate(_IS_WRITEBACK)):
                fs = files[(dev, ino)]
                if fs.selected:
                    fs.reprotect_pages += pages

    def not_a_fault(self, why, typ, fs, pid, comm, ff, flags, arg):
        """Count what an event that is no write fault says."""
        if why == C_IN_WP:
            if fs.selected:
                fs.handler_calls += 1
            return
        if why == C_NESTED:
            if fs.selected:
                fs.nested += 1
            return
        if not fs.selected or (self.proc_filter and not self.proc_ok(pid, comm)):
            return
        if why == C_RETRY:
            fs.retries += 1
        elif why == C_FALLBACK:
            fs.fallbacks += 1
        elif why == C_ERROR:
            fs.errors += 1
        elif why == C_READ:
            fs.reads += 1
            self.proc_of(pid, comm).reads += 1
        elif typ == EV_DAX_FAULT:
            if flags & F_PMD:
                fs.dax_pmd_faults += 1
            else:
                fs.dax_pte_faults += 1
            if ff & FAULT_FLAG_WRITE:
                fs.dax_write_faults += 1
        elif typ == EV_DAX_WRITEBACK:
            fs.reprotects += 1
            fs.reprotect_pages += arg
        elif typ == EV_DAX_MKWRITE:
            fs.map_sync += 1

    def inner_half(self, tid, ts, dur, pgoff, roles):
        """A first-touch write is one fault even where two handlers report
        it: ext4_dax_fault calls ext4_dax_huge_fault at PTE size, which
        returns first.  True for the enclosing ->fault of such a pair (the
        BPF side's agg_kind() drops the same one)."""
        if roles & ROLE_HUGE_FAULT:
            self.first_touch[tid] = (ts, ts + dur, pgoff)
            return False
        inner = self.first_touch.pop(tid, None)
        return inner is not None and ts <= inner[0] and inner[1] <= ts + dur \
            and inner[2] == pgoff

    def set_externally(self, fs, ts, m0, m1):
        """Were the timestamps set from outside (utimensat, touch) between
        this file's previous fault and this one?"""
        external = False
        if not (m0 or m1):
            return external     # nothing read: nothing to compare
        if fs.last_ts is None or ts >= fs.last_ts:
            if fs.last_mtime is not None and m0 < fs.last_mtime:
                external = True
                fs.external += 1
            fs.last_ts = ts
            fs.last_mtime = m1
        return external

    def aggregate(self, fs, p, kind, verdict, dur, row):
        ts = row[0]
        an = self.an
        fs.write_faults += 1
        fs.kinds[kind] += 1
        fs.verdicts[verdict] += 1
        # The recording's first and last fault are the files' (finish()).
        if fs.first_ts is None:
            fs.first_ts = fs.last_fault_ts = ts
        elif ts < fs.first_ts:
            fs.first_ts = ts
        elif ts > fs.last_fault_ts:
            fs.last_fault_ts = ts
        p.write_faults += 1
        p.kinds[kind] += 1
        p.verdicts[verdict] += 1
        p.files.add(fs.index)
        if row[-1] is not None:
            fs.invisible += 1
            p.invisible += 1
            if an.findings_kept:
                an._invisible_rows.append(row)
        if kind != K_NONOTIFY:
            an.latency[dur.bit_length()] += 1
        if an.faults_kept:
            an._fault_rows.append(row)
        if not an.findings_kept:
            return
        if verdict == V_MISSED or verdict == V_NO_NOTIFIER:
            an._problem_rows.append(row)
        elif verdict == V_UNDECIDED:
            an._undecided_rows.append(row)

    def add_file_counts(self, rows):
        """What the kernel counted per file and process instead of sending
        events (the recording's COUNTS, layout.FILE_COUNTERS): added as
        not_a_fault() adds the events it stands for.  A retried attempt
        is a do_wp_page entry too, as its event was."""
        for row in rows:
            fs = self.file_of(row["dev"], row["ino"])
            if not fs.selected or (self.proc_filter
                                   and not self.proc_ok(row["pid"], row.get("comm", "").encode())):
                continue
            for name in layout.FILE_COUNTERS:
                n = row.get(name, 0)
                setattr(fs, name, getattr(fs, name) + n)
            fs.wp_entries += row.get("retries", 0)

    def finish(self, recording):
        an = self.an
        if self.expo is not None:
            self.expo.finish(self.end_ts())
        self.add_file_counts(getattr(recording, "file_counts", None) or ())
        an.events = self.events
        # A corrupt EVENTS block is only found while reading: look now.
        an.truncated = bool(getattr(recording, "truncated", False))
        an.truncation_reason = getattr(recording, "truncation_reason", None)
        an.warnings = [w for w in getattr(recording, "warnings", None) or ()
                       if w != an.truncation_reason]
        names = layout.EVENT_TYPES
        an.counts = {names.get(t, str(t)): n for t, n in self.counts.items()}
        if self.other_types:
            an.counts["other"] = self.other_types
        firsts = [f.first_ts for f in self.files.values() if f.first_ts is not None]
        if firsts:
            an.first_ts = min(firsts)
            an.last_ts = max(f.last_fault_ts for f in self.files.values()
                             if f.last_fault_ts is not None)
        else:
            an.first_ts = an.last_ts = None
        # Files the metadata knows but no event touched are not listed; files
        # excluded by --file are dropped.
        an.files = [f for f in self.files.values() if f.selected and _file_has_data(f)]
        an.processes = [p for p in self.procs.values() if p.write_faults or p.reads]
        _final_statx(an, self.files)


    def end_ts(self):
        """When the recording ended, on the events' clock: from the trailer
        (CLOCK_REALTIME) less the header's realtime - monotonic offset;
        without a trailer (a recording cut short), its last event."""
        ended = (self.an.trailer or {}).get("ended_wall_ns")
        if ended and self.wall_offset:
            return ended - self.wall_offset
        return self.last_event_ts or 0


# One byte per event says what feed_block() does with it: the type in the
# low 3 bits (_LANE_TYPE: a type that does not fit, or no type of ours), and
# one bit each for what decides between counting and judging.
_LANE_TYPE = 7
_LANE_FOLDED, _LANE_RETRY, _LANE_IN_WP, _LANE_PMD, _LANE_WRITE = 8, 16, 32, 64, 128
assert max(EV_WP, EV_HANDLER, EV_DAX_FAULT, EV_DAX_WRITEBACK, EV_DAX_MKWRITE,
           EV_GETATTR) < _LANE_TYPE
# EV_CLOSE shares the lane type of types that are not ours: feed() tells
# them apart, and both go to it.
assert EV_CLOSE == _LANE_TYPE


def _bit_lane(name, mask, lane):
    """(field, byte, bytes.translate table) that turn the one bit mask of
    the field name into the lane bit lane: built once, used on every block."""
    bit = mask.bit_length() - 1
    assert mask == 1 << bit
    return name, bit // 8, bytes(lane if i & 1 << bit % 8 else 0 for i in range(256))


_LANE_BITS = (_bit_lane("ret", VM_FAULT_RETRY, _LANE_RETRY),
              _bit_lane("flags", F_IN_WP, _LANE_IN_WP),
              _bit_lane("flags", F_HANDLER_FOLDED, _LANE_FOLDED),
              _bit_lane("flags", F_PMD, _LANE_PMD),
              _bit_lane("fault_flags", FAULT_FLAG_WRITE, _LANE_WRITE))
_LOW_TYPE = bytes(min(i, _LANE_TYPE) for i in range(256))


def _lane_codes(payload):
    """Each event's lane code byte (see _LANE_TYPE) as bytes, computed a
    block at a time (bytes.translate, and big-integer ors that combine the
    bytes of all events at once); None when a type is wider than a byte
    (not ours: then feed() takes the block)."""
    n = decode.row_count(payload)
    for byte in (1, 2, 3):
        if decode.bytes_of(payload, "type", byte).count(0) != n:
            return None
    code = int.from_bytes(decode.bytes_of(payload, "type", 0).translate(_LOW_TYPE), "little")
    for name, byte, table in _LANE_BITS:
        code |= int.from_bytes(decode.bytes_of(payload, name, byte).translate(table), "little")
    return code.to_bytes(n, "little")


def _judged(code):
    """Whether feed_block() sends an event to feed(): a write fault, or a
    handler call of its own (either may be a write fault, classify()), a
    getattr (it changes what later faults are judged against), a window's
    close (it changes which getattrs are exposed), or a type not ours.  The
    rest only add to counters."""
    typ = code & _LANE_TYPE
    if typ == EV_WP:
        # A retried one only counts, unless a handler ran inside (folded).
        return not code & _LANE_RETRY or bool(code & _LANE_FOLDED)
    if typ == EV_HANDLER:
        return not code & _LANE_IN_WP
    return typ == EV_GETATTR or typ == _LANE_TYPE


_JUDGED = bytes(_judged(code) for code in range(256))
_IS_WRITEBACK = bytes(code & _LANE_TYPE == EV_DAX_WRITEBACK for code in range(256))


def _file_has_data(f):
    return bool(f.write_faults or f.reads or f.retries or f.wp_entries
                or f.dax_pte_faults or f.dax_pmd_faults or f.map_sync
                or f.reprotects or f.nested or f.handler_calls)


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
            if st.get("unmounted"):
                f.unmounted = True
                f.final_cmp = "unmounted"
            else:
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
