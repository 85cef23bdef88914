"""Catching the bug pfntrace exists for, on real kernels.

A kernel module (pfntrace/lab/bugmod) injects the classic bug classes into
one file's mapping on the real fault path of a real DAX mount, and a stat
oracle asks generic/080's question (did mtime move across an mmap read and
write?) with nothing but stat(2).  pfntrace check must agree with the oracle
on every file, with the exact count per verdict, and the kernel's fs_dax
tracepoints say whether the filesystem's fault path ran at all.

Then the same workloads under `record` and under top's in-kernel counters at
once: the two implementations of the verdict rules must count the same.
"""

import os
import time

import pytest

from daxtrace import DaxTrace
from guest import ATTACH_MODES, FS, IN_GUEST, PFNTRACE, WORKLOAD, figures, run, top_beside_record

if IN_GUEST:
    from pfntrace.lab import bugs, oracle

MODES = ("control", "no_pfn_mkwrite", "noop_pfn_mkwrite", "stale_update")
# What each mode must give per page written, and whether the filesystem's
# DAX fault path (dax_iomap_fault: the fs_dax tracepoints) ran.
EXPECT = {
    "control": (None, True),
    "no_pfn_mkwrite": ("NO_NOTIFIER", False),
    "noop_pfn_mkwrite": ("MISSED", False),
    "stale_update": ("MISSED", True),
}
WORKLOADS = (("read-then-write", 23), ("generic-080", 1))


@pytest.mark.parametrize("workload,pages", WORKLOADS, ids=[w for w, _ in WORKLOADS])
@pytest.mark.parametrize("mode", MODES)
def test_check_agrees_with_the_stat_oracle(dax_dir, mode, workload, pages):
    _check_against_the_oracle(dax_dir, mode, workload, pages, "auto")


@pytest.mark.parametrize("mode", MODES)
def test_check_agrees_with_the_stat_oracle_on_kprobes(dax_dir, mode):
    """The full kprobe plan (--attach kprobe), what kernels without BPF
    trampolines get, on one workload: the same verdicts, exactly."""
    _check_against_the_oracle(dax_dir, mode, "read-then-write", 23, "kprobe")


def _check_against_the_oracle(dax_dir, mode, workload, pages, attach):
    from pfntrace.correlate import analyse
    from pfntrace.recording import Recording

    path = os.path.join(dax_dir, "f")
    rec = os.path.join(dax_dir, "check.pft")
    trace = DaxTrace()
    got = bugs.run_under(mode, workload, path, pages,
                         wrap=PFNTRACE + ["check", "--attach", attach, "-o", rec, "--"],
                         around=trace)
    p = got.wrapped
    counts, _ = trace.counts()
    ino = got.oracle["ino"]
    finding, fs_ran = EXPECT[mode]

    # The oracle: generic/080's stat logic, independent of pfntrace.
    assert got.oracle["verdict"] == (oracle.MOVED if finding is None else oracle.STALE), got.oracle
    # The module really took the path it claims.
    assert got.counters["swaps"] >= 1, got.counters
    if mode in ("noop_pfn_mkwrite", "stale_update"):
        assert got.counters["calls"] == pages, got.counters
    # The kernel's own account: did the filesystem's DAX fault path run?
    assert counts[(ino, "pte_mkwrite")] == (pages if fs_ran else 0), counts

    with Recording.open(rec) as r:
        an = analyse(r)
    (f,) = [x for x in an.files if x.ino == ino]
    verdicts = f.verdict_counts()
    assert r.header["plan"]["attach"] == attach
    figures("check", mode=mode, workload=workload, attach=attach, exit=p.returncode,
             oracle=got.oracle["verdict"], verdicts=verdicts, fs_dax_mkwrite=counts[(ino, "pte_mkwrite")],
             module_calls=got.counters.get("calls"))
    assert f.write_faults == pages, (verdicts, p.stderr)
    assert verdicts["UNDECIDED"] == 0, [x.detail for x in an.faults]
    if finding is None:
        assert p.returncode == 0, p.stdout + p.stderr
        assert verdicts["UPDATED"] + verdicts["CURRENT"] == pages, verdicts
        assert verdicts["UPDATED"] >= 1, verdicts    # the first write after a >1 s sleep
        assert f.kinds[0] == pages                   # all through ->pfn_mkwrite
    else:
        assert p.returncode == 1, p.stdout + p.stderr
        assert verdicts[finding] == pages, (verdicts, [x.detail for x in an.faults][:3])
        lines = [l for l in p.stdout.splitlines() if l.startswith(finding + " ")]
        assert len(lines) == pages, p.stdout
        assert all((" %s page " % path) in l for l in lines), lines[0]
        if mode == "noop_pfn_mkwrite":
            # Named from the vma's ->pfn_mkwrite slot: a handler pfntrace never probed.
            assert "(noop_pfn_mkwrite)" in lines[0], lines[0]
            assert "file_update_time not called" in lines[0], lines[0]
        if mode == "stale_update":
            assert "(stale_pfn_mkwrite)" in lines[0], lines[0]
            assert "file_update_time called" in lines[0], lines[0]
    assert an.lost_total == 0 and "lost" not in p.stderr.split("pfntrace check:")[-1]


