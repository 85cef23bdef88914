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
                if "WRITE" in words and "MKWRITE" in words:
                    c[(ino, "pte_mkwrite")] += 1
                    pgoffs.setdefault(ino, []).append(int(_PGOFF.search(rest).group(1), 16))
                elif "WRITE" in words:
                    c[(ino, "pte_write")] += 1
                else:
                    c[(ino, "pte_read")] += 1
            elif event == "dax_pmd_fault_done":
                if "FALLBACK" in words:
                    c[(ino, "pmd_fallback")] += 1
                elif "WRITE" in words:
                    c[(ino, "pmd_write")] += 1
                else:
                    c[(ino, "pmd_read")] += 1
            elif event == "dax_writeback_one":
                c[(ino, "reprotect_pages")] += int(_PGLEN.search(rest).group(1), 16)
            elif event == "dax_insert_pfn_mkwrite":
                c[(ino, "map_sync")] += 1
        return c, {ino: sorted(p) for ino, p in pgoffs.items()}
