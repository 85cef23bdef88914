"""Machine-readable views of an Analysis: JSON and CSV.

The JSON document is a contract (schema_version 1); keys are only ever added:

    {"schema_version": 1,
     "summary": {"write_faults": n, "pfn_mkwrite": n, "page_mkwrite": n,
                 "pmd": n, "first_touch": n, "no_notifier": n, "lost": n,
                 "verdicts": {"UPDATED": n, "CURRENT": n, "MISSED": n,
                              "NO_NOTIFIER": n, "UNDECIDED": n},
                 "invisible_writes": n, "getattr_probed": bool,
                 "multigrain": bool, "kernel": str, "truncated": bool, ...},
     "files": [{"path": str, "dev": "maj:min", "ino": n, "key": "maj:min:ino",
                "write_faults": n, "pfn_mkwrite": n, ..., "verdicts": {...},
                "final_mtime_ns": n|null, "final_vs_last_fault": str|null,
                "deleted": bool, "unmounted": bool, "timestamps_set_externally": n,
                "invisible_writes": n, "getattrs": n}],
     "processes": [{"pid": n, "comm": str, "write_faults": n,
                    "verdicts": {...}, "invisible_writes": n, ...}],
     "invisible_writes": [{"ts_ns": n, "file": str, "path": str, "pgoff": n,
                           "pid": n, "comm": str, "verdict": str,
                           "observer_pid": n, "observer_comm": str,
                           "observed_ns_before": n, "mtime_ns": n,
                           "ctime_ns": n}],
     "exposure": null | {"windows": n, "closed": {"writeback": n, "unmap": n,
                                                  "open": n},
                         "exposed_observations": n, "unexposed_observations": n,
                         "window_ns": [{"low": n, "high": n, "count": n}],
                         "open_after_observation_ns": [{"low": ..., "count": n}]},
     "exposed_observations": [{"ts_ns": n, "file": str, "path": str, "pid": n,
                               "comm": str, "mtime_ns": n|null,
                               "open_after_ns": n,
                               "pages": [{"pgoff": n, "npages": n,
                                          "opened_ns": n, "opened_by_pid": n,
                                          "open_after_ns": n,
                                          "ended_by": str,
                                          "closed_by_pid": n|null}]}],
     "latency": {"unit": "ns", "buckets": [{"low": n, "high": n, "count": n}]},
     "findings": [str, ...],
     "events": [...]            # only with --events
    }

CSV: one table at a time (summary|files|processes|events|latency), header
row first; nested dicts are flattened (verdicts -> UPDATED, CURRENT, ...).
"""

import csv
import json

from pfntrace import correlate
from pfntrace.exposure import OPEN, UNMAP, WRITEBACK
from pfntrace.findings import findings

SCHEMA_VERSION = 1
TABLES = ("summary", "files", "processes", "events", "latency")
EXPOSURE_CAUSES = (WRITEBACK, UNMAP, OPEN)


def file_rows(an):
    out = []
    for f in an.files:
        notes = []
        if f.deleted:
            notes.append("deleted")
        if f.unmounted:
            notes.append("unmounted")
        if f.external:
            notes.append("timestamps set externally")
        out.append({
            "path": f.path,
            "key": f.key,
            "dev": f.devstr,
            "ino": f.ino,
            "write_faults": f.write_faults,
            **_kinds(f.kinds),
            "map_sync": f.map_sync,
            "reprotects": f.reprotects,
            "reprotect_pages": f.reprotect_pages,
            "reads": f.reads,
            "retries": f.retries,
            "huge_fault_fallbacks": f.fallbacks,
            "wp_entries": f.wp_entries,
            "dax_pte_faults": f.dax_pte_faults,
            "dax_pmd_faults": f.dax_pmd_faults,
            "dax_write_faults": f.dax_write_faults,
            "verdicts": f.verdict_counts(),
            "first_fault_ns": f.first_ts,
            "last_fault_ns": f.last_fault_ts,
            "last_fault_mtime_ns": f.last_mtime,
            "final_mtime_ns": f.final_mtime,
            "final_vs_last_fault": f.final_cmp,
            "deleted": f.deleted,
            "unmounted": f.unmounted,
            "timestamps_set_externally": f.external,
            "invisible_writes": f.invisible,
            "getattrs": f.observations,
            "notes": notes,
        })
    return out


def _kinds(kinds):
    """Write faults by kind, under the contract's key names."""
    return {
        "pfn_mkwrite": kinds[correlate.K_PFN],
        "page_mkwrite": kinds[correlate.K_PAGE],
        "pmd": kinds[correlate.K_PMD],
        "first_touch": kinds[correlate.K_FAULT],
        "no_notifier": kinds[correlate.K_NONOTIFY],
    }


def process_rows(an):
    out = []
    for p in an.processes:
        out.append({
            "pid": p.pid,
            "comm": p.comm,
            "cmdline": p.cmdline,
            "write_faults": p.write_faults,
            **_kinds(p.kinds),
            "reads": p.reads,
            "files": len(p.files),
            "verdicts": p.verdict_counts(),
            "invisible_writes": p.invisible,
        })
    return out


