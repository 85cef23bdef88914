"""The Chrome trace-event format, checked structurally: what ui.perfetto.dev
and chrome://tracing need of a JSON trace ("Trace Event Format", the
document Perfetto's JSON importer follows).  Used by the unit tests and by
the lab test on real recordings (tests/lab/test_perfetto.py).

check(doc) raises AssertionError naming the first offending event, and
returns the events by phase.
"""

import numbers

PHASES = set("BEXiIC" "bne" "sft" "PONDM")
METADATA_NAMES = {"process_name", "process_labels", "process_sort_index", "thread_name",
                  "thread_sort_index"}
INSTANT_SCOPES = {"g", "p", "t"}


def _number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def check(doc):
    """Every event well formed per its phase; slices of one thread nested,
    never partly overlapping; every thread and process named.  Returns
    {phase: [events]}."""
    if isinstance(doc, dict):
        assert isinstance(doc.get("traceEvents"), list), "no traceEvents list"
        unit = doc.get("displayTimeUnit")
        assert unit in (None, "ms", "ns"), "displayTimeUnit %r" % (unit,)
        events = doc["traceEvents"]
    else:
        assert isinstance(doc, list), "neither the object nor the array format"
        events = doc
    by_phase = {}
    names = {}       # ("process_name", pid) / ("thread_name", pid, tid) -> name
    for ev in events:
        assert isinstance(ev, dict), ev
        ph = ev.get("ph")
        assert ph in PHASES, ("unknown ph", ev)
        by_phase.setdefault(ph, []).append(ev)
        assert isinstance(ev.get("name"), str) and ev["name"], ("no name", ev)
        assert _int(ev.get("pid")) and ev["pid"] >= 0, ("pid", ev)
        assert _int(ev.get("tid")) and ev["tid"] >= 0, ("tid", ev)
        if "args" in ev:
            assert isinstance(ev["args"], dict), ("args", ev)
        if "cat" in ev:
            assert isinstance(ev["cat"], str), ("cat", ev)
        if ph == "M":
            assert ev["name"] in METADATA_NAMES, ("metadata name", ev)
            if ev["name"].endswith("_name"):
                assert isinstance(ev["args"].get("name"), str), ("metadata args", ev)
                key = (ev["name"], ev["pid"]) if ev["name"] == "process_name" else \
                    (ev["name"], ev["pid"], ev["tid"])
                assert key not in names or names[key] == ev["args"]["name"], ("renamed", ev)
                names[key] = ev["args"]["name"]
            if ev["name"].endswith("_sort_index"):
                assert _int(ev["args"].get("sort_index")), ("sort_index", ev)
            continue
        assert _number(ev.get("ts")) and ev["ts"] >= 0, ("ts", ev)
        if ph == "X":
            assert _number(ev.get("dur")) and ev["dur"] >= 0, ("dur", ev)
        elif ph in "iI":
            assert ev.get("s", "t") in INSTANT_SCOPES, ("instant scope", ev)
        elif ph in "bne":
            assert _int(ev.get("id")) or isinstance(ev.get("id"), str), ("async id", ev)
            assert isinstance(ev.get("cat"), str), ("async cat", ev)
        elif ph == "C":
            args = ev.get("args")
            assert args and all(_number(v) for v in args.values()), ("counter args", ev)
    _check_nesting(by_phase.get("X", ()))
    _check_async_pairs(by_phase.get("b", ()), by_phase.get("e", ()))
    for ev in events:
        if ev["ph"] == "M":
            continue
        assert ("process_name", ev["pid"]) in names, ("process without a name", ev)
        if ev["ph"] in "XBE" or (ev["ph"] in "iI" and ev.get("s", "t") == "t"):
            assert ("thread_name", ev["pid"], ev["tid"]) in names, ("thread without a name", ev)
    return by_phase


def _check_nesting(slices):
    """On one thread a complete slice either ends before the next begins or
    contains it: a partial overlap is an import error in Perfetto."""
    by_thread = {}
    for ev in slices:
        by_thread.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for ev in evs:
            start, end = ev["ts"], ev["ts"] + ev["dur"]
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], ("slices overlap on one thread", ev)
            stack.append(end)


def _check_async_pairs(begins, ends):
    """Every async slice begun is ended once, no earlier than it began
    (matched on cat, name, id and pid, as the importer pairs them)."""
    def key(ev):
        return (ev["cat"], ev["name"], ev["id"], ev["pid"])
    began = {}
    for ev in begins:
        assert key(ev) not in began, ("async slice begun twice", ev)
        began[key(ev)] = ev["ts"]
    for ev in ends:
        assert key(ev) in began, ("async end without a begin", ev)
        assert ev["ts"] >= began.pop(key(ev)), ("async slice ends before it begins", ev)
    assert not began, ("async slices never ended", sorted(began))