def test_check_without_write_faults_exits_4_unless_allowed(dax_dir):
    path = os.path.join(dax_dir, "ro")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    p = run(PFNTRACE + ["check", "--", "cat", path])
    assert p.returncode == 4, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("pfntrace: check: cat made no write fault")
    p = run(PFNTRACE + ["check", "--allow-empty", "--", "cat", path])
    assert p.returncode == 0, p.stderr


# --- top's in-kernel rules against report's, on the same faults ---------------

def _top_counts(reader):
    """{(kernel dev, ino): (kinds, verdicts)} from top's in-kernel counters."""
    snap = reader.read()
    return {k: (list(c.kinds), list(c.verdicts)) for k, c in snap.files.items()}, snap


@pytest.mark.parametrize("attach", ATTACH_MODES)
def test_top_and_report_count_the_same(dax_dir, attach):
    from pfntrace.correlate import analyse
    from pfntrace.recording import Recording

    rec_path = os.path.join(dax_dir, "all.pft")
    with top_beside_record(rec_path, attach) as (reader, _):
        # Every kind and every verdict but UNDECIDED: healthy faults
        # (UPDATED, CURRENT), first touches, PMDs, and injected bugs.
        for mode in MODES:
            bugs.run_under(mode, "read-then-write", os.path.join(dax_dir, mode), 23)
        for name, workload, pages in (("wsw", "write-sync-write", 23),
                                      ("huge", "read-then-write", 1024)):
            w = run(WORKLOAD + [workload, os.path.join(dax_dir, name), str(pages)])
            assert w.returncode == 0, w.stderr
        time.sleep(0.5)
        kernel, snap = _top_counts(reader)
    with Recording.open(rec_path) as r:
        an = analyse(r)
    python = {(f.dev, f.ino): (f.kinds, f.verdicts) for f in an.files if f.write_faults}
    assert an.lost_total == 0 and snap.lost == 0
    assert sorted(python.items()) == sorted(
        (k, v) for k, v in kernel.items() if sum(v[0])), (python, kernel)
    # Every kind and every verdict other than UNDECIDED occurred (PMDs
    # where the filesystem aligns a 4 MiB file's blocks: ext4 in the lab).
    totals = [sum(v[0][i] for v in python.values()) for i in range(5)]
    vtotals = [sum(v[1][i] for v in python.values()) for i in range(5)]
    assert all(totals[i] for i in (0, 3, 4)), totals
    if FS == "ext4":
        assert totals[2], totals
    assert all(vtotals[i] for i in (0, 1, 2, 3)) and vtotals[4] == 0, vtotals
    figures("top_vs_report", attach=attach, files=len(python), kinds=totals, verdicts=vtotals)
