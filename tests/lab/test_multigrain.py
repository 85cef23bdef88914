"""Multigrain timestamps (6.13+) on a real kernel: a stat, then an mmap write.

On 6.13+ ext4 and xfs stamp with the coarse clock (one tick) unless a stat
has seen the ctime since its last change: the stat sets I_CTIME_QUERIED (bit
31 of i_ctime_nsec) and the next change must get a fine-grained stamp, newer
than anything a stat has seen.  pfntrace keeps the bit at the fault's entry
and judges with it: a queried ctime that did not move is MISSED whatever the
clock says; and it reads the kernel's clock with the multigrain floor, so a
fine-grained stamp lies inside the clock's range at the fault.

Each round: a fresh 1-page file, mmap read, os.stat (queried), mmap write,
os.stat; all rounds recorded by one `pfntrace record`.  Only the newest lab
kernel has multigrain timestamps: 6.1 and 6.12 do not get these tests (and
a newest kernel without them would skip, saying so).
"""

import json
import os
import sys

import pytest

from guest import FS, PFNTRACE, guest_fixture, run

pytestmark = pytest.mark.lab_kernels("newest")

ROUNDS = 13
QUERIED = 1 << 31

WORKLOAD = r"""
import json, mmap, os, sys
folder, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = []
for i in range(rounds):
    path = os.path.join(folder, "f%02d" % i)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"\0" * 4096)
    os.fsync(fd)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0]                        # read fault: the page is mapped read-only
    st1 = os.stat(path)         # sets I_CTIME_QUERIED
    m[1] = 1                    # write-protect fault -> ->pfn_mkwrite
    st2 = os.stat(path)
    m.close()
    os.close(fd)
    got.append({"path": path, "ino": st1.st_ino,
                "mtime": [st1.st_mtime_ns, st2.st_mtime_ns],
                "ctime": [st1.st_ctime_ns, st2.st_ctime_ns]})
with open(out, "w") as f:
    json.dump(got, f)
"""


def multigrain_kernel():
    """(True, why) when the running kernel has multigrain timestamps: the
    multigrain floor (mg_floor, 6.13+) is a symbol."""
    with open("/proc/kallsyms") as f:
        for line in f:
            if line.split()[2:3] == ["mg_floor"]:
                return True, "mg_floor in /proc/kallsyms"
    return False, ("kernel %s has no multigrain timestamps (no mg_floor in /proc/kallsyms; "
                   "6.13+): no I_CTIME_QUERIED to test" % os.uname().release)


class Rounds:
    def __init__(self, workdir):
        from pfntrace.correlate import analyse
        from pfntrace.recording import Recording

        self.dir = workdir
        out = os.path.join(workdir, "rounds.json")
        self.output = os.path.join(workdir, "mg.pft")
        self.proc = run(PFNTRACE + ["record", "-o", self.output, "--", sys.executable, "-c",
                                    WORKLOAD, workdir, str(ROUNDS), out])
        assert self.proc.returncode == 0, self.proc.stderr
        with open(out) as f:
            self.rounds = json.load(f)
        self.recording = Recording.open(self.output)
        self.analysis = analyse(self.recording, keep_faults=True)
        self.events = list(self.recording.iter_events())

    def faults(self, ino):
        return [f for f in self.analysis.faults if f.file.ino == ino]


@guest_fixture(scope="module")
def mg(tmp_path_factory):
    from guest import MOUNT

    ok, why = multigrain_kernel()
    if not ok:
        return why
    workdir = os.path.join(MOUNT, "multigrain")
    run(["rm", "-rf", workdir])
    os.makedirs(workdir)
    return Rounds(workdir)


def _need(mg):
    if isinstance(mg, str):
        print("skipped: %s" % mg)
        pytest.skip(mg)


def test_a_stat_makes_the_next_mmap_write_fine_grained(mg):
    _need(mg)
    for r in mg.rounds:
        # The kernel's side: the write after a stat got a new stamp, even
        # inside the tick the file was written in.
        assert r["mtime"][1] != r["mtime"][0], r
        assert r["ctime"][1] != r["ctime"][0], r
        assert r["mtime"][1] > r["mtime"][0] and r["ctime"][1] > r["ctime"][0], r


def _wp_event(mg, ino):
    """The do_wp_page event of the file's write fault (not a retried entry)."""
    from pfntrace import verdict as V

    got = [e for e in mg.events if e["type"] == V.EV_WP and e["ino"] == ino
           and V.classify_event(e) == V.K_PFN]
    assert len(got) == 1, "do_wp_page pfn_mkwrite events of ino %d: %d" % (ino, len(got))
    return got[0]


def test_the_fault_is_updated_with_the_queried_bit_seen_at_entry(mg):
    _need(mg)
    from pfntrace import verdict as V

    same_tick = 0
    for r in mg.rounds:
        faults = mg.faults(r["ino"])
        kinds = sorted(f.kind for f in faults)
        # One write-protect fault through ->pfn_mkwrite per file (the
        # file's data came from write(2), not from a fault).
        assert kinds == ["pfn_mkwrite"], (r["path"], kinds)
        f = faults[0]
        assert f.verdict == "UPDATED", f.detail
        assert f.queried, "the fault's ctime at entry lacks I_CTIME_QUERIED: %s" % f.detail
        # What pfntrace read is what the stats saw, to the nanosecond.
        assert (f.mtime_before, f.mtime_after) == tuple(r["mtime"]), (f.detail, r)
        assert (f.ctime_before, f.ctime_after) == tuple(r["ctime"]), (f.detail, r)
        # The fine-grained stamp lies inside the kernel's clock (coarse time
        # with the multigrain floor) during the fault.
        lo, hi = f.clock
        assert 0 < lo <= f.mtime_after <= hi, (f.clock, f.detail)
        if f.mtime_before >= lo:
            same_tick += 1
        # The raw event: bit 31 of ctime_nsec set at entry, clear after the
        # new stamp (the second stat comes after the fault); judged UPDATED.
        wp = _wp_event(mg, r["ino"])
        assert wp["ctime_nsec"][0] & QUERIED, wp
        assert not wp["ctime_nsec"][1] & QUERIED, wp
        assert V.judge_event(wp, V.K_PFN) == V.V_UPDATED
    print("%s: %d of %d rounds had the old mtime still inside the clock's range "
          "(a coarse clock alone would have kept it)" % (FS, same_tick, len(mg.rounds)))


def test_the_verdict_judges_a_queried_ctime_that_did_not_move(mg):
    """The verdict rules on a real fault's values: had the timestamps stayed
    where they were, with the clock still at them, the queried bit alone
    makes it MISSED; without the bit the same fault would be CURRENT."""
    _need(mg)
    from pfntrace import verdict as V

    for r in mg.rounds:
        wp = _wp_event(mg, r["ino"])
        stuck = dict(wp)
        for name in ("mtime_sec", "mtime_nsec", "ctime_sec", "ctime_nsec"):
            stuck[name] = [wp[name][0], wp[name][0]]
        m0 = wp["mtime_sec"][0] * V.NS + wp["mtime_nsec"][0]
        c0 = wp["ctime_sec"][0] * V.NS + (wp["ctime_nsec"][0] & V.NSEC_MASK)
        stuck["clock_ns"] = [max(m0, c0), max(m0, c0)]
        assert V.judge_event(stuck, V.K_PFN) == V.V_MISSED
        unqueried = dict(stuck, ctime_nsec=[c & ~QUERIED for c in stuck["ctime_nsec"]])
        assert V.judge_event(unqueried, V.K_PFN) == V.V_CURRENT
