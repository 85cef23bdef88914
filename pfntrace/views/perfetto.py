"""A recording's write faults as a Chrome trace-event JSON timeline.

ui.perfetto.dev (and chrome://tracing) open it directly.  The document is
the JSON object form of the trace-event format:

    {"displayTimeUnit": "ns",
     "traceEvents": [...],
     "otherData": {...}}           # the recording and the report's summary

``traceEvents`` holds, in stream order:

* ``"ph": "M"`` metadata: ``process_name`` (pid) and ``thread_name``
  (pid, tid) the first time a process or thread faults; one more process,
  ``FILES_PID``, holds the counters.
* ``"ph": "X"`` one complete slice per write fault on its thread's track:
  ``ts`` is the fault's start, ``dur`` how long the handler (do_wp_page,
  ->fault, ->huge_fault) ran, in microseconds with nanosecond decimals;
  name ``"<kind> <verdict>"``, category ``write_fault``, args ``file``,
  ``page``, ``kind``, ``verdict``, ``handler``, ``dev_ino``, ``comm``,
  ``latency_ns``, ``ftu_calls``, the timestamps before and after (ns since
  the epoch), ``kernel_clock_ns`` and, for an invisible write, who last
  stat'ed the file (``invisible_to``).
* ``"ph": "i"`` a thread-scoped instant where the fault moved mtime and/or
  ctime (at the fault's end), category ``timestamps``.
* ``"ph": "C"`` per file, write faults per second (``FILES_PID``, counter
  name the file's path, series ``write faults/s``): the count of each
  second at its start, and 0 at the start of a second without faults.

Times are the kernel's CLOCK_MONOTONIC, as recorded (``otherData`` has the
realtime offset).  The trace is written as the faults come from
correlate.stream(): nothing but a few per-thread and per-file entries is
kept, so a recording of any size is written in flat memory.
"""

import json

from pfntrace import __version__

# Linux pids are below PID_MAX_LIMIT (4 * 1024 * 1024): this one is never a
# real process, so the per-file counters get a process of their own.
FILES_PID = 4 * 1024 * 1024
FILES_PROCESS = "write faults per file"
COUNTER_SERIES = "write faults/s"
# A fault this many seconds behind the newest one seen is counted in the
# next second still open (the stream is ordered by CPU ring, not by time).
COUNTER_WINDOW_S = 10
_SECOND = 1_000_000_000
# Events joined into one write().
_BATCH = 2048

_dumps = json.dumps


def _us(ns):
    """Nanoseconds as a JSON number of microseconds, exactly."""
    if ns < 0:
        return "-" + _us(-ns)
    return "%d.%03d" % divmod(ns, 1000)


class _Counters:
    """Write faults per second per file, emitted as "C" events once a
    second is COUNTER_WINDOW_S behind the newest fault."""

    def __init__(self, emit):
        self.emit = emit
        self.files = {}          # file index -> [name json, {second: n}, last second emitted]
        self.newest = None
        self.samples = 0

    def add(self, fs, ts):
        second = ts // _SECOND
        entry = self.files.get(fs.index)
        if entry is None:
            entry = self.files[fs.index] = [_dumps(fs.path), {}, None]
        last = entry[2]
        if last is not None and second <= last:
            second = last + 1    # that second is written already (see COUNTER_WINDOW_S)
        open_ = entry[1]
        open_[second] = open_.get(second, 0) + 1
        if self.newest is None or second > self.newest:
            self.newest = second
            self.flush(second - COUNTER_WINDOW_S)

    def flush(self, upto=None):
        """Emit every second <= upto (all, with None) of every file; after
        the last second of all, the rate falls to 0."""
        for entry in self.files.values():
            name, open_, last = entry
            if not open_:
                continue
            for second in sorted(s for s in open_ if upto is None or s <= upto):
                if last is not None and second > last + 1:
                    self._sample(name, last + 1, 0)
                self._sample(name, second, open_.pop(second))
                last = second
            if upto is None and last is not None:
                self._sample(name, last + 1, 0)
            entry[2] = last

    def _sample(self, name, second, n):
        self.samples += 1
        self.emit('{"ph":"C","name":%s,"pid":%d,"tid":%d,"ts":%s,"args":{"%s":%d}}'
                  % (name, FILES_PID, FILES_PID, _us(second * _SECOND), COUNTER_SERIES, n))


