"""report --perfetto on real recordings: the 23-page read-then-write
workload, healthy and with an injected ->pfn_mkwrite that does nothing
(pfntrace/lab/bugmod), recorded on the DAX mount and exported as a Chrome
trace-event timeline.

The timeline must have exactly one write-fault slice per page written, on
the pages the workload wrote, with the verdicts report gives; the count and
the pages are checked against the kernel's own fs_dax tracepoints where the
filesystem's fault path ran (and against the module's own count where the
injected handler replaced it), and the document against the trace-event
format (tests/unit/trace_event_spec.py).
"""

import json
import os
import sys

import pytest

from daxtrace import DaxTrace
from guest import FS, IN_GUEST, MOUNT, PFN_MKWRITE_HANDLER, PFNTRACE, run

pytestmark = pytest.mark.lab_on("6.1/xfs")   # the command's surface (conftest.py)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "unit"))
import trace_event_spec  # noqa: E402

if IN_GUEST:
    from pfntrace.lab import bugs

PAGES = 23
# mode: (the verdicts every slice may have, the handler the vma names, whether
# the filesystem's DAX fault path, and so its fs_dax tracepoints, ran)
MODES = {
    "control": (("UPDATED", "CURRENT"), PFN_MKWRITE_HANDLER.get(FS), True),
    "noop_pfn_mkwrite": (("MISSED",), "noop_pfn_mkwrite", False),
}


BATCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bugbatch.py")
_run = {}


def _recorded():
    """Both modes under one `record` (a record costs a bcc compile, ~30 s of
    a guest under TCG): control first, noop_pfn_mkwrite last and loaded
    until the record ends (tests/lab/bugbatch.py says why).  Returns the
    timeline, the kernel's counts and pgoffs, the recording, and the
    batch's results by mode."""
    if not _run:
        where = os.path.join(MOUNT, "perfetto")
        run(["rm", "-rf", where])
        os.makedirs(where)
        cases = [[mode, "read-then-write", os.path.join(where, mode), PAGES, False]
                 for mode in ("control", "noop_pfn_mkwrite")]
        with open(os.path.join(where, "cases.json"), "w") as f:
            json.dump(cases, f)
        rec, out = os.path.join(where, "run.pft"), os.path.join(where, "run.json")
        results = os.path.join(where, "results.json")
        trace = DaxTrace()
        with trace:
            p = run(PFNTRACE + ["record", "-o", rec, "--", sys.executable, BATCH,
                                os.path.join(where, "cases.json"), results])
        for module in bugs.loaded_modules():
            bugs.unload(module)   # the copies bugbatch.py left loaded
        assert p.returncode == 0, p.stderr
        kernel, kernel_pgoffs = trace.counts()
        t = run(PFNTRACE + ["report", "--perfetto", out, rec])
        assert t.returncode == 0 and t.stdout == "", t.stderr
        assert t.stderr.startswith("%s: %d write faults" % (out, PAGES * len(cases))), t.stderr
        with open(out) as f:
            doc = json.load(f)
        with open(results) as f:
            by_mode = {c["mode"]: c for c in json.load(f)}
        _run.update(doc=doc, kernel=(kernel, kernel_pgoffs), rec=rec, by_mode=by_mode)
    return _run["doc"], _run["kernel"], _run["rec"], _run["by_mode"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_timeline_has_one_slice_per_page_written(mode):
    doc, (kernel, kernel_pgoffs), rec, by_mode = _recorded()
    got = by_mode[mode]
    path, ino = got["path"], got["oracle"]["ino"]
    verdicts, handler, fs_ran = MODES[mode]

    phases = trace_event_spec.check(doc)

    mine = [e for e in phases["X"] if e["cat"] == "write_fault"
            and e["args"]["dev_ino"].endswith(":%d" % ino)]
    assert len(mine) == PAGES, [e["args"]["file"] for e in phases["X"]]
    # Every slice is one of the two files' (nothing else faulted on the mount).
    assert len(phases["X"]) == PAGES * len(by_mode), [e["args"]["file"] for e in phases["X"]]
    pages = sorted(e["args"]["page"] for e in mine)
    assert pages == list(range(PAGES))
    if fs_ran:
        # The kernel's own account of the ->pfn_mkwrite faults of this file.
        assert kernel[(ino, "pte_mkwrite")] == PAGES
        assert pages == kernel_pgoffs[ino]
    else:
        assert kernel[(ino, "pte_mkwrite")] == 0
        assert got["counters"]["calls"] == PAGES, got["counters"]
    assert {e["args"]["file"] for e in mine} == {path}
    assert {e["args"]["kind"] for e in mine} == {"pfn_mkwrite"}
    assert {e["args"]["handler"] for e in mine} == {handler}
    assert {e["args"]["verdict"] for e in mine} <= set(verdicts), [
        e["args"]["verdict"] for e in mine]
    # The oracle writes from one thread: one track, named.
    assert len({(e["pid"], e["tid"]) for e in mine}) == 1

    # The same verdicts as report's, fault for fault.
    j = run(PFNTRACE + ["report", "--json", "--events", "--file", path, rec])
    assert j.returncode == 0, j.stderr
    report = json.loads(j.stdout)
    assert sorted((e["pgoff"], e["verdict"], e["ts_ns"]) for e in report["events"]) == sorted(
        (e["args"]["page"], e["args"]["verdict"], round(e["ts"] * 1000)) for e in mine)
    by_verdict = {v: sum(1 for e in mine if e["args"]["verdict"] == v) for v in verdicts}
    if mode == "control":
        assert by_verdict["UPDATED"] >= 1, by_verdict   # the first write after a >1 s sleep
    # Instants exactly where the timestamps moved; counters add up per file.
    moved = [e for e in phases.get("i", ()) if e["cat"] == "timestamps"
             and e["args"]["dev_ino"].endswith(":%d" % ino)]
    assert len(moved) == sum(1 for e in mine if e["args"]["mtime_after_ns"]
                             != e["args"]["mtime_before_ns"]
                             or e["args"]["ctime_after_ns"] != e["args"]["ctime_before_ns"])
    if mode != "control":
        assert moved == []
    per_second = [e["args"]["write faults/s"] for e in phases["C"] if e["name"] == path]
    assert sum(per_second) == PAGES
