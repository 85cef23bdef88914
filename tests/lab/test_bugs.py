"""The bug pfntrace exists for, made real: pftbug on a real DAX fault path.

For each mode of the pftbug module (pfntrace/lab/bugs.py) and each stat
oracle workload (pfntrace/lab/oracle.py), on a fresh file: load the module
targeting that file, run the workload in a child process (its mapping is
gone before rmmod), unload, and check three independent witnesses:

- the stat oracle (generic/080's question): control moves mtime and ctime,
  every bug mode leaves them stale;
- the module's own counters: the file's one vma got the copy of vm_ops, and
  the replacement ->pfn_mkwrite ran exactly once per page written;
- the kernel's fs_dax tracepoints: one WRITE|MKWRITE PTE fault per page when
  the filesystem's own handler ran (control, stale_update), none when it
  did not (no_pfn_mkwrite, noop_pfn_mkwrite).

`bugs.run_under(mode, workload, path, wrap=[...])` is the hook for
pfntrace's own verdicts: with wrap=PFNTRACE + ["check", "--"] it runs the
same workload under `pfntrace check` and returns its CompletedProcess next
to the oracle's result.
"""

import os

import pytest

from daxtrace import DaxTrace
from guest import FS, IN_GUEST, PFN_MKWRITE_HANDLER, guest_fixture
from pfntrace.lab import bugs, oracle
from pfntrace.lab.kernels import LabError

if not IN_GUEST:
    # On the host, at collection: build the module for the installed lab
    # kernels now, so the guests (which see this cache read-only) load it
    # instead of compiling it under TCG.  Failures show up in the guest.
    bugs.prebuild()

# workload -> pages written (kept small: ext4 maps 2 MiB with a PMD when it can)
WORKLOADS = {"generic-080": 1, "read-then-write": oracle.READ_THEN_WRITE_PAGES}
# Modes in which the filesystem's own ->pfn_mkwrite runs (and with it
# dax_iomap_fault and its dax_pte_fault tracepoint).
FS_HANDLER_RUNS = ("control", "stale_update")


@guest_fixture(scope="module")
def bug_ko():
    """The module for the running kernel: the host's prebuilt .ko, or one
    built here."""
    try:
        return bugs.module_for()
    except LabError as e:
        pytest.fail(str(e), pytrace=False)


def run_bug(mode, workload, path, ko, wrap=None):
    """One workload under one mode, with the kernel's fs_dax counts taken
    around the workload: (BugRun, Counter keyed by (ino, kind))."""
    trace = DaxTrace("pftbug")
    run = bugs.run_under(mode, workload, path, WORKLOADS[workload], wrap=wrap, ko=ko,
                         around=trace)
    counts, _ = trace.counts()
    return run, counts


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("mode", bugs.BUG_MODES)
def test_bug_mode(mode, workload, dax_dir, bug_ko):
    pages = WORKLOADS[workload]
    run, kernel = run_bug(mode, workload, os.path.join(dax_dir, "f"), bug_ko)
    r, c = run.oracle, run.counters
    ino = r["ino"]
    seen = "oracle %s; module %s; fs_dax %s" % (
        r, c, {k[1]: v for k, v in kernel.items() if k[0] == ino})
    print("\npftbug %s %s: %s mtime %+d ns ctime %+d ns | swaps %d faults %d write_faults %d "
          "calls %d stamped %d | fs_dax pte_read %d pte_mkwrite %d"
          % (mode, workload, r["verdict"], r["after"]["mtime_ns"] - r["before"]["mtime_ns"],
             r["after"]["ctime_ns"] - r["before"]["ctime_ns"], c["swaps"], c["faults"],
             c["write_faults"], c["calls"], c["stamped"], kernel[(ino, "pte_read")],
             kernel[(ino, "pte_mkwrite")]))

    # The stat oracle.
    assert r["data_ok"], seen
    assert r["verdict"] == bugs.EXPECTED_VERDICT[mode], seen
    assert r["ctime_moved"] == (mode == "control"), seen

    # The module: the one vma swapped, the bug path taken once per page.
    assert c["mode"] == mode and c["path"] == run.path, seen
    assert c["swaps"] == 1, seen
    assert (c["foreign"], c["mapped"], c["missed"]) == (0, 0, 0), seen
    assert c["orig_pfn_mkwrite"].split()[0] == PFN_MKWRITE_HANDLER[FS], seen
    assert c["write_faults"] >= pages, seen
    assert c["calls"] == (pages if mode in bugs.COUNTED_MODES else 0), seen
    assert c["stamped"] == (pages if mode == "stale_update" else 0), seen

    # The kernel's own count: PTE faults only, the filesystem's handler
    # reached exactly when the mode lets it run.
    assert kernel[(ino, "pte_read")] == pages, seen
    assert kernel[(ino, "pte_mkwrite")] == (pages if mode in FS_HANDLER_RUNS else 0), seen
    assert kernel[(ino, "pte_write")] == 0, seen
    assert kernel[(ino, "pmd_write")] + kernel[(ino, "pmd_read")] == 0, seen


def test_refuses_missing_file(dax_dir, bug_ko):
    path = os.path.join(dax_dir, "absent")
    with pytest.raises(LabError) as e:
        bugs.load(path, "control", bug_ko)
    assert "cannot resolve" in str(e.value) and path in str(e.value)
    assert not bugs.is_loaded()


def test_refuses_non_dax_file(bug_ko):
    path = "/run/pftbug-not-dax"
    open(path, "wb").close()
    with pytest.raises(LabError) as e:
        bugs.load(path, "control", bug_ko)
    assert "not a regular file on a DAX mount" in str(e.value)
    assert not bugs.is_loaded()


def test_unmapped_before_unload_is_checked(dax_dir, bug_ko):
    """A mapping left at unload gets its vm_ops back, and unload says so."""
    import mmap

    path = os.path.join(dax_dir, "f")
    oracle.fill(path, 1)
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, oracle.PAGE, mmap.MAP_SHARED)
    try:
        bugs.load(path, "no_pfn_mkwrite", bug_ko)
        m[0]  # the read fault swaps the vma's vm_ops
        assert bugs.counters()["mapped"] == 1
        with pytest.raises(LabError, match="still mapped"):
            bugs.unload()
        assert not bugs.is_loaded()
        m[0] = 1  # the original vm_ops again: a normal write fault
    finally:
        m.close()
        os.close(fd)


def test_wrap_hook_runs_the_workload_as_a_command(dax_dir, bug_ko):
    """The hook for pfntrace's own checks: the same workload as a command
    line under a wrapper (plain `env` here; PFNTRACE + ["check", "--"] for
    pfntrace), its verdict still from the stat oracle."""
    run, kernel = run_bug("no_pfn_mkwrite", "generic-080", os.path.join(dax_dir, "f"), bug_ko,
                          wrap=["env"])
    assert run.wrapped.returncode == 0, run.wrapped.stderr
    assert run.oracle["verdict"] == "stale", run.oracle
    assert run.counters["swaps"] == 1 and run.counters["write_faults"] >= 1, run.counters
    assert kernel[(run.oracle["ino"], "pte_mkwrite")] == 0
