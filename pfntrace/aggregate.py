"""The in-kernel counters of `pfntrace top`, read into plain Python objects.

The BPF program built with -DPFT_AGGREGATE (Tracer(aggregate=True)) keeps,
per file, per process and globally, write faults by kind, by verdict and a
log2 histogram of handler latency (struct pft_agg_stats and friends in
pfntrace/bpf/pfntrace.h).  This module reads those maps through the same cffi
layout the event stream uses, and turns them into :class:`Snapshot` objects
the view works on, so the view itself never touches bcc (and is tested
with synthetic snapshots).
"""

import time
from dataclasses import dataclass, field

from pfntrace import bpfstats, layout, procinfo
from pfntrace.verdict import KINDS, VERDICTS

ffi = layout.ffi
C = layout.const

NKINDS = C("PFT_AGG_KINDS")
NVERDICTS = C("PFT_AGG_VERDICTS")
NBUCKETS = C("PFT_AGG_LAT_BUCKETS")
RATE_SLOTS = C("PFT_AGG_RATE_SLOTS")
FILE_ROWS = C("PFT_ROWS_FILES")
PROC_ROWS = C("PFT_ROWS_PROCS")
# The header's array lengths are literals (cffi takes no macros there).
_probe = ffi.new("struct pft_agg_stats *")
assert NKINDS == len(KINDS) == len(_probe.kinds) == len(ffi.new("struct pft_proc_stats *").kinds)
assert NVERDICTS == len(VERDICTS) == len(_probe.verdicts)
assert NBUCKETS == len(_probe.lat)
del _probe

@dataclass
class Counts:
    """Write faults of one file, one process or everything."""
    kinds: list = field(default_factory=lambda: [0] * NKINDS)
    verdicts: list = field(default_factory=lambda: [0] * NVERDICTS)
    lat: list = field(default_factory=lambda: [0] * NBUCKETS)
    total: int = 0
    last_ts: int = 0          # CLOCK_MONOTONIC ns of the latest write fault
    last_pid: int = 0
    comm: str = ""
    invisible: int = 0        # write faults invisible to the last getattr before them
    lat_sum: int = 0          # ns, the sum of the durations counted in lat

    def kind(self, name):
        return self.kinds[KINDS.index(name)]

    def verdict(self, name):
        return self.verdicts[VERDICTS.index(name)]

    def percentile(self, q):
        """Upper bound (ns) of the log2 bucket holding the q-quantile of
        handler latency, or None without timed faults."""
        n = sum(self.lat)
        if not n:
            return None
        want = q * n
        seen = 0
        for b, c in enumerate(self.lat):
            seen += c
            if c and seen >= want:
                return 1 << b
        return 1 << (NBUCKETS - 1)

    def add(self, other):
        for i in range(NKINDS):
            self.kinds[i] += other.kinds[i]
        for i in range(NVERDICTS):
            self.verdicts[i] += other.verdicts[i]
        for i in range(NBUCKETS):
            self.lat[i] += other.lat[i]
        self.total += other.total
        self.lat_sum += other.lat_sum
        self.invisible += other.invisible
        if other.last_ts > self.last_ts:
            self.last_ts = other.last_ts
            self.last_pid = other.last_pid or self.last_pid


@dataclass
class Snapshot:
    """One read of every counter."""
    mono_ns: int                                   # when it was read
    files: dict = field(default_factory=dict)      # (dev, ino) -> Counts (dev: kernel dev_t)
    procs: dict = field(default_factory=dict)      # pid -> Counts (comm set)
    total: Counts = field(default_factory=Counts)
    rate: list = field(default_factory=list)       # [(epoch, count)], interval_ns long
    interval_ns: int = 1_000_000_000
    lost: int = 0
    lost_by_reason: dict = field(default_factory=dict)  # reason -> count (tracer.LOST_REASONS)
    bpf_run_ns: int = None                         # summed run_time_ns of our programs
    bpf_run_cnt: int = None
    bpf_progs: dict = field(default_factory=dict)  # program -> (run_time_ns, run_cnt)


def stats_counts(cdata, with_pid=True):
    """Counts of a struct pft_agg_stats (cdata); with_pid=False: the fields
    a struct pft_proc_stats has too."""
    c = Counts(kinds=list(cdata.kinds), verdicts=list(cdata.verdicts),
               total=int(cdata.total), last_ts=int(cdata.last_ts),
               invisible=int(cdata.invisible))
    if with_pid:
        c.lat = list(cdata.lat)
        c.lat_sum = int(cdata.lat_sum)
        c.last_pid = int(cdata.last_pid)
    return c


