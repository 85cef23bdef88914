"""The kernel's own count of DAX faults, read from tracefs, not through pfntrace.

A private tracefs instance (instances/NAME) gets its own buffer and event
switches, so enabling events there touches neither the global trace nor
pfntrace's BPF attachments.  This is the independent source the lab
tests check pfntrace's counts against.
"""

import os
import re
from collections import Counter

TRACEFS = "/sys/kernel/tracing"
EVENTS = ("dax_pte_fault_done", "dax_pmd_fault_done", "dax_writeback_one",
          "dax_insert_pfn_mkwrite")

# include/trace/events/fs_dax.h TP_printk formats
_LINE = re.compile(r"(dax_\w+): dev (\d+):(\d+) ino (0x[0-9a-f]+|0)\b(.*)$")
_PGOFF = re.compile(r"pgoff (0x[0-9a-f]+|0)\b")
_PGLEN = re.compile(r"pglen (0x[0-9a-f]+|0)\b")


class TraceInstance:
    """A private tracefs instance with some events on (and their filters)."""

    def __init__(self, name, events):
        self.dir = os.path.join(TRACEFS, "instances", name)
        self.events = events  # {"group/event": filter or None}

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        self._write("buffer_size_kb", "8192")
        self._write("trace", "")
        for ev, flt in self.events.items():
            if flt:
                self._write("events/%s/filter" % ev, flt)
            self._write("events/%s/enable" % ev, "1")
        return self

    def __exit__(self, *exc):
        for ev in self.events:
            self._write("events/%s/enable" % ev, "0")

    def _write(self, rel, value):
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(value)

    def lines(self):
        with open(os.path.join(self.dir, "trace")) as f:
            return [l for l in f if not l.startswith("#")]


def pte_kind(write, mkwrite):
    """The kind of a dax_pte_fault_done, from its flags: pte_mkwrite (WRITE
    and MKWRITE: the ->pfn_mkwrite path), pte_write (a first-touch write) or
    pte_read."""
    if write and mkwrite:
        return "pte_mkwrite"
    return "pte_write" if write else "pte_read"


def pmd_kind(fallback, write):
    """The kind of a dax_pmd_fault_done: pmd_fallback (to PTEs), pmd_write
    or pmd_read."""
    if fallback:
        return "pmd_fallback"
    return "pmd_write" if write else "pmd_read"


class DaxTrace(TraceInstance):
    def __init__(self, name="pfntrace-check"):
        super().__init__(name, {"fs_dax/" + ev: None for ev in EVENTS})

    def counts(self):
        """Counter keyed by (ino, kind): pte_mkwrite (WRITE|MKWRITE PTE
        faults: the ->pfn_mkwrite path), pte_write (first-touch write),
        pte_read, pmd_write, pmd_fallback, reprotect_pages, map_sync; plus
        ("pgoffs", ino) -> sorted pgoffs of pte_mkwrite faults."""
        c = Counter()
        pgoffs = {}
        for line in self.lines():
            m = _LINE.search(line)
            if not m:
                continue
            event, rest = m.group(1), m.group(5)
            ino = int(m.group(4), 16)
            words = set(re.split(r"[\s|]+", rest))
            if event == "dax_pte_fault_done":
                kind = pte_kind("WRITE" in words, "MKWRITE" in words)
                c[(ino, kind)] += 1
                if kind == "pte_mkwrite":
                    pgoffs.setdefault(ino, []).append(int(_PGOFF.search(rest).group(1), 16))
            elif event == "dax_pmd_fault_done":
                c[(ino, pmd_kind("FALLBACK" in words, "WRITE" in words))] += 1
            elif event == "dax_writeback_one":
                c[(ino, "reprotect_pages")] += int(_PGLEN.search(rest).group(1), 16)
            elif event == "dax_insert_pfn_mkwrite":
                c[(ino, "map_sync")] += 1
        return c, {ino: sorted(p) for ino, p in pgoffs.items()}


