"""Prometheus metric families from one read of top's in-kernel counters.

`pfntrace exporter` hands a :class:`~pfntrace.aggregate.Snapshot` to
:func:`families` on every scrape (or every textfile interval); this module
never touches bcc or the network, so it is tested with synthetic snapshots.

Labels are bounded by default: mount and filesystem (a handful per host),
kind and verdict (five each).  No inode, pid or path label unless per-file
series are asked for, and then only for the ``max_files`` files with the
most write faults.
"""

import os
import tempfile

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from pfntrace import procinfo
from pfntrace.tracer import LOST_REASONS
from pfntrace.verdict import KINDS, VERDICTS

TEXTFILE_NAME = "pfntrace.prom"
FAMILIES = ("pfntrace_write_faults", "pfntrace_verdicts", "pfntrace_handler_latency_seconds",
            "pfntrace_invisible_writes", "pfntrace_lost_events", "pfntrace_build_info")


def latency_buckets(lat):
    """Cumulative (le, count) pairs in seconds from the kernel's log2
    histogram of handler durations.

    lat[b] counts durations (integer ns) whose bit length is b: 0 for 0 ns,
    else 2**(b-1) .. 2**b - 1 ns.  So every duration counted up to bucket b
    is <= 2**b - 1 ns, and that is the bucket's exact upper bound (``le``).
    The last kernel bucket also holds everything longer: it is +Inf."""
    out = []
    seen = 0
    for b, count in enumerate(lat[:-1]):
        seen += count
        out.append((repr(((1 << b) - 1) / 1e9), seen))
    out.append(("+Inf", seen + lat[-1]))
    return out


def mount_of(dev, mounts):
    """(mount label, fs label) of a kernel dev_t: the mount point and its
    filesystem type, or "MAJOR:MINOR" and "" for a device not (or no longer)
    mounted with DAX."""
    major, minor = procinfo.split_kernel_dev(dev)
    if (major, minor) in mounts:
        return mounts[(major, minor)]
    return ("%d:%d" % (major, minor), "")


def dax_mounts_by_dev(mountinfo):
    """{(major, minor): (mount point, fs type)} of the DAX mounts in a
    /proc/self/mountinfo text (the first mount of a device wins)."""
    from pfntrace.doctor import dax_mounts

    out = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        majmin = tuple(int(x) for x in fields[2].split(":"))
        for mp, fstype, _ in dax_mounts(line):
            out.setdefault(majmin, (mp, fstype))
    return out


def _per_mount(snap, mounts):
    """{(mount, fs): Counts} summed over the files of each mount."""
    from pfntrace.aggregate import Counts

    out = {}
    for (dev, _ino), c in snap.files.items():
        out.setdefault(mount_of(dev, mounts), Counts()).add(c)
    return out


def families(snap, mounts, version, kernel, per_file=0, paths=None):
    """The metric families of one snapshot.

    mounts: {(major, minor): (mount point, fs type)}, the labels of each
    device; per_file: 0, or how many files (the ones with the most write
    faults) get their own series, named from paths {(dev, ino): path} (or
    "ino N" when unknown)."""
    faults = CounterMetricFamily(
        "pfntrace_write_faults", "Write faults on DAX files, by mount, filesystem and kind "
        "(pfn_mkwrite, page_mkwrite, pmd, fault: first touch, no_notifier).",
        labels=["mount", "fs", "kind"])
    verdicts = CounterMetricFamily(
        "pfntrace_verdicts", "Write faults by the timestamp verdict judged in the kernel "
        "(UPDATED, CURRENT, MISSED, NO_NOTIFIER, UNDECIDED).",
        labels=["mount", "verdict"])
    latency = HistogramMetricFamily(
        "pfntrace_handler_latency_seconds", "Duration of the write fault's handler "
        "(do_wp_page or the filesystem's fault handler), from the kernel's log2 histogram.",
        labels=["mount", "fs"])
    invisible = CounterMetricFamily(
        "pfntrace_invisible_writes", "Write faults after which mtime and ctime still equal "
        "what the last stat of the file returned.", labels=["mount"])
    for (mount, fs), c in sorted(_per_mount(snap, mounts).items()):
        for kind, n in zip(KINDS, c.kinds):
            faults.add_metric([mount, fs, kind], n)
        for verdict, n in zip(VERDICTS, c.verdicts):
            verdicts.add_metric([mount, verdict], n)
        latency.add_metric([mount, fs], latency_buckets(c.lat), c.lat_sum / 1e9)
        invisible.add_metric([mount], c.invisible)
    lost = CounterMetricFamily(
        "pfntrace_lost_events", "Write faults pfntrace could not count, by reason (a full "
        "map or ring, a return probe that never ran, a probe run the kernel skipped).",
        labels=["reason"])
    # Every reason, zeros included: a reason that starts to count is a
    # series that moves, not one that appears.
    for reason in LOST_REASONS:
        lost.add_metric([reason], snap.lost_by_reason.get(reason, 0))
    build = GaugeMetricFamily("pfntrace_build_info", "pfntrace's version and the kernel "
                              "it runs on; always 1.", labels=["version", "kernel"])
    build.add_metric([version, kernel], 1)
    out = [faults, verdicts, latency, invisible, lost, build]
    if per_file:
        out += _file_families(snap, mounts, per_file, paths or {})
    return out


def top_files(files, n):
    """The n (dev, ino) keys with the most write faults (ties: by key)."""
    return sorted(files, key=lambda k: (-files[k].total, k))[:n]


def _file_families(snap, mounts, n, paths):
    faults = CounterMetricFamily(
        "pfntrace_file_write_faults", "Write faults per file (the files with the most, "
        "capped by --max-files).", labels=["mount", "path", "kind"])
    verdicts = CounterMetricFamily(
        "pfntrace_file_verdicts", "Write faults per file by verdict (the files with the most, "
        "capped by --max-files).", labels=["mount", "path", "verdict"])
    for key in top_files(snap.files, n):
        c = snap.files[key]
        mount = mount_of(key[0], mounts)[0]
        path = paths.get(key) or "ino %d" % key[1]
        for kind, x in zip(KINDS, c.kinds):
            faults.add_metric([mount, path, kind], x)
        for verdict, x in zip(VERDICTS, c.verdicts):
            verdicts.add_metric([mount, path, verdict], x)
    return [faults, verdicts]


class Collector:
    """A prometheus_client collector: each collect() is one fresh read."""

    def __init__(self, read):
        self.read = read      # () -> list of metric families

    def collect(self):
        return self.read()


def registry(read):
    """A registry holding only pfntrace's collector (no process metrics of
    the Python client: this is an exporter of the kernel's counters)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(read))
    return reg


def exposition(fams):
    """The text exposition format of some metric families."""
    return generate_latest(registry(lambda: fams))


def write_atomically(directory, name, data):
    """Write data to directory/name so that a reader sees the old file or
    the new one, never a part: a temporary file in the same directory (same
    filesystem), flushed, then renamed over the name.  node_exporter's
    textfile collector ignores names not ending in .prom, so the temporary
    one is hidden from it too."""
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
