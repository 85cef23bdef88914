"""Catching the bug pfntrace exists for, on real kernels.

A kernel module (pfntrace/lab/bugmod) injects the classic bug classes into
one file's mapping on the real fault path of a real DAX mount, and a stat
oracle asks generic/080's question (did mtime move across an mmap read and
write?) with nothing but stat(2).  pfntrace check must agree with the oracle
on every file, with the exact count per verdict, and the kernel's fs_dax
tracepoints say whether the filesystem's fault path ran at all.

Then the same bugs under `record` and under top's in-kernel counters at
once (tests/lab/topvsrecord.py): the two implementations of the verdict
rules must count the same.
"""

import json
import os
import sys
import tempfile

import pytest

import topvsrecord
from daxtrace import DaxTrace
from guest import (ATTACH_MODES, FS, IN_GUEST, MOUNT, PFNTRACE, SAME_PLAN,
                   auto_is_the_kprobe_plan, figures, run)

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
BATCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bugbatch.py")


@pytest.mark.parametrize("workload,pages", WORKLOADS, ids=[w for w, _ in WORKLOADS])
@pytest.mark.parametrize("mode", MODES)
def test_check_agrees_with_the_stat_oracle(mode, workload, pages):
    _check_against_the_oracle(mode, workload, pages, "auto")


@pytest.mark.parametrize("mode", MODES)
def test_check_agrees_with_the_stat_oracle_on_kprobes(mode):
    """The full kprobe plan (--attach kprobe), what kernels without BPF
    trampolines get, on one workload: the same verdicts, exactly."""
    if auto_is_the_kprobe_plan():
        pytest.skip(SAME_PLAN)
    _check_against_the_oracle(mode, "read-then-write", 23, "kprobe")


# --- one `check` over a group of cases ----------------------------------------
# A check costs a bcc compile (~30 s of a guest under TCG); its workloads a
# second.  So the cases above are judged a group per check, each case on a
# file of its own, and every assertion still speaks of one case.  A group
# holds cases of one expectation only, so the check's exit code still
# speaks of each: the healthy ones (exit 0) apart from the bugs (exit 1).
# A case whose ->pfn_mkwrite is module code (noop_pfn_mkwrite,
# stale_pfn_mkwrite) runs under a copy of pftbug of its own, loaded until
# the check is done: the recorder names a handler from the symbol table
# when it drains the fault, and a module unloaded by then names nothing
# (tests/lab/bugbatch.py).

# A no-pfn_mkwrite write whose file a test harness deletes right after.
DELETED = ("no_pfn_mkwrite", "generic-080", 1)


def _group_of(attach, mode, workload, removed=False):
    """(attach, group name, [(mode, workload, pages, removed)...]) holding
    this case.  removed: the case whose file is deleted right after it
    (auto only: test_a_finding_names_a_file_deleted_right_after)."""
    cases = [(m, w, p, False) for w, p in WORKLOADS for m in MODES
             if attach == "auto" or w == "read-then-write"]
    if attach == "auto":
        cases.insert(0, DELETED + (True,))
    groups = [("healthy", [c for c in cases if c[0] == "control"]),
              ("bugs", [c for c in cases if c[0] != "control"])]
    for name, members in groups:
        if any((c[0], c[1], c[3]) == (mode, workload, removed) for c in members):
            return attach, name, members
    raise AssertionError((attach, mode, workload, removed))


_GROUPS = {}


def _checked(attach, mode, workload, removed=False):
    """The group's run, once per guest: the check's CompletedProcess, the
    kernel's fs_dax counts, the analysis, the recording's path and the
    batch's results by (mode, workload, removed)."""
    from pfntrace.correlate import analyse
    from pfntrace.recording import Recording

    attach, name, members = _group_of(attach, mode, workload, removed)
    if (attach, name) not in _GROUPS:
        where = os.path.join(MOUNT, "catch", "%s-%s" % (attach, name))
        run(["rm", "-rf", where])
        os.makedirs(where)
        cases = [[m, w, os.path.join(where, "%s-%s%s" % (m, w, "-deleted" if r else "")), p, r]
                 for m, w, p, r in members]
        with open(os.path.join(where, "cases.json"), "w") as f:
            json.dump(cases, f)
        # The results off the DAX mount: a file made there after the deleted
        # case's could take its inode (the lab saw it: results.json).
        rec = os.path.join(where, "check.pft")
        results = os.path.join(tempfile.mkdtemp(prefix="pft-catch-"), "results.json")
        trace = DaxTrace()
        with trace:
            p = run(PFNTRACE + ["check", "--attach", attach, "-o", rec, "--", sys.executable,
                                BATCH, os.path.join(where, "cases.json"), results])
        counts, _ = trace.counts()
        for module in bugs.loaded_modules():
            bugs.unload(module)   # the copies bugbatch.py left loaded
        try:
            with open(results) as f:
                by_case = {(c["mode"], c["workload"], c["removed"]): c for c in json.load(f)}
        except (OSError, ValueError):
            pytest.fail("the batch under check left no results (exit %d): %s"
                        % (p.returncode, p.stderr[-3000:]))
        with Recording.open(rec) as r:
            _GROUPS[(attach, name)] = (p, counts, analyse(r), r.header, rec, by_case)
    return _GROUPS[(attach, name)]


