"""Several pftbug cases in one process, for one `pfntrace check` to watch.

    python tests/lab/bugbatch.py CASES.json RESULTS.json

CASES is a list of [mode, workload, path, pages, remove]; each runs as
pfntrace.lab.bugs.run_under() runs it (fill the file, load pftbug on it,
the stat oracle's workload in a child, unload), one after another, except
that a case whose ->pfn_mkwrite is module code (bugs.COUNTED_MODES) gets a
copy of pftbug of its own (pftbug_1, ...) that stays loaded: the caller
unloads them once the recorder is done, for the recorder names a handler by
the kernel's symbol table when it drains the fault, and a module gone by
then is not in it.  remove: the file is deleted right after its case (a
test harness's scratch file).  RESULTS gets, per case, its oracle result and
the module's counters (at unload, or once its workload is done for a copy
left loaded).

Why: a `pfntrace check` costs a bcc compile, about 30 s of a lab guest under
TCG, and the workloads it judges take a second; one check over a group of
cases keeps every per-case assertion at a fraction of the compiles.
"""

import json
import os
import sys


def main(cases_path, results_path):
    from pfntrace.lab import bugs

    with open(cases_path) as f:
        cases = json.load(f)
    # Every file made first: an inode freed by a removed case and taken by
    # a later one would make two files one to the recording.
    for _, _, path, pages, _ in cases:
        bugs.oracle.fill(path, pages)
    copies = list(bugs.COPIES)
    if sum(mode in bugs.COUNTED_MODES for mode, *_ in cases) > len(copies):
        raise SystemExit("bugbatch: more cases with a handler of their own than the %d "
                         "copies of pftbug" % len(copies))
    results = []
    for mode, workload, path, pages, remove in cases:
        if mode in bugs.COUNTED_MODES:
            module = copies.pop(0)
            bugs.load(path, mode, module=module)
            oracle = bugs.oracle.run_in_child(workload, path, pages)
            counters = bugs.counters(module)
        else:
            got = bugs.run_under(mode, workload, path, pages)
            oracle, counters = got.oracle, got.counters
        if remove:
            os.unlink(path)
        results.append({"mode": mode, "workload": workload, "path": path, "pages": pages,
                        "removed": bool(remove), "oracle": oracle, "counters": counters})
    with open(results_path, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
