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
  ``dev_ino``, ``page``, ``kind``, ``verdict``, ``handler``, ``ftu_calls``
  (file_update_time calls), the timestamps before and after (ns since the
  epoch), ``kernel_clock_ns`` (the kernel's timestamp clock at the fault's
  entry and return) and, for an invisible write, who last stat'ed the file
  (``invisible_to``, as in report --json).
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


# "<which> moved", by (mtime moved) + 2 * (ctime moved)
_MOVED = (None, "mtime", "ctime", "mtime+ctime")


class _Counters:
    """Write faults per second per file, emitted as "C" events once a
    second is COUNTER_WINDOW_S behind the newest fault."""

    def __init__(self, emit):
        self.emit = emit
        self.files = {}          # file index -> [name json, {second: n}, last second emitted]
        self.newest = -1
        self.samples = 0

    def add(self, fs, ts):
        second = ts // _SECOND
        entry = self.files.get(fs.index)
        if entry is None:
            entry = self.files[fs.index] = [_dumps(fs.path), {}, -1]
        if second <= entry[2]:
            second = entry[2] + 1    # that second is written already (see COUNTER_WINDOW_S)
        open_ = entry[1]
        open_[second] = open_.get(second, 0) + 1
        if second > self.newest:
            self.newest = second
            self.flush(second - COUNTER_WINDOW_S)

    def flush(self, upto=None):
        """Emit every second <= upto (all, with None) of every file; after
        the last second of all, the rate falls to 0."""
        for entry in self.files.values():
            name, open_, last = entry
            for second in sorted(s for s in open_ if upto is None or s <= upto):
                if last >= 0 and second > last + 1:
                    self._sample(name, last + 1, 0)
                self._sample(name, second, open_.pop(second))
                last = second
            if upto is None and last >= 0:
                self._sample(name, last + 1, 0)
            entry[2] = last

    def _sample(self, name, second, n):
        self.samples += 1
        self.emit('{"ph":"C","name":%s,"pid":%d,"tid":%d,"ts":%d,"args":{"%s":%d}}'
                  % (name, FILES_PID, FILES_PID, second * 1_000_000, COUNTER_SERIES, n))


class TraceWriter:
    """Write the trace of one analysis to out (a text file), fault by fault."""

    def __init__(self, out, an):
        self.out = out
        self.an = an
        self.pending = []
        self.first = True
        self.slices = self.instants = self.metadata = 0
        self.processes = set()
        self.threads = {}        # (pid, tid) -> '"pid":P,"tid":T'
        self.handlers = {}       # address -> JSON of its name
        self.files = {}          # file index -> '"file":...,"dev_ino":...' 
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
    def _metadata(self, what, pid, tid, name):
        self.metadata += 1
        self._emit('{"ph":"M","name":"%s","pid":%d,"tid":%d,"args":{"name":%s}}'
                   % (what, pid, tid, _dumps(name)))

    def _thread(self, f):
        """The "pid", "tid" of f's track, named the first time."""
        if f.pid not in self.processes:
            self.processes.add(f.pid)
            m = self.meta_procs.get(str(f.pid)) or self.meta_procs.get(f.pid) or {}
            self._metadata("process_name", f.pid, f.pid, m.get("comm") or f.comm)
        self._metadata("thread_name", f.pid, f.tid, f.comm)
        where = self.threads[(f.pid, f.tid)] = '"pid":%d,"tid":%d' % (f.pid, f.tid)
        return where

    def _handler(self, f):
        j = self.handlers[f.handler] = _dumps(f.handler_name)
        return j

    def _file(self, fs):
        j = self.files[fs.index] = '"file":%s,"dev_ino":"%s"' % (_dumps(fs.path), fs.key)
        return j

    def fault(self, f):
        # Per fault: one format of each event, everything else looked up
        # (this is most of the time a trace takes to write).
        where = self.threads.get((f.pid, f.tid)) or self._thread(f)
        fs = f.file
        file = self.files.get(fs.index) or self._file(fs)
        ts, dur = f.ts, f.latency
        m0, m1, c0, c1 = f.mtime_before, f.mtime_after, f.ctime_before, f.ctime_after
        stamps = ('"mtime_before_ns":%d,"mtime_after_ns":%d,"ctime_before_ns":%d,'
                  '"ctime_after_ns":%d' % (m0, m1, c0, c1))
        pending = self.pending
        pending.append(
            '{"ph":"X","cat":"write_fault","name":"%s %s",%s,"ts":%d.%03d,"dur":%d.%03d,'
            '"args":{%s,"page":%d,"kind":"%s","verdict":"%s","handler":%s,"ftu_calls":%d,'
            '%s,"kernel_clock_ns":[%d,%d]%s}}' % (
                f.kind, f.verdict, where, ts // 1000, ts % 1000, dur // 1000, dur % 1000,
                file, f.pgoff, f.kind, f.verdict,
                self.handlers.get(f.handler) or self._handler(f), f.ftu_calls, stamps,
                f.clock[0], f.clock[1],
                "" if f.observer is None else ',"invisible_to":' + _dumps(f.invisible_dict())))
        self.slices += 1
        if m0 != m1 or c0 != c1:
            end = ts + dur
            self.instants += 1
            pending.append(
                '{"ph":"i","s":"t","cat":"timestamps","name":"%s moved",%s,"ts":%d.%03d,'
                '"args":{%s,"page":%d,%s}}' % (
                    _MOVED[(m0 != m1) + 2 * (c0 != c1)], where, end // 1000, end % 1000,
                    file, f.pgoff, stamps))
        self.counters.add(fs, ts)
        if len(pending) >= _BATCH:
            self._write()

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
