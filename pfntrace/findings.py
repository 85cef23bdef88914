"""Findings for `pfntrace check`: the write faults that went wrong.

``findings(analysis)`` returns one line per MISSED or NO_NOTIFIER fault, in
stream order, e.g.::

    MISSED /mnt/dax/f page 3 pid 812 (writer): mtime stayed at 2025-... , 4.000 ms before the fault's tick ...
    NO_NOTIFIER /mnt/dax/g page 0 pid 813 (w2): made writable without ->pfn_mkwrite: ...
    MISSED /mnt/dax/tmp1 (deleted) page 0 pid 814 (t): ...   (gone by the end)

An empty list means every write fault either moved the timestamps or found
them already current.

``invisible_line(fault)`` is the line `check --invisible` prints for a write
that the last stat before it cannot see::

    INVISIBLE /mnt/dax/f page 0 pid 812 (writer): mtime ... unchanged since pid 813 (rsync) ...
"""


def finding_line(fault):
    return "%s %s page %d pid %d (%s): %s" % (
        fault.verdict, fault.file.shown_path, fault.pgoff, fault.pid, fault.comm, fault.detail)


def findings(analysis):
    """One-line strings for the MISSED and NO_NOTIFIER faults."""
    return [finding_line(f) for f in analysis.problems]


def invisible_line(fault):
    return "INVISIBLE %s page %d pid %d (%s): %s" % (
        fault.file.shown_path, fault.pgoff, fault.pid, fault.comm, fault.invisible_detail)
