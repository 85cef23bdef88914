"""Invisible writes on real kernels: a write fault after which mtime and ctime
still equal what the last stat before it showed.

The workloads are their own oracle: the stat-write loop stats the file
before and after each write and prints, per round, whether the two stats
showed the same mtime.  pfntrace must flag exactly those rounds, in order
(record/check: verdict.invisible on the event stream) and count exactly as
many in the kernel (top: verdict.h's pft_invisible on its map of last
getattrs).  On 6.1 and 6.12 most rounds land in one coarse clock tick; on a
6.13+ multigrain kernel none should.
"""

import json
import os
import shlex

import pytest

import topvsrecord
from guest import MOUNT, PFNTRACE, WORKLOAD, figures, run

ROUNDS = 300


def _oracle(stdout):
    (line,) = [l for l in stdout.splitlines() if l.startswith("{")]
    return json.loads(line)


def _analyse(rec):
    from pfntrace.correlate import analyse
    from pfntrace.recording import Recording

    with Recording.open(rec) as r:
        return analyse(r)


def _check(dax_dir, argv, name):
    """pfntrace check --invisible around argv; (process, analysis)."""
    rec = os.path.join(dax_dir, name + ".pft")
    p = run(PFNTRACE + ["check", "--invisible", "-o", rec, "--"] + argv)
    return p, _analyse(rec)


def test_stat_then_write_is_invisible_exactly_when_the_stats_agree(dax_dir):
    from pfntrace.correlate import K_PFN

    path = os.path.join(dax_dir, "f")
    p, an = _check(dax_dir, WORKLOAD + ["stat-write-loop", path, str(ROUNDS)], "loop")
    oracle = _oracle(p.stdout)
    same = oracle["same_mtime"]
    assert len(same) == ROUNDS
    # On these kernels mtime and ctime move together: the oracle's two
    # readings agree, and pfntrace compares both.
    assert oracle["same_mtime_and_ctime"] == same
    (f,) = [x for x in an.files if x.ino == oracle["ino"]]
    faults = [x for x in an.faults if x.file is f]
    figures("invisible_loop", rounds=ROUNDS, oracle_same=sum(same), pfntrace=f.invisible,
             multigrain=an.multigrain, verdicts=f.verdict_counts(), exit=p.returncode)
    assert f.write_faults == ROUNDS and f.kinds[K_PFN] == ROUNDS, (f.kind_counts(), p.stderr)
    assert an.lost_total == 0, p.stderr
    assert an.getattr_probed
    # Round by round, in order: the fault is invisible exactly when the
    # workload's own stats before and after it agree.
    assert [x.invisible for x in faults] == same
    assert f.invisible == sum(same) == len(an.invisible)
    # Who looked: the workload itself, a moment before its write.
    assert {x.observer[0] for x in an.invisible} <= {oracle["pid"]}
    assert all(0 <= x.observer[2] < 10**9 for x in an.invisible)
    procs = {q.pid: q.invisible for q in an.processes}
    assert procs.get(oracle["pid"], 0) == sum(same)
    lines = [l for l in p.stdout.splitlines() if l.startswith("INVISIBLE ")]
    assert len(lines) == sum(same)
    assert p.returncode == (1 if any(same) else 0), p.stdout[-2000:] + p.stderr
    assert "pfntrace check: %d invisible writes" % sum(same) in p.stderr
    if an.multigrain and any(same):
        assert "WARNING" in p.stderr and "multigrain" in p.stderr


# The workloads that must have no invisible write run under one `check`
# (a check costs a bcc compile, ~30 s of a guest under TCG), each on its own
# file with its own oracle line; each test below reads its own.
QUIET = (("quiet", WORKLOAD + ["sync-write-loop"], [str(ROUNDS)], ROUNDS),
         ("read-then-write", [PFNTRACE[0], "-m", "pfntrace.lab.oracle", "read-then-write"],
          ["23"], 23),
         ("generic-080", [PFNTRACE[0], "-m", "pfntrace.lab.oracle", "generic-080"], [], 1))
_quiet = {}


def _quiet_check():
    """(check's process, analysis, {name: oracle line}) of the QUIET run."""
    if not _quiet:
        where = os.path.join(MOUNT, "invisible-quiet")
        run(["rm", "-rf", where])
        os.makedirs(where)
        script = " && ".join(" ".join(shlex.quote(a) for a in argv + [os.path.join(where, name)]
                                      + args) for name, argv, args, _ in QUIET)
        p, an = _check(where, ["sh", "-c", script], "quiet")
        lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        assert len(lines) == len(QUIET), p.stdout[-2000:] + p.stderr[-2000:]
        _quiet.update(p=p, an=an, oracle={name: o for (name, *_), o in zip(QUIET, lines)})
    return _quiet["p"], _quiet["an"], _quiet["oracle"]


def test_nobody_stats_so_nothing_is_invisible():
    p, an, oracles = _quiet_check()
    oracle = oracles["quiet"]
    (f,) = [x for x in an.files if x.ino == oracle["ino"]]
    figures("invisible_quiet", rounds=ROUNDS, pfntrace=f.invisible, getattrs=f.observations)
    assert f.write_faults == ROUNDS, p.stderr
    # mmap's own fstat, a clock tick before the first write, is the one look.
    assert f.observations >= 1
    assert f.invisible == 0
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr


def test_the_23_page_and_generic_080_workloads_have_no_invisible_write():
    p, an, oracles = _quiet_check()
    for name, _, _, pages in QUIET[1:]:
        oracle = oracles[name]
        (f,) = [x for x in an.files if x.ino == oracle["ino"]]
        figures("invisible_known", workload=name, pfntrace=f.invisible,
                getattrs=f.observations, oracle=oracle["verdict"])
        assert oracle["verdict"] == "moved", oracle
        assert f.write_faults == pages, p.stderr
        # The oracle stat'ed the file before its writes, a second before.
        assert f.observations >= 1
        assert f.invisible == 0, [x.invisible_detail for x in an.invisible][:3]
    # Nothing invisible in the whole run, so check passes.
    assert an.invisible == [] and p.returncode == 0, p.stdout[-2000:] + p.stderr


@pytest.mark.lab_one_fs(other=True)
def test_top_counts_in_the_kernel_what_record_counts():
    """verdict.h's pft_invisible on top's map of last getattrs, against
    verdict.invisible on the recorded stream, on the same faults: the
    stat-write loop under one top beside one record (tests/lab/topvsrecord.py,
    which test_catch's bugs share)."""
    got = topvsrecord.session("auto")
    snap, an = got.snap, got.analysis
    oracle = _oracle(got.loop_stdout)
    (f,) = [x for x in an.files if x.ino == oracle["ino"]]
    kernel = snap.files[(got.dev, oracle["ino"])]
    figures("invisible_top", oracle_same=sum(oracle["same_mtime"]), pfntrace=f.invisible,
             kernel=kernel.invisible)
    assert snap.lost == 0 and an.lost_total == 0
    assert kernel.total == f.write_faults == ROUNDS == topvsrecord.STAT_ROUNDS
    assert kernel.invisible == f.invisible == sum(oracle["same_mtime"])
    assert snap.procs[oracle["pid"]].invisible == kernel.invisible
    # The session's other files (test_catch's bugs) have invisible writes
    # of their own: the total is every file's, and record counts as many.
    assert snap.total.invisible == sum(c.invisible for c in snap.files.values()) \
        == len(an.invisible)
