"""Write-exposure windows: when a file's data can change under an mtime
that will not move, and who looked at the file meanwhile.

A write fault stamps mtime and leaves the page writable in the faulting
process's mapping.  Every later store into that page changes the data with
no fault and no stamp, until the page is write-protected again: by the
writeback of its DAX entry (msync, fsync, the kernel's background
writeback: fs_dax:dax_writeback_one cleans every mapping's PTE of it), or
by every mapping that holds it writable going away (munmap, exit, exec).
That span is the page's window.

A process that stats the file while one of its pages is in a window is
exposed: whatever is stored after its stat and before the window closes
changes data it believes it has, under the mtime it was shown.  Only a
later fault that moves mtime again (a fault on another page of the file,
or of another mapping) lets it see a change; so an observation's exposure
on a page ends at the page's close or at the file's next stamp after the
observation, whichever comes first.

pfntrace cannot see the stores themselves (there is no event for them):
it reports the exposure, which is never less than the hidden changes.

This module is the engine over plain inputs, in time order; the recording's
events are turned into these calls by the correlation.
"""

from dataclasses import dataclass, field

# What closed a window.
WRITEBACK = "writeback"   # its DAX entry written back: every mapping's PTE cleaned
UNMAP = "unmap"           # the last mapping holding it writable was unmapped
EXIT = "exit"             # ... went away with its process (exit or exec)
OPEN = "open"             # still open when the recording ended

# What ended an observation's exposure on a page before its window closed.
STAMP = "stamp"           # a later fault moved the file's mtime again


@dataclass
class Window:
    """One write-exposure window: pages [pgoff, pgoff + npages) of a file
    (npages 1, or 512 for a PMD fault), writable since opened_ns."""

    dev: int
    ino: int
    pgoff: int
    npages: int
    opened_ns: int
    opened_by: tuple          # (pid, comm) of the fault that opened it
    # (tgid, user address): the mappings that hold it writable (one
    # process can map a file twice).
    writers: set = field(default_factory=set)
    closed_ns: int = None
    cause: str = OPEN

    @property
    def key(self):
        return (self.dev, self.ino)

    def length_ns(self, end_ns):
        return (self.closed_ns if self.closed_ns is not None else end_ns) - self.opened_ns


@dataclass
class PageExposure:
    """One page (window) an observation found open."""

    window: Window
    until_ns: int = None      # when the exposure ended (None: at the end)
    ended_by: str = OPEN      # a window cause, or STAMP


@dataclass
class Observation:
    """A stat of a file (any process) that found some of its pages in a
    window: exposed."""

    ts_ns: int
    dev: int
    ino: int
    pid: int
    comm: str
    pages: list               # [PageExposure]

    @property
    def key(self):
        return (self.dev, self.ino)

    def open_after_ns(self, end_ns):
        """How long the longest of its pages stayed exposed after it."""
        return max((p.until_ns if p.until_ns is not None else end_ns) - self.ts_ns
                   for p in self.pages)


class Exposure:
    """Feed it faults, writebacks, unmaps, exits and stats in time order;
    finish() closes the book.  windows: every window, observations: every
    exposed stat; unexposed: stats that found no page open."""

    def __init__(self):
        self.windows = []
        self.observations = []
        self.unexposed = 0
        self.end_ns = None
        self._open = {}        # (dev, ino) -> {pgoff: Window}
        self._by_writer = {}   # tgid -> {address: Window}
        self._watching = {}    # (dev, ino) -> [PageExposure] not ended yet

    # -- inputs ------------------------------------------------------------

    def fault(self, ts_ns, dev, ino, pgoff, tgid, address, comm="", npages=1, stamped=True):
        """A write fault that left pages [pgoff, pgoff + npages) writable in
        tgid's mapping at address.  stamped: it moved the file's mtime
        (a fault in the same clock tick as the last stamp does not)."""
        key = (dev, ino)
        if stamped:
            self._end_watches(key, ts_ns, STAMP)
        pages = self._open.setdefault(key, {})
        w = pages.get(pgoff)
        if w is None:
            w = Window(dev, ino, pgoff, npages, ts_ns, (tgid, comm))
            pages[pgoff] = w
            self.windows.append(w)
        w.writers.add((tgid, address))
        self._by_writer.setdefault(tgid, {})[address] = w

    def writeback(self, ts_ns, dev, ino, pgoff, npages=1):
        """fs_dax:dax_writeback_one: pages [pgoff, pgoff + npages) clean and
        write-protected in every mapping."""
        pages = self._open.get((dev, ino))
        if not pages:
            return
        end = pgoff + npages
        for start in [p for p, w in pages.items() if p < end and pgoff < p + w.npages]:
            self._close(pages.pop(start), ts_ns, WRITEBACK)

    def unmap(self, ts_ns, tgid, start, end):
        """Addresses [start, end) of tgid's mappings unmapped."""
        mine = self._by_writer.get(tgid)
        if not mine:
            return
        for address in [a for a in mine if start <= a < end]:
            self._drop_writer(mine.pop(address), (tgid, address), ts_ns, UNMAP)

    def mm_gone(self, ts_ns, tgid):
        """tgid's address space went away (its exit, or an exec)."""
        for address, w in self._by_writer.pop(tgid, {}).items():
            self._drop_writer(w, (tgid, address), ts_ns, EXIT)

    def observe(self, ts_ns, dev, ino, pid, comm=""):
        """A stat of the file returned to pid."""
        pages = self._open.get((dev, ino))
        if not pages:
            self.unexposed += 1
            return None
        seen = [PageExposure(w) for _, w in sorted(pages.items())]
        ob = Observation(ts_ns, dev, ino, pid, comm, seen)
        self.observations.append(ob)
        self._watching.setdefault((dev, ino), []).extend(seen)
        return ob

    def finish(self, ts_ns):
        """The recording ended: what is still open stays open."""
        self.end_ns = ts_ns

    # -- book-keeping ------------------------------------------------------

    def _drop_writer(self, w, writer, ts_ns, cause):
        w.writers.discard(writer)
        if w.writers or w.closed_ns is not None:
            return      # still writable through another mapping
        pages = self._open.get(w.key)
        if pages is not None and pages.get(w.pgoff) is w:
            del pages[w.pgoff]
        self._close(w, ts_ns, cause)

    def _close(self, w, ts_ns, cause):
        w.closed_ns, w.cause = ts_ns, cause
        for tgid, address in w.writers:
            mine = self._by_writer.get(tgid)
            if mine is not None and mine.get(address) is w:
                del mine[address]
        w.writers = set()
        watching = self._watching.get(w.key)
        if watching:
            for p in [p for p in watching if p.window is w]:
                p.until_ns, p.ended_by = ts_ns, cause
                watching.remove(p)

    def _end_watches(self, key, ts_ns, why):
        for p in self._watching.pop(key, ()):
            p.until_ns, p.ended_by = ts_ns, why