class TraceWriter:
    """Write the trace of one analysis to out (a text file), fault by fault."""

    def __init__(self, out, an):
        self.out = out
        self.an = an
        self.pending = []
        self.first = True
        self.slices = self.instants = self.metadata = 0
        self.processes = set()
        self.threads = set()
        self.strings = {}        # str -> its JSON
        self.handlers = {}       # address -> JSON of its name
        self.files = {}          # file index -> JSON of (path, key)
        self.counters = _Counters(self._emit)
        self.meta_procs = an.meta.get("procs") or {}

    # -- output ---------------------------------------------------------------
    def _emit(self, text):
        self.pending.append(text)
        if len(self.pending) >= _BATCH:
            self._write()

    def _write(self):
        if not self.pending:
            return
        sep = "\n" if self.first else ",\n"
        self.first = False
        self.out.write(sep + ",\n".join(self.pending))
        self.pending = []

    def begin(self):
        self.out.write('{"displayTimeUnit":"ns","traceEvents":[')
        self._metadata("process_name", FILES_PID, FILES_PID, FILES_PROCESS)
        self._emit('{"ph":"M","name":"process_sort_index","pid":%d,"tid":%d,'
                   '"args":{"sort_index":-1}}' % (FILES_PID, FILES_PID))
        self.metadata += 1

    def end(self):
        self.counters.flush()
        self._write()
        self.out.write("\n],\n\"otherData\":%s}\n" % _dumps(self.other_data()))

    # -- the events -----------------------------------------------------------
    def _json(self, s):
        j = self.strings.get(s)
        if j is None:
            if len(self.strings) > 65536:
                self.strings.clear()
            j = self.strings[s] = _dumps(s)
        return j

    def _metadata(self, what, pid, tid, name):
        self.metadata += 1
        self._emit('{"ph":"M","name":"%s","pid":%d,"tid":%d,"args":{"name":%s}}'
                   % (what, pid, tid, _dumps(name)))

    def _thread(self, f):
        if f.pid not in self.processes:
            self.processes.add(f.pid)
            m = self.meta_procs.get(str(f.pid)) or self.meta_procs.get(f.pid) or {}
            self._metadata("process_name", f.pid, f.pid, m.get("comm") or f.comm)
        self.threads.add((f.pid, f.tid))
        self._metadata("thread_name", f.pid, f.tid, f.comm)

    def _handler(self, f):
        j = self.handlers.get(f.handler)
        if j is None:
            j = self.handlers[f.handler] = _dumps(f.handler_name)
        return j

    def _file(self, fs):
        j = self.files.get(fs.index)
        if j is None:
            j = self.files[fs.index] = '"file":%s,"dev_ino":"%s"' % (_dumps(fs.path), fs.key)
        return j

    def fault(self, f):
        if (f.pid, f.tid) not in self.threads:
            self._thread(f)
        fs = f.file
        where = '"pid":%d,"tid":%d' % (f.pid, f.tid)
        stamps = ('"mtime_before_ns":%d,"mtime_after_ns":%d,"ctime_before_ns":%d,'
                  '"ctime_after_ns":%d' % (f.mtime_before, f.mtime_after, f.ctime_before,
                                           f.ctime_after))
        args = ('%s,"page":%d,"kind":"%s","verdict":"%s","handler":%s,"comm":%s,'
                '"latency_ns":%d,"ftu_calls":%d,%s,"kernel_clock_ns":[%d,%d]' % (
                    self._file(fs), f.pgoff, f.kind, f.verdict, self._handler(f),
                    self._json(f.comm), f.latency, f.ftu_calls, stamps,
                    f.clock[0], f.clock[1]))
        if f.observer is not None:
            args += ',"invisible_to":%s' % _dumps(f.invisible_dict())
        self.slices += 1
        self._emit('{"ph":"X","cat":"write_fault","name":"%s %s",%s,"ts":%s,"dur":%s,'
                   '"args":{%s}}' % (f.kind, f.verdict, where, _us(f.ts), _us(f.latency), args))
        moved = [name for name, a, b in (("mtime", f.mtime_before, f.mtime_after),
                                         ("ctime", f.ctime_before, f.ctime_after)) if a != b]
        if moved:
            self.instants += 1
            self._emit('{"ph":"i","s":"t","cat":"timestamps","name":"%s moved",%s,"ts":%s,'
                       '"args":{%s,"page":%d,%s}}' % (
                           "+".join(moved), where, _us(f.ts + f.latency), self._file(fs),
                           f.pgoff, stamps))
        self.counters.add(fs, f.ts)

    def other_data(self):
        an = self.an
        s = an.summary()
        clock = an.header.get("clock") or {}
        return {
            "generator": "pfntrace %s" % __version__,
            "kernel": s["kernel"],
            "command": s["command"],
            "clock": "CLOCK_MONOTONIC",
            "realtime_minus_monotonic_ns": clock.get("realtime_minus_monotonic_ns"),
            "write_faults": s["write_faults"],
            "verdicts": s["verdicts"],
            "lost": s["lost"],
            "filter": s["filter"],
            "warnings": an.warning_lines(),
        }

    def counts(self):
        return {"slices": self.slices, "instants": self.instants,
                "counter_samples": self.counters.samples, "metadata": self.metadata}


def write(out, an, faults):
    """Write the trace of faults (Fault objects, e.g. correlate.stream()'s)
    to the text file out; an's aggregates are read at the end only.
    Returns counts of what was written, by event kind."""
    w = TraceWriter(out, an)
    w.begin()
    fault = w.fault
    for f in faults:
        fault(f)
    w.end()
    return w.counts()