# FAULT_FLAG_* (include/linux/mm_types.h) and VM_FAULT_FALLBACK
# (include/linux/mm_types.h, enum vm_fault_reason): the bits DaxTrace reads
# as names from the formatted trace, here as numbers from the hist keys.
# The same on every lab kernel (6.1 to the newest).
FAULT_FLAG_WRITE = 0x1
FAULT_FLAG_MKWRITE = 0x2
VM_FAULT_FALLBACK = 0x800
# common_cpu is in the keys so that no two CPUs ever insert the same key.
# The kernel's hist map is lock-free (kernel/trace/tracing_map.c): a CPU
# meeting a key another CPU is still inserting spins a bounded number of
# times for it and then drops its event, counted under "Dropped".  Under
# TCG a vCPU can be descheduled by the host mid-insert, and it happened:
# 35 faults dropped at the start of the 8-thread one-file storm (6.12/xfs,
# CI).  With the CPU in the key, a key is only ever inserted by its own CPU,
# with preemption off.  The PMD trigger has no room left (three keys at
# most) and PMD faults are rare here; its drops still fail the test.
_HIST = {
    "fs_dax/dax_pte_fault_done": "hist:keys=ino,flags,common_cpu",
    "fs_dax/dax_pmd_fault_done": "hist:keys=ino,flags,result",
    "fs_dax/dax_writeback_one": "hist:keys=ino,common_cpu:vals=hitcount,pglen",
    "fs_dax/dax_insert_pfn_mkwrite": "hist:keys=ino,common_cpu",
}
_HIST_ENTRY = re.compile(r"^\{(.*)\}(.*)$")
_HIST_FIELD = re.compile(r"(\w+):\s*(\d+)")
_HIST_DROPPED = re.compile(r"Dropped:\s*(\d+)")


class DaxHist(TraceInstance):
    """DaxTrace's counts (without the pgoffs), summed by the kernel itself
    in hist triggers on the same fs_dax tracepoints: nothing goes through a
    trace buffer, so a storm of a million faults cannot overflow one, and
    reading the result is a few lines however long the storm was."""

    def __init__(self, name="pfntrace-hist"):
        super().__init__(name, {})

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        for ev, trigger in _HIST.items():
            # A trigger left by a test that died would add its old counts.
            self._remove(ev, trigger)
            self._write("events/%s/trigger" % ev, trigger)
        return self

    def __exit__(self, *exc):
        for ev, trigger in _HIST.items():
            self._remove(ev, trigger)

    def _remove(self, ev, trigger):
        try:
            self._write("events/%s/trigger" % ev, "!" + trigger)
        except OSError:
            pass  # not there

    def _entries(self, ev):
        with open(os.path.join(self.dir, "events", ev, "hist")) as f:
            text = f.read()
        dropped = [int(d) for d in _HIST_DROPPED.findall(text)]
        if any(dropped):
            raise AssertionError("the kernel's %s histogram dropped %s entries"
                                 % (ev, dropped))
        for line in text.splitlines():
            m = _HIST_ENTRY.match(line.strip())
            if m:
                keys = {k: int(v) for k, v in _HIST_FIELD.findall(m.group(1))}
                vals = {k: int(v) for k, v in _HIST_FIELD.findall(m.group(2))}
                yield keys, vals

    def counts(self):
        """A Counter keyed by (ino, kind), the kinds of DaxTrace.counts(),
        summed over CPUs."""
        c = Counter()
        for k, v in self._entries("fs_dax/dax_pte_fault_done"):
            c[(k["ino"], pte_kind(k["flags"] & FAULT_FLAG_WRITE,
                                  k["flags"] & FAULT_FLAG_MKWRITE))] += v["hitcount"]
        for k, v in self._entries("fs_dax/dax_pmd_fault_done"):
            c[(k["ino"], pmd_kind(k["result"] & VM_FAULT_FALLBACK,
                                  k["flags"] & FAULT_FLAG_WRITE))] += v["hitcount"]
        for k, v in self._entries("fs_dax/dax_writeback_one"):
            c[(k["ino"], "reprotect_pages")] += v["pglen"]
        for k, v in self._entries("fs_dax/dax_insert_pfn_mkwrite"):
            c[(k["ino"], "map_sync")] += v["hitcount"]
        return c
