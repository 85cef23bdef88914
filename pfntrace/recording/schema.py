"""What the JSON blocks of a recording may hold, and a small checker for it.

A block whose CRC is right was written whole, but not necessarily by
pfntrace, nor by this version of it: report, check and the exports read
these dicts with plain item access and arithmetic, so a wrong type found
there would surface as a traceback far from the file, and a wrong value
(a negative lost count) as a wrong number.  The reader checks every HEADER,
META, LOST, COUNTS and TRAILER payload here first and refuses the recording with
one line saying which key is wrong.

Only the keys pfntrace reads are described; others are allowed (a newer
writer may add some) but, like everything, are bounded in depth.
"""

import math

from pfntrace import layout

# Deeper than anything pfntrace writes (about 5), shallow enough that no
# recursive walk of the data (merging META, rendering) can run out of stack.
MAX_DEPTH = 32

I64 = (-(1 << 63), (1 << 63) - 1)
U64 = (0, (1 << 64) - 1)


class SchemaError(ValueError):
    """str() is one line: where in the block, and what is wrong."""


def _shown(value):
    """A short rendering of a bad value for the message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Int:
    def __init__(self, lo=I64[0], hi=I64[1]):
        self.lo, self.hi = lo, hi

    def check(self, value, where):
        # bool is an int subclass in Python, never in JSON.
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError("%s: expected an integer, got %s" % (where, _shown(value)))
        if value < self.lo:
            raise SchemaError("%s: %d is below the minimum, %d" % (where, value, self.lo))
        if value > self.hi:
            raise SchemaError("%s: %d is above the maximum, %d" % (where, value, self.hi))


class Str:
    def check(self, value, where):
        if not isinstance(value, str):
            raise SchemaError("%s: expected a string, got %s" % (where, _shown(value)))


class Bool:
    def check(self, value, where):
        if not isinstance(value, bool):
            raise SchemaError("%s: expected true or false, got %s" % (where, _shown(value)))


class Finite:
    """Any finite number (JSON has no NaN or Infinity; Python's parser does)."""

    def check(self, value, where):
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)):
            raise SchemaError("%s: expected a finite number, got %s" % (where, _shown(value)))


class Opt:
    """null, or what inner allows."""

    def __init__(self, inner):
        self.inner = inner

    def check(self, value, where):
        if value is not None:
            self.inner.check(value, where)


class ListOf:
    def __init__(self, item):
        self.item = item

    def check(self, value, where):
        if not isinstance(value, list):
            raise SchemaError("%s: expected a list, got %s" % (where, _shown(value)))
        for i, v in enumerate(value):
            self.item.check(v, "%s[%d]" % (where, i))


class MapOf:
    """An object with any keys (JSON keys are strings), every value of one kind."""

    def __init__(self, value):
        self.value = value

    def check(self, value, where):
        if not isinstance(value, dict):
            raise SchemaError("%s: expected an object, got %s" % (where, _shown(value)))
        for k, v in value.items():
            self.value.check(v, "%s[%s]" % (where, _shown(k)))


class Obj:
    """An object with known keys (each optional unless required); other keys
    are let through."""

    def __init__(self, fields, required=()):
        self.fields, self.required = fields, required

    def check(self, value, where):
        if not isinstance(value, dict):
            raise SchemaError("%s: expected an object, got %s" % (where, _shown(value)))
        for key in self.required:
            if key not in value:
                raise SchemaError("%s: %s is missing" % (where, key))
        for key, schema in self.fields.items():
            if key in value:
                schema.check(value[key], "%s.%s" % (where, key) if where else key)


