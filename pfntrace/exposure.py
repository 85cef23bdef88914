"""Write-exposure windows: when a file's data can change under an mtime
that will not move, and who looked at the file meanwhile.

A write fault stamps mtime and leaves the page writable in the faulting
process's mapping.  Every later store into that page changes the data with
no fault and no stamp, until the page is write-protected again: by the
writeback of its DAX entry (msync, fsync, sync: fs_dax:dax_writeback_one
cleans every mapping's PTE of it; the kernel's background writeback never
writes a DAX mapping back, so a program that does none of these keeps its
pages writable to the end), or by every mapping that holds it writable
going away (munmap, exit, exec, truncate: unmap_page_range).  That span is
the page's window.

A process that stats the file while one of its pages is in a window is
exposed: whatever is stored after its stat and before the window closes
changes data it believes it has, under the mtime it was shown.  Only a
later fault that moves mtime past what it saw (a fault on another page of
the file, or through another mapping) lets it see a change; so an
observation's exposure on a page ends at the page's close or at that
stamp, whichever comes first.

pfntrace cannot see the stores themselves (there is no event for them):
it reports the exposure, which is never less than the hidden changes.

This module is the engine over plain inputs, in time order; the correlation
turns the recording's events into these calls.
"""

from collections import Counter
from dataclasses import dataclass, field

# What closed a window.
WRITEBACK = "writeback"   # its DAX entry written back: every mapping's PTE cleaned
UNMAP = "unmap"           # the last mapping holding it writable was unmapped
OPEN = "open"             # still open when the recording ended

# What ended an observation's exposure on a page before its window closed.
STAMP = "stamp"           # a later fault moved the file's mtime past what it saw

# log2 buckets of the histograms (ns): bucket i holds [2^(i-1), 2^i).
BUCKETS = 64

_NONE = {}
# A close of more pages than this is matched against the file's open
# windows rather than looked up page by page.
_LOOKUP_PAGES = 64


@dataclass(eq=False, slots=True)
class Window:
    """One write-exposure window: pages [pgoff, pgoff + npages) of a file
    (npages 1, or 512 for a PMD fault), writable since opened_ns."""

    dev: int
    ino: int
    pgoff: int
    npages: int
    opened_ns: int
    opened_by: tuple          # (pid, comm) of the fault that opened it
    writers: set = field(default_factory=set)   # tgids whose mappings hold it writable
    closed_ns: int = None
    closed_by: int = None     # the tgid that closed it (msync's caller, a truncate...)
    cause: str = OPEN

    @property
    def key(self):
        return (self.dev, self.ino)

    def length_ns(self, end_ns):
        return (self.closed_ns if self.closed_ns is not None else end_ns) - self.opened_ns


@dataclass(eq=False, slots=True)
class PageExposure:
    """One window an observation found open."""

    window: Window
    until_ns: int = None      # when the exposure ended (None: at the end)
    ended_by: str = OPEN      # a window cause, or STAMP


@dataclass(eq=False)
class Observation:
    """A stat of a file (by any process) that found some of its pages in a
    window: exposed."""

    ts_ns: int
    dev: int
    ino: int
    pid: int
    comm: str
    mtime_ns: int             # the mtime it was shown (None: unknown)
    pages: list               # [PageExposure]

    @property
    def key(self):
        return (self.dev, self.ino)

    def open_after_ns(self, end_ns):
        """How long the longest of its pages stayed exposed after it."""
        return max((p.until_ns if p.until_ns is not None else end_ns) - self.ts_ns
                   for p in self.pages)

    def ended(self):
        """Whether every one of its pages' exposure has ended."""
        return all(p.until_ns is not None for p in self.pages)


def bucket(ns):
    return min(max(ns, 0).bit_length(), BUCKETS - 1)


