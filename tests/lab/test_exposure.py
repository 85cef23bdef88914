"""Write-exposure windows on real kernels: a stat made while a page of the
file is still writable after its stamping fault, so that later stores change
the data under the mtime the stat showed (issue 30).

The workloads are their own oracle (pfntrace.lab.workloads.exposure_loop):
per round msync; a store (a write fault, which stamps mtime); [msync |
munmap]; stat; [a second store into the same page: no fault, no stamp];
msync; stat, and they print per round whether the data changed after the
observer's stat while the next stat still shows the mtime it saw;
exposure-background leaves the writeback to the kernel (no msync), and
exposure-map-sync is a persistent-memory program's version (MAP_SYNC, no
msync): on DAX the kernel's background writeback never comes, and the page
stays writable until the munmap.  All
variants run under one `check --exposed` (a check costs a bcc compile), each
on its own file; the kernel's fs_dax tracepoints count the write faults and
writebacks of each file, independently of pfntrace.
"""

import json
import os
import shlex
import sys

import pytest

from daxtrace import DaxTrace
from guest import MOUNT, PFNTRACE, WORKLOAD, figures, run

ROUNDS = 20
VARIANTS = ("exposure-loop", "exposure-no-store", "exposure-msync-first",
            "exposure-munmap-first", "exposure-unobserved", "exposure-background",
            "exposure-map-sync")
# Without msync: each round waits 2 s for the kernel's background writeback.
NO_MSYNC = ("exposure-background", "exposure-map-sync")
ROUNDS_OF = dict(dict.fromkeys(VARIANTS, ROUNDS), **dict.fromkeys(NO_MSYNC, 5))
_run = {}


def _checked():
    """check --exposed over every variant: (process, analysis, kernel
    counts, {variant: oracle line})."""
    if not _run:
        from pfntrace.correlate import analyse
        from pfntrace.recording import Recording

        where = os.path.join(MOUNT, "exposure")
        run(["rm", "-rf", where])
        os.makedirs(where)
        script = " && ".join(" ".join(shlex.quote(a) for a in WORKLOAD + [
            v, os.path.join(where, v), str(ROUNDS_OF[v])]) for v in VARIANTS)
        rec = os.path.join(where, "check.pft")
        with DaxTrace() as trace:
            p = run(PFNTRACE + ["check", "--exposed", "-o", rec, "--", "sh", "-c", script])
        kernel, _ = trace.counts()
        lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        assert len(lines) == len(VARIANTS), p.stdout[-2000:] + p.stderr[-2000:]
        with Recording.open(rec) as r:
            an = analyse(r)
        _run.update(p=p, an=an, kernel=kernel, rec=rec,
                    oracle={v: line for v, line in zip(VARIANTS, lines)})
    return _run["p"], _run["an"], _run["kernel"], _run["oracle"]


def _of(an, ino):
    e = an.exposure
    (f,) = [f for f in an.files if f.ino == ino]
    windows = [w for w in e.windows if w.ino == ino]
    exposed = [ob for ob in e.observations if ob.ino == ino]
    return f, windows, exposed