def depth(value):
    """Nesting depth of a JSON value, without recursion (a deep value must
    not be what breaks the check meant to refuse it)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        stack.extend((x, d + 1) for x in v)
    return deepest


def validate(obj, schema):
    """Raise SchemaError (one line) if obj does not fit schema."""
    d = depth(obj)
    if d > MAX_DEPTH:
        raise SchemaError("nested more than %d levels deep" % MAX_DEPTH)
    schema.check(obj, "")


# -- the blocks --------------------------------------------------------------

_CLOCK_PLAN = Obj({"status": Str(), "why": Str(), "symbol": Str(),
                   "tk_base": Int(*U64), "mg_floor": Int(*U64)}, required=("status",))

_PLAN = Obj({
    "hooks": ListOf(Obj({"hook": Str(), "kind": Str(), "status": Str(), "why": Opt(Str()),
                         "mechanism": Opt(Str()), "attach_why": Opt(Str()),
                         "module": Opt(Str())})),
    "huge_fault_arg_is_order": Bool(),
    "attach": Str(),
    "fentry": Obj({"ok": Bool(), "why": Str()}),
    "clock": _CLOCK_PLAN,
    "kernel": Str(),
})

HEADER = Obj({
    "format_version": Int(1),
    "event_size": Int(1, 1 << 20),
    "byte_order": Str(),
    "event_layout": ListOf(Obj({"name": Str(), "offset": Int(0), "size": Int(0),
                                "type": Str()}, required=("name",))),
    "kernel": Opt(Str()),
    "command": Opt(ListOf(Str())),
    "pid": Opt(Int(0)),
    "mounts": ListOf(Str()),
    "file": Opt(Str()),
    "every_event": Bool(),
    # Not optional: without it faults are judged as on an older kernel.
    "plan": _PLAN,
    "clock": Obj({
        "realtime_minus_monotonic_ns": Int(*I64),
        "sampled_at_ns": Int(*U64),
        # One timer tick: at least 1 ns, at most 1 s (HZ >= 1).
        "tick_ns": Int(1, 1_000_000_000),
    }),
    "started_wall_ns": Int(*I64),
}, required=("format_version",))

META = Obj({
    "files": MapOf(Obj({"path": Str()})),
    "procs": MapOf(Obj({"comm": Str(), "cmdline": Opt(Str())})),
    "symbols": MapOf(Str()),
    "clock_samples": ListOf(ListOf(Int(*I64))),
    "late_handlers": ListOf(Obj({"hook": Str(), "attached": Bool(),
                                 "first_seen_ns": Int(*U64)},
                                required=("hook", "attached", "first_seen_ns"))),
})

_COUNTS = ListOf(Int(*U64))

LOST = Obj({"per_cpu": _COUNTS}, required=("per_cpu",))

# Per file and process, what the kernel counted instead of sending events
# (pfntrace.h, struct pft_file_counts; layout.FILE_COUNTERS names the rest).
COUNTS = Obj({"files": ListOf(Obj(
    dict({"dev": Int(0, (1 << 32) - 1), "ino": Int(*U64), "pid": Int(0, (1 << 32) - 1),
          "comm": Str()}, **{name: Int(*U64) for name in layout.FILE_COUNTERS}),
    required=("dev", "ino", "pid")))}, required=("files",))

TRAILER = Obj({
    "duration_ns": Opt(Int(*U64)),
    "ended_wall_ns": Int(*I64),
    "events": Int(*U64),
    "events_by_type": MapOf(Int(*U64)),
    "lost": Int(*U64),
    "lost_per_cpu": _COUNTS,
    "blind": MapOf(Int(*U64)),
    "exit_code": Opt(Int(-(1 << 31), 1 << 31)),
    "attached": ListOf(Str()),
    "mechanisms": ListOf(Str()),
    "statx": MapOf(Obj({"path": Opt(Str()), "exists": Bool(), "mtime_ns": Opt(Int(*I64)),
                        "ctime_ns": Opt(Int(*I64)), "size": Opt(Int(*U64)),
                        "dax": Opt(Bool()), "unmounted": Bool()})),
    "written": Obj({"events": Int(*U64), "event_blocks": Int(*U64)}),
    # record --bpf-stats: program -> [run time in ns, runs] (pfntrace/bpfstats.py)
    "bpf_run_times": MapOf(ListOf(Int(*U64))),
    # the recorder's own CPU time while recording, ns
    "recorder_cpu_ns": Int(*U64),
    # program -> runs the kernel skipped, where any (blind's skipped_by_kernel)
    "bpf_skipped": MapOf(Int(*U64)),
})