def proc_counts(p):
    """Counts of a struct pft_proc_stats (cdata), its COMM up to the first NUL."""
    c = stats_counts(p, with_pid=False)
    c.comm = ffi.string(p.comm).decode("utf-8", "replace")
    return c


class Reader:
    """Configures and reads the counters of a started Tracer(aggregate=True)."""

    def __init__(self, tracer, interval_ns, bpf_stats=False):
        self.tracer = tracer
        self.bpf = tracer.bpf
        self.interval_ns = interval_ns
        self._comms = {}
        self.stats = bpfstats.BpfStats(tracer) if bpf_stats else None
        self.configure()

    @property
    def stats_enabled(self):
        return bool(self.stats and self.stats.enabled)

    def configure(self):
        """Hand the kernel side the rate ring's interval (before the
        workload: a map syscall).  (The verdict needs no clock from here:
        the BPF side reads the kernel's own.)"""
        conf = self.bpf["aggconfig"]
        c = conf[0]
        c.interval_ns = self.interval_ns
        conf[0] = c

    def comm(self, pid):
        """The name of a process whose counters came without one (the
        kernel side copies it at each fault; an empty one would be a blank
        COMM cell), from /proc while it lives; cached."""
        if pid not in self._comms:
            info = procinfo.proc_info(pid)
            self._comms[pid] = info["comm"] if info else ""
        return self._comms[pid]

    def program_runs(self):
        """{name: (run_time_ns, run_cnt)} of our programs (bpfstats)."""
        return self.stats.run_times() if self.stats else {}

    def read(self):
        snap = Snapshot(mono_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC),
                        interval_ns=self.interval_ns)
        # Through memory only, never a map syscall: a scrape or a refresh
        # must not blind the probes (pfntrace/mapmem.py).
        mem, nrows = self.tracer.mem, self.tracer.rows_claimed()
        for row in mem["aggfiles"].rows(ffi, "struct pft_agg_file_row", nrows[FILE_ROWS]):
            if row.ready:
                snap.files[(int(row.key.dev), int(row.key.ino))] = stats_counts(row.stats)
        for row in mem["aggprocs"].rows(ffi, "struct pft_agg_proc_row", nrows[PROC_ROWS]):
            if row.ready:
                pid = int(row.pid)
                c = snap.procs[pid] = proc_counts(row.stats)
                if not c.comm:
                    c.comm = self.comm(pid)
        (total,) = mem["aggtotal"].rows(ffi, "struct pft_agg_stats", 1)
        snap.total.add(stats_counts(total))
        for slot in mem["aggrate"].rows(ffi, "struct pft_rate_slot", RATE_SLOTS):
            if slot.count:
                snap.rate.append((int(slot.epoch), int(slot.count)))
        snap.rate.sort()
        # Runs the kernel skipped are faults top may not have counted.
        snap.lost_by_reason = self.tracer.lost_by_reason()
        snap.lost = sum(snap.lost_by_reason.values())
        if self.stats_enabled:
            snap.bpf_progs = self.program_runs()
            if snap.bpf_progs:
                snap.bpf_run_ns = sum(ns for ns, _ in snap.bpf_progs.values())
                snap.bpf_run_cnt = sum(cnt for _, cnt in snap.bpf_progs.values())
        return snap

    def close(self):
        if self.stats:
            self.stats.close()


class PathResolver:
    """dev:ino -> path, through /proc/PID/maps of the process that faulted
    last (cached); files whose process is gone are looked for once under
    the watched mounts."""

    def __init__(self, roots=()):
        self.roots = list(roots)
        self.paths = {}       # (dev, ino) -> path
        self._tries = {}
        self._walked = set()

    def resolve(self, files):
        """Fill the cache for the keys of {(dev, ino): Counts}; returns it."""
        unknown = {}
        for key, c in files.items():
            if key in self.paths:
                continue
            dev, ino = key
            major, minor = procinfo.split_kernel_dev(dev)
            path = procinfo.maps_paths(c.last_pid).get((major, minor, ino)) if c.last_pid else None
            if path:
                self.paths[key] = path
                continue
            self._tries[key] = self._tries.get(key, 0) + 1
            if key not in self._walked:
                unknown[(major, minor, ino)] = key
        if unknown and self.roots:
            found = procinfo.walk_for_inodes(self.roots, set(unknown), limit=20000)
            for k3, key in unknown.items():
                self._walked.add(key)
                if k3 in found:
                    self.paths[key] = found[k3]
        return self.paths