def _check_against_the_oracle(mode, workload, pages, attach):
    p, counts, an, header, _, by_case = _checked(attach, mode, workload)
    got = by_case[(mode, workload, False)]
    path, ino = got["path"], got["oracle"]["ino"]
    finding, fs_ran = EXPECT[mode]

    # The oracle: generic/080's stat logic, independent of pfntrace.
    assert got["oracle"]["verdict"] == (oracle.MOVED if finding is None else oracle.STALE), got
    # The module really took the path it claims.
    assert got["counters"]["swaps"] >= 1, got["counters"]
    if mode in ("noop_pfn_mkwrite", "stale_update"):
        assert got["counters"]["calls"] == pages, got["counters"]
    # The kernel's own account: did the filesystem's DAX fault path run?
    assert counts[(ino, "pte_mkwrite")] == (pages if fs_ran else 0), counts

    (f,) = [x for x in an.files if x.ino == ino]
    verdicts = f.verdict_counts()
    assert header["plan"]["attach"] == attach
    figures("check", mode=mode, workload=workload, attach=attach, exit=p.returncode,
            oracle=got["oracle"]["verdict"], verdicts=verdicts,
            fs_dax_mkwrite=counts[(ino, "pte_mkwrite")], module_calls=got["counters"].get("calls"))
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
        mine = [l for l in lines if (" %s page " % path) in l]
        assert len(mine) == pages, p.stdout
        # Every finding line names one of the group's files, none twice a page.
        assert len(lines) == sum(c["pages"] for c in by_case.values()
                                 if EXPECT[c["mode"]][0] == finding), p.stdout
        if mode == "noop_pfn_mkwrite":
            # Named from the vma's ->pfn_mkwrite slot: a handler pfntrace never probed.
            assert "(noop_pfn_mkwrite)" in mine[0], mine[0]
            assert "file_update_time not called" in mine[0], mine[0]
        if mode == "stale_update":
            assert "(stale_pfn_mkwrite)" in mine[0], mine[0]
            assert "file_update_time called" in mine[0], mine[0]
    assert an.lost_total == 0 and "lost" not in p.stderr.split("pfntrace check:")[-1]


def test_a_finding_names_a_file_deleted_right_after():
    """A finding names its file as it was at the fault, even when a test
    harness deletes it before the recording ends: check's line, the report,
    its JSON and the timeline say `<mount>/<name> (deleted)`, never a bare
    dev:ino (the kernel had the name at the fault: pfntrace's names map)."""
    p, _, an, _, rec, by_case = _checked("auto", *DELETED[:2], removed=True)
    got = by_case[DELETED[:2] + (True,)]
    path, ino = got["path"], got["oracle"]["ino"]
    assert not os.path.exists(path)
    (f,) = [x for x in an.files if x.ino == ino]
    assert (f.path, f.deleted) == (path, True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("NO_NOTIFIER %s (deleted) page "
                                                               % path)]
    assert len(lines) == DELETED[2], p.stdout
    j = run(PFNTRACE + ["report", "--json", rec])
    (entry,) = [x for x in json.loads(j.stdout)["files"] if x["ino"] == ino]
    assert (entry["path"], entry["deleted"]) == (path, True), entry
    text = run(PFNTRACE + ["report", rec], env=dict(os.environ, COLUMNS="300")).stdout
    assert "%s (deleted)" % path in text, text
    timeline = os.path.join(os.path.dirname(rec), "timeline.json")
    t = run(PFNTRACE + ["report", "--perfetto", timeline, rec])
    assert t.returncode == 0, t.stderr
    with open(timeline) as fh:
        slices = [e for e in json.load(fh)["traceEvents"] if e.get("ph") == "X"
                  and e["args"].get("dev_ino", "").endswith(":%d" % ino)]
    assert slices and {e["args"]["file"] for e in slices} == {path + " (deleted)"}, slices


@pytest.mark.lab_on("6.1/xfs")
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

@pytest.mark.lab_one_fs(other=True)
@pytest.mark.parametrize("attach", ATTACH_MODES)
def test_top_and_report_count_the_same(attach):
    # One top beside one record over every kind and every verdict but
    # UNDECIDED (tests/lab/topvsrecord.py, shared with test_invisible).
    if attach == "kprobe" and auto_is_the_kprobe_plan():
        pytest.skip(SAME_PLAN)
    got = topvsrecord.session(attach)
    an, snap = got.analysis, got.snap
    kernel = {k: (list(c.kinds), list(c.verdicts)) for k, c in snap.files.items()}
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