def _buckets(hist):
    used = [i for i, n in enumerate(hist) if n]
    return [{"low": (1 << i) >> 1, "high": (1 << i) - 1, "count": hist[i]}
            for i in range(used[0], used[-1] + 1)] if used else []


def latency_rows(an):
    """[{"low", "high", "count"}] from the first to the last non-empty bucket."""
    return _buckets(an.latency)


def invisible_rows(an):
    """Every invisible write: the fault, and who looked how long before."""
    out = []
    for f in an.invisible:
        out.append(dict({"ts_ns": f.ts, "file": f.key, "path": f.path, "pgoff": f.pgoff,
                         "pid": f.pid, "comm": f.comm, "verdict": f.verdict},
                        **f.invisible_dict()))
    return out


def exposure_dict(an):
    """The write-exposure windows' counts and histograms, or None when the
    recording carries no closes (made before pfntrace followed them)."""
    e = an.exposure
    if e is None:
        return None
    return {"windows": e.opened,
            "closed": {cause: e.closed.get(cause, 0) for cause in EXPOSURE_CAUSES},
            "exposed_observations": e.exposed,
            "unexposed_observations": e.unexposed,
            "window_ns": _buckets(e.window_ns),
            "open_after_observation_ns": _buckets(e.after_ns)}


def exposed_rows(an):
    """Every exposed observation: who stat'ed which file when, and the pages
    then in a window, how long each stayed exposed after it, what ended it."""
    e = an.exposure
    if e is None:
        return []
    names = {f.key: f.shown_path for f in an.files}
    out = []
    for ob in e.observations:
        key = correlate.file_key(ob.dev, ob.ino)
        out.append({
            "ts_ns": ob.ts_ns, "file": key, "path": names.get(key, key), "pid": ob.pid,
            "comm": ob.comm, "mtime_ns": ob.mtime_ns,
            "open_after_ns": ob.open_after_ns(e.end_ns),
            "pages": [{"pgoff": p.window.pgoff, "npages": p.window.npages,
                       "opened_ns": p.window.opened_ns,
                       "opened_by_pid": p.window.opened_by[0],
                       "open_after_ns": (p.until_ns if p.until_ns is not None
                                         else e.end_ns) - ob.ts_ns,
                       "ended_by": p.ended_by,
                       "closed_by_pid": p.window.closed_by} for p in ob.pages]})
    return out


def event_rows(an):
    return [f.as_dict() for f in an.faults]


def summary_dict(an):
    return an.summary()


def to_json_dict(an, events=False):
    doc = {
        "schema_version": SCHEMA_VERSION,
        "summary": summary_dict(an),
        "files": file_rows(an),
        "processes": process_rows(an),
        "latency": {"unit": "ns", "buckets": latency_rows(an)},
        "findings": findings(an),
        "invisible_writes": invisible_rows(an),
        "exposure": exposure_dict(an),
        "exposed_observations": exposed_rows(an),
        # What is wrong with the recording itself (truncated, blocks repeated
        # or missing, data after the trailer): the counts above may be off.
        "warnings": an.warning_lines(),
    }
    loud = an.multigrain_warning()
    if loud:
        doc["warnings"].append(loud)
    if events:
        doc["events"] = event_rows(an)
    return doc


def to_json(an, events=False, indent=2):
    return json.dumps(to_json_dict(an, events=events), indent=indent,
                      sort_keys=False, default=str)


def _flatten(row):
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[k2 if k == "verdicts" else "%s.%s" % (k, k2)] = v2
        elif isinstance(v, (list, tuple)):
            out[k] = ";".join(str(x) for x in v)
        else:
            out[k] = "" if v is None else v
    return out


def table_rows(an, table):
    if table == "summary":
        s = summary_dict(an)
        rows = []
        for k, v in _flatten({k: v for k, v in s.items() if k != "plan"}).items():
            rows.append({"key": k, "value": v})
        return rows
    if table == "files":
        return [_flatten(r) for r in file_rows(an)]
    if table == "processes":
        return [_flatten(r) for r in process_rows(an)]
    if table == "events":
        return [_flatten(r) for r in event_rows(an)]
    if table == "latency":
        return latency_rows(an)
    raise ValueError("unknown table %r (one of %s)" % (table, ", ".join(TABLES)))


_EMPTY_COLUMNS = {
    "summary": ["key", "value"],
    "latency": ["low", "high", "count"],
}


def write_csv(an, table, out):
    rows = table_rows(an, table)
    if rows:
        columns = list(rows[0])
    elif table in _EMPTY_COLUMNS:
        columns = _EMPTY_COLUMNS[table]
    else:
        # Header only, from an empty row set: derive from the row builders.
        columns = {
            "files": ["path", "key", "dev", "ino", "write_faults"],
            "processes": ["pid", "comm", "write_faults"],
            "events": ["ts_ns", "kind", "verdict", "file", "path", "pgoff",
                       "pid", "tid", "comm"],
        }[table]
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
