"""Findings for `pfntrace check`: the write faults that went wrong.

``findings(analysis)`` returns one line per MISSED or NO_NOTIFIER fault, in
stream order, e.g.::

    MISSED /mnt/dax/f page 3 pid 812 (writer): mtime stayed at 2025-... , 4.000 ms before ...
    NO_NOTIFIER /mnt/dax/g page 0 pid 813 (w2): made writable without ->pfn_mkwrite: ...
    MISSED /mnt/dax/tmp1 (deleted) page 0 pid 814 (t): ...   (gone by the end)

An empty list means every write fault either moved the timestamps or found
them already current.

``invisible_line(fault)`` is the line `check --invisible` prints for a write
that the last stat before it cannot see::

    INVISIBLE /mnt/dax/f page 0 pid 812 (writer): mtime ... unchanged since pid 813 (rsync) ...

``exposed_line(observation, path, end_ns)`` is the line `check --exposed`
prints for a stat made while a page of the file was still writable after
its stamping fault (pfntrace.exposure)::

    EXPOSED /mnt/dax/f stat by pid 813 (rsync): 1 page writable (page 0, since pid 812's ...
"""

from pfntrace.correlate import fmt_span

# What ended an exposed stat's last page's exposure (pfntrace.exposure).
ENDED_BY = {"writeback": "written back", "unmap": "unmapped",
            "stamp": "a later fault moved mtime", "open": "still open at the end"}


def finding_line(fault):
    return "%s %s page %d pid %d (%s): %s" % (
        fault.verdict, fault.file.shown_path, fault.pgoff, fault.pid, fault.comm, fault.detail)


def findings(analysis):
    """One-line strings for the MISSED and NO_NOTIFIER faults."""
    return [finding_line(f) for f in analysis.problems]


def invisible_line(fault):
    return "INVISIBLE %s page %d pid %d (%s): %s" % (
        fault.file.shown_path, fault.pgoff, fault.pid, fault.comm, fault.invisible_detail)


def exposed_detail(observation, end_ns):
    """Which pages were writable at the stat, and how long after it the
    longest stayed so, until what."""
    pages = observation.pages
    first = pages[0]

    def after(p):
        return (p.until_ns if p.until_ns is not None else end_ns) - observation.ts_ns

    longest = max(pages, key=after)
    return ("%d page%s writable (page %d, since pid %d's fault %s before), exposed %s after, "
            "until %s" % (len(pages), "" if len(pages) == 1 else "s", first.window.pgoff,
                          first.window.opened_by[0],
                          fmt_span(observation.ts_ns - first.window.opened_ns),
                          fmt_span(after(longest)), ENDED_BY[longest.ended_by]))


def exposed_line(observation, path, end_ns):
    return "EXPOSED %s stat by pid %d (%s): %s" % (
        path, observation.pid, observation.comm, exposed_detail(observation, end_ns))