def _second_stores_invisible(an, f):
    """Per round, whether its second store's fault was an invisible write
    (two faults a round: the first store's, the second's)."""
    faults = [x for x in an.faults if x.file is f]
    assert len(faults) == 2 * ROUNDS, len(faults)
    return [x.invisible for x in faults[1::2]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_exposed_stats_equal_the_workloads_own_count(variant):
    p, an, kernel, oracles = _checked()
    oracle = oracles[variant]
    ino = oracle["ino"]
    f, windows, exposed = _of(an, ino)
    hidden = sum(oracle["hidden"])
    causes = {c: sum(w.cause == c for w in windows) for c in ("writeback", "unmap", "open")}
    figures("exposure", variant=variant, rounds=ROUNDS_OF[variant], oracle_hidden=hidden,
            exposed=len(exposed), windows=len(windows), closed=causes,
            invisible=f.invisible,
            open_after_ms=[round(ob.open_after_ns(an.exposure.end_ns) / 1e6, 3)
                           for ob in exposed][:5])
    assert an.lost_total == 0, p.stderr
    # Every write fault opened a window, and the kernel's own account of
    # the file agrees: its write faults, and its writebacks closed windows.
    assert len(windows) == f.write_faults == \
        kernel[(ino, "pte_mkwrite")] + kernel[(ino, "pte_write")], (f.kind_counts(), kernel)
    assert causes["writeback"] <= kernel[(ino, "reprotect_pages")]
    assert causes["open"] == 0       # each round ends with an msync (or the munmap)
    if variant == "exposure-loop":
        # The acceptance: pfntrace's exposed stats equal the rounds
        # in which the data changed after the stat under an unchanged mtime.
        assert len(exposed) == hidden == ROUNDS, oracle
        assert causes == {"writeback": ROUNDS, "unmap": 0, "open": 0}
        assert kernel[(ino, "reprotect_pages")] == ROUNDS
    elif variant == "exposure-no-store":
        # Nothing stored after the stat, still exposed: pfntrace cannot see
        # stores, it reports the window, open until the msync.
        assert hidden == 0 and len(exposed) == ROUNDS
    elif variant == "exposure-msync-first":
        # The stat came after the msync closed the window: not exposed.  The
        # second store faults again; in the same clock tick it leaves mtime
        # as the stat saw it: an invisible write, the clock's matter.
        assert exposed == [] and causes["writeback"] == 2 * ROUNDS
        assert _second_stores_invisible(an, f) == oracle["hidden"]
    elif variant == "exposure-munmap-first":
        # Unmapped before the stat: the window closed with the mapping.
        assert exposed == [] and causes["unmap"] == ROUNDS
        assert _second_stores_invisible(an, f) == oracle["hidden"]
    elif variant == "exposure-unobserved":     # nobody looked
        assert exposed == [] and len(windows) == ROUNDS
    else:
        _check_no_msync(variant, oracle, windows, exposed, kernel[(ino, "reprotect_pages")])
        return
    for ob in exposed:
        # The workload's own stat, of its only page, and the msync ended it.
        assert ob.pid == oracle["pid"] and [pe.window.pgoff for pe in ob.pages] == [0]
        assert ob.pages[0].ended_by == "writeback", ob.pages
        assert 0 < ob.open_after_ns(an.exposure.end_ns) < 10**9


def _check_no_msync(variant, oracle, windows, exposed, kernel_reprotects):
    """The variants that never msync: the data changed under the mtime the
    stat saw in every round (the second store never faults: the page is
    still writable), and pfntrace's exposed stats are never fewer; what
    pfntrace saw written back is what the kernel's fs_dax count says."""
    rounds = ROUNDS_OF[variant]
    background = [w for w in windows if w.cause == "writeback"]
    unmapped = [w for w in windows if w.cause == "unmap"]
    figures("exposure_no_msync", variant=variant, rounds=rounds,
            hidden=sum(oracle["hidden"]), exposed=len(exposed), windows=len(windows),
            written_back=len(background), kernel_written_back=kernel_reprotects,
            closed_by=sorted({w.closed_by for w in windows}), workload_pid=oracle["pid"])
    assert oracle["hidden"] == [True] * rounds, oracle
    assert rounds <= len(exposed) <= 2 * rounds
    assert all(ob.pid == oracle["pid"] for ob in exposed)
    assert len(background) == kernel_reprotects
    assert all(w.closed_by != oracle["pid"] for w in background), background
    assert [w.closed_by for w in unmapped] in ([], [oracle["pid"]])    # its munmap
    # DAX writes a mapping's pages back only for fsync, msync and sync
    # (dax_writeback_mapping_range returns at once unless WB_SYNC_ALL), never
    # in the kernel's background writeback, even at dirty_expire 0.5 s: the
    # kernel's own count says 0.  So with or without MAP_SYNC the page stays
    # writable from the first store to the munmap: one window, and every
    # stat of every round inside it.
    assert kernel_reprotects == 0
    assert len(windows) == len(unmapped) == 1 and len(exposed) == 2 * rounds


def test_check_exposed_fails_and_names_each_exposed_stat():
    p, an, _, oracles = _checked()
    total = len(an.exposure.observations)
    no_msync = {oracles[v]["ino"] for v in NO_MSYNC}
    assert total == 2 * ROUNDS + sum(ob.ino in no_msync for ob in an.exposure.observations)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("EXPOSED ")]
    assert len(lines) == total
    loop = os.path.join(MOUNT, "exposure", "exposure-loop")
    mine = [l for l in lines if l.startswith("EXPOSED %s stat by pid %d " % (
        loop, oracles["exposure-loop"]["pid"]))]
    assert len(mine) == ROUNDS and "until written back" in mine[0], lines[:3]
    assert "pfntrace check: %d exposed stats" % total in p.stderr


def test_report_json_lists_the_exposed_stats():
    _, an, _, _ = _checked()
    doc = json.loads(run(PFNTRACE + ["report", "--json", _run["rec"]]).stdout)
    assert doc["summary"]["exposed_observations"] == len(an.exposure.observations)
    assert doc["exposure"]["windows"] == an.exposure.opened
    assert len(doc["exposed_observations"]) == len(an.exposure.observations)
    text = run(PFNTRACE + ["report", _run["rec"]],
               env=dict(os.environ, COLUMNS="200")).stdout
    assert "exposed stats" in text and "until written back" in text


def test_perfetto_has_a_slice_per_window_and_an_instant_per_exposed_stat():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "unit"))
    import trace_event_spec

    _, an, _, _ = _checked()
    out = os.path.join(os.path.dirname(_run["rec"]), "trace.json")
    p = run(PFNTRACE + ["report", "--perfetto", out, _run["rec"]])
    with open(out) as f:
        phases = trace_event_spec.check(json.load(f))
    e = an.exposure
    begun = [ev for ev in phases["b"] if ev["cat"] == "exposure"]
    stats = [ev for ev in phases.get("i", ()) if ev["cat"] == "exposure"]
    figures("exposure_perfetto", windows=len(begun), exposed=len(stats))
    assert len(begun) == e.opened == len(e.windows)
    assert {c: sum(ev["args"]["closed_by"] == c for ev in begun) for c in e.closed} == \
        dict(e.closed)
    assert sorted((ev["ts"], ev["args"]["observer_pid"]) for ev in stats) == sorted(
        (ob.ts_ns / 1000, ob.pid) for ob in e.observations)
    assert "%d write-exposure windows, %d exposed stats" % (e.opened, e.exposed) in p.stderr
