"""One `top` beside one `record` per attach mode, over the workloads of
every test that holds top's in-kernel counters against record's stream:
test_catch's every kind and verdict (the injected bugs, a write-sync-write,
a PMD-sized file) and, under auto, test_invisible's stat-write loop.

A top and a record cost two bcc compiles (~30 s each of a guest under
TCG): the tests share them, each asserting on its own files.  The guest
runs every lab test in one pytest process, so the session is made once.
"""

import os
import time

from guest import IN_GUEST, MOUNT, WORKLOAD, run, top_beside_record

if IN_GUEST:
    from pfntrace.lab import bugs

BUG_PAGES = 23
STAT_ROUNDS = 300   # test_invisible's ROUNDS
_sessions = {}


class Session:
    """What one top-beside-record run saw: top's snapshot taken after the
    last workload, record's analysis, the mount's kernel dev, and the
    stat-write loop's stdout (its oracle line; auto only)."""

    def __init__(self, snap, analysis, dev, rec_path, loop_stdout):
        self.snap, self.analysis, self.dev = snap, analysis, dev
        self.rec_path, self.loop_stdout = rec_path, loop_stdout


def session(attach):
    if attach not in _sessions:
        _sessions[attach] = _run(attach)
    return _sessions[attach]


def _run(attach):
    from pfntrace.correlate import analyse
    from pfntrace.recording import Recording

    where = os.path.join(MOUNT, "top-vs-record-" + attach)
    run(["rm", "-rf", where])
    os.makedirs(where)
    rec_path = os.path.join(where, "all.pft")
    loop_stdout = None
    with top_beside_record(rec_path, attach) as (reader, dev):
        # Every kind and every verdict but UNDECIDED: healthy faults
        # (UPDATED, CURRENT), first touches, PMDs, and injected bugs.
        for mode in bugs.BUG_MODES:
            bugs.run_under(mode, "read-then-write", os.path.join(where, mode), BUG_PAGES)
        for name, workload, pages in (("wsw", "write-sync-write", 23),
                                      ("huge", "read-then-write", 1024)):
            w = run(WORKLOAD + [workload, os.path.join(where, name), str(pages)])
            assert w.returncode == 0, w.stderr
        if attach == "auto":
            w = run(WORKLOAD + ["stat-write-loop", os.path.join(where, "loop"),
                                str(STAT_ROUNDS)])
            assert w.returncode == 0, w.stderr
            loop_stdout = w.stdout
        time.sleep(0.5)
        snap = reader.read()
    with Recording.open(rec_path) as r:
        analysis = analyse(r)
    return Session(snap, analysis, dev, rec_path, loop_stdout)