class Exposure:
    """Feed it write faults, closes and stats in time order; finish() closes
    the book.

    Counted always, in memory that does not grow with the recording:
    opened windows, closed ones by cause, how long they were open
    (window_ns) and, per exposed stat, how long its pages stayed open after
    it (after_ns), both log2 histograms; exposed and unexposed stats.  Kept
    when asked (keep=True): observations, every exposed stat with its
    pages; windows, every window (keep_windows, by default as keep: they
    are many).  Handed on as they happen when given a
    sink (a list; the Perfetto trace): every window once it has ended
    (closed, or still open at finish()) and every exposed stat when made."""

    def __init__(self, keep=True, keep_windows=None, sink=None):
        self.keep = keep
        self.keep_windows = keep if keep_windows is None else keep_windows
        self.sink = sink
        self.windows = []
        self.observations = []
        self.opened = 0
        self.closed = Counter()        # cause -> windows
        self.window_ns = [0] * BUCKETS
        self.after_ns = [0] * BUCKETS
        self.exposed = 0
        self.unexposed = 0
        self.end_ns = None
        self._open = {}        # (dev, ino) -> {pgoff: Window} of open windows
        self._huge = {}        # (dev, ino) -> {Window} of its open windows of > 1 page
        # (dev, ino, tgid) -> {Window} it holds writable: an unmap costs what
        # it closes, not the file's open windows (a fork storm's children
        # each unmap the whole mapping when they exit).
        self._held = {}
        self._watching = {}    # (dev, ino) -> [Observation] whose exposure goes on

    # -- inputs ------------------------------------------------------------

    def fault(self, ts_ns, dev, ino, pgoff, tgid, comm="", npages=1, mtime_ns=None):
        """A write fault that left pages [pgoff, pgoff + npages) writable in
        tgid's mapping; mtime_ns: the file's mtime after it (None: unread)."""
        key = (dev, ino)
        if mtime_ns is not None and key in self._watching:
            self._stamp(key, ts_ns, mtime_ns)
        pages = self._open.get(key)
        if pages is None:
            pages = self._open[key] = {}
        w = pages.get(pgoff)
        if w is not None and w.npages == npages and tgid in w.writers:
            return          # already open and held: a retried or repeated fault
        if w is None or w.npages != npages:
            if w is not None:       # the page's window becomes a huge one, or back
                self._forget(w)
            w = Window(dev, ino, pgoff, npages, ts_ns, (tgid, comm))
            pages[pgoff] = w
            if npages > 1:
                self._huge.setdefault(key, set()).add(w)
            self.opened += 1
            if self.keep_windows:
                self.windows.append(w)
        if tgid not in w.writers:
            w.writers.add(tgid)
            self._held.setdefault((dev, ino, tgid), set()).add(w)

    def writeback(self, ts_ns, dev, ino, pgoff, npages=1, tgid=None):
        """Pages [pgoff, pgoff + npages) clean and write-protected in every
        mapping (fs_dax:dax_writeback_one), by tgid (msync's caller, or
        another process's fsync or sync)."""
        key = (dev, ino)
        if npages == 1 and key not in self._huge:     # the common case, looked up
            w = self._open.get(key, _NONE).get(pgoff)
            if w is not None:
                self._close(w, ts_ns, WRITEBACK, tgid)
            return
        for w in self._overlapping(key, pgoff, npages):
            self._close(w, ts_ns, WRITEBACK, tgid)

    def unmap(self, ts_ns, dev, ino, pgoff, npages, tgid, foreign=False):
        """Pages [pgoff, pgoff + npages) unmapped from tgid's address space,
        or (foreign) from one that is not the unmapping task's, whose owner
        is unknown (truncate unmaps every mapping this way)."""
        if foreign:
            for w in self._overlapping((dev, ino), pgoff, npages):
                self._close(w, ts_ns, UNMAP, tgid)
            return
        held = self._held.get((dev, ino, tgid))
        if not held:
            return
        end = pgoff + npages
        for w in [w for w in held if w.pgoff < end and pgoff < w.pgoff + w.npages]:
            w.writers.discard(tgid)
            held.discard(w)
            if not w.writers:
                self._close(w, ts_ns, UNMAP, tgid)
        if not held:
            del self._held[(dev, ino, tgid)]

    def observe(self, ts_ns, dev, ino, pid, comm="", mtime_ns=None):
        """A stat of the file returned to pid; the Observation when it was
        exposed, else None."""
        key = (dev, ino)
        pages = self._open.get(key)
        if not pages:
            self.unexposed += 1
            return None
        ob = Observation(ts_ns, dev, ino, pid, comm, mtime_ns,
                         [PageExposure(w) for _, w in sorted(pages.items())])
        self.exposed += 1
        if self.keep:
            self.observations.append(ob)
        if self.sink is not None:
            self.sink.append(ob)
        self._watching.setdefault(key, []).append(ob)
        return ob

    def finish(self, ts_ns):
        """The recording ended: what is still open stays open, and counts
        as open until now."""
        self.end_ns = ts_ns
        for pages in self._open.values():
            for w in pages.values():
                self.closed[OPEN] += 1
                self.window_ns[bucket(ts_ns - w.opened_ns)] += 1
                if self.sink is not None:
                    self.sink.append(w)
        for watching in self._watching.values():
            for ob in watching:
                self.after_ns[bucket(ob.open_after_ns(ts_ns))] += 1
        self._watching = {}

    # -- book-keeping ------------------------------------------------------

    def open_windows(self):
        return sum(len(pages) for pages in self._open.values())

    def _overlapping(self, key, pgoff, npages):
        pages = self._open.get(key)
        if not pages:
            return []
        end = pgoff + npages
        if npages <= _LOOKUP_PAGES:
            found = [pages[p] for p in range(pgoff, end) if p in pages]
            # A huge window that starts before the range (rare: PMDs).
            found += [w for w in self._huge.get(key, ()) if w.pgoff < pgoff < w.pgoff + w.npages]
            return found
        return [w for p, w in pages.items() if p < end and pgoff < p + w.npages]

    def _forget(self, w):
        """Take an open window out of the book-keeping."""
        pages = self._open.get(w.key)
        if pages is not None and pages.get(w.pgoff) is w:
            del pages[w.pgoff]
            if not pages:
                del self._open[w.key]
        if w.npages > 1:
            huge = self._huge.get(w.key)
            if huge is not None:
                huge.discard(w)
                if not huge:
                    del self._huge[w.key]
        for tgid in w.writers:
            held = self._held.get((w.dev, w.ino, tgid))
            if held is not None:
                held.discard(w)
                if not held:
                    del self._held[(w.dev, w.ino, tgid)]
        w.writers = set()

    def _close(self, w, ts_ns, cause, tgid=None):
        self._forget(w)
        w.closed_ns, w.cause, w.closed_by = ts_ns, cause, tgid
        if self.sink is not None:
            self.sink.append(w)
        self.closed[cause] += 1
        self.window_ns[bucket(ts_ns - w.opened_ns)] += 1
        watching = self._watching.get(w.key)
        if not watching:
            return
        for ob in watching:
            for p in ob.pages:
                if p.window is w and p.until_ns is None:
                    p.until_ns, p.ended_by = ts_ns, cause
        self._watching[w.key] = self._still_watched(watching)

    def _still_watched(self, watching):
        """The observations of watching whose exposure goes on; the others'
        go into after_ns."""
        still = []
        for ob in watching:
            if ob.ended():
                self.after_ns[bucket(ob.open_after_ns(None))] += 1
            else:
                still.append(ob)
        return still

    def _stamp(self, key, ts_ns, mtime_ns):
        """A fault left the file's mtime at mtime_ns: observers shown another
        mtime can now see that the file changed."""
        watching = self._watching[key]
        for ob in watching:
            if ob.mtime_ns is not None and ob.mtime_ns != mtime_ns:
                for p in ob.pages:
                    if p.until_ns is None:
                        p.until_ns, p.ended_by = ts_ns, STAMP
        self._watching[key] = self._still_watched(watching)
