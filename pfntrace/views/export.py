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
from pfntrace.findings import findings

SCHEMA_VERSION = 1
TABLES = ("summary", "files", "processes", "events", "latency")


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


def latency_rows(an):
    """[{"low", "high", "count"}] from the first to the last non-empty bucket."""
    hist = an.latency
    used = [i for i, n in enumerate(hist) if n]
    if not used:
        return []
    out = []
    for i in range(used[0], used[-1] + 1):
        out.append({"low": (1 << i) >> 1, "high": (1 << i) - 1, "count": hist[i]})
    return out


def invisible_rows(an):
    """Every invisible write: the fault, and who looked how long before."""
    out = []
    for f in an.invisible:
        out.append(dict({"ts_ns": f.ts, "file": f.key, "path": f.path, "pgoff": f.pgoff,
                         "pid": f.pid, "comm": f.comm, "verdict": f.verdict},
                        **f.invisible_dict()))
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
