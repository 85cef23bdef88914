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
  ctime (at the fault's end), category ``timestamps``, args ``file``,
  ``dev_ino``, ``page`` and the new ``mtime_ns`` and ``ctime_ns`` (the
  slice has them before and after).
* ``"ph": "b"`` / ``"ph": "e"`` one async slice per write-exposure window
  (recordings that carry their closes), on ``EXPOSURE_PID``'s process,
  named after the file (one track group per file), category ``exposure``,
  from the write fault that made the page writable to what
  write-protected it again; args ``file``, ``dev_ino``, ``page``,
  ``pages``, ``opened_by_pid``, ``closed_by`` (writeback, unmap, or
  open: still open when the recording ended, the slice then ends there)
  and ``closed_by_pid`` (null when open).
* ``"ph": "i"`` a process-scoped instant on ``EXPOSURE_PID`` per exposed
  observation (a stat while pages of the file were writable), category
  ``exposure``, name ``exposed stat``; args ``file``, ``dev_ino``,
  ``observer_pid``, ``observer_comm``, ``mtime_ns`` (what it was shown)
  and ``open_pages``.
* ``"ph": "C"`` per file, write faults per second (``FILES_PID``, counter
  name the file's path, series ``write faults/s``): the count of each
  second at its start, and 0 at the start of a second without faults.

Times are the kernel's CLOCK_MONOTONIC, as recorded (``otherData`` has the
realtime offset).  The trace is written as the faults come from
correlate.stream_batches(): nothing but a few per-thread and per-file
entries is kept, so a recording of any size is written in flat memory.
report --perfetto uses write_forked(): correlating in one process,
formatting in another.
"""

import fcntl
import gc
import json
import os
import pickle

from pfntrace import __version__
from pfntrace.correlate import ExposureBatch, Fault, file_key
from pfntrace.exposure import Window

# Linux pids are below PID_MAX_LIMIT (4 * 1024 * 1024): this one is never a
# real process, so the per-file counters get a process of their own.
FILES_PID = 4 * 1024 * 1024
FILES_PROCESS = "write faults per file"
COUNTER_SERIES = "write faults/s"
# The write-exposure windows' process: another pid no real process has.
EXPOSURE_PID = FILES_PID + 1
EXPOSURE_PROCESS = "write-exposure windows"
# A fault this many seconds behind the newest one seen is counted in the
# next second still open (the stream is ordered by CPU ring, not by time).
COUNTER_WINDOW_S = 10
_SECOND = 1_000_000_000
# Events joined into one write().
_BATCH = 128

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
            entry = self.files[fs.index] = [_dumps(fs.shown_path), {}, -1]
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
        self.windows = self.exposed = 0
        self.processes = set()
        self.threads = set()     # (pid, tid) named
        self.heads = {}          # (tid, pid, file index, handler, kind, verdict) -> _head()
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

    def end(self, other):
        """Close the document; other: other_data() of the finished analysis."""
        self.counters.flush()
        self._write()
        self.out.write("\n],\n\"otherData\":%s}\n" % _dumps(other))

    # -- the events -----------------------------------------------------------
    def _metadata(self, what, pid, tid, name):
        self.metadata += 1
        self._emit('{"ph":"M","name":"%s","pid":%d,"tid":%d,"args":{"name":%s}}'
                   % (what, pid, tid, _dumps(name)))

    def _thread(self, f):
        """Name f's process and thread the first time they fault."""
        if f.pid not in self.processes:
            self.processes.add(f.pid)
            m = self.meta_procs.get(str(f.pid)) or self.meta_procs.get(f.pid) or {}
            self._metadata("process_name", f.pid, f.pid, m.get("comm") or f.comm)
        self._metadata("thread_name", f.pid, f.tid, f.comm)
        self.threads.add((f.pid, f.tid))

    def _head(self, key, f):
        """What the slices of key (thread, file, handler, kind, verdict) have
        in common, formatted once: the slice up to "ts", and its args up to
        "page"."""
        if (f.pid, f.tid) not in self.threads:
            self._thread(f)
        fs = f.file
        where = '"pid":%d,"tid":%d' % (f.pid, f.tid)
        file = '"file":%s,"dev_ino":"%s"' % (_dumps(fs.shown_path), fs.key)
        head = self.heads[key] = (
            '{"ph":"X","cat":"write_fault","name":"%s %s",%s,"ts":' % (f.kind, f.verdict, where),
            '"args":{%s,"kind":"%s","verdict":"%s","handler":%s,' % (
                file, f.kind, f.verdict, _dumps(f.handler_name)),
            '{"ph":"i","s":"t","cat":"timestamps","name":"%%s moved",%s,"ts":' % where,
            '"args":{%s,' % file)
        return head

    def fault(self, row):
        """One write fault, as the engine's row (correlate.stream_batches);
        a Fault is made of it only the first time its thread, file,
        handler, kind and verdict come together, and for an invisible write:
        per fault there is one format of each event (this is most of the
        time a trace takes to write)."""
        (ts, kind, verdict, fs, pgoff, pid, tid, _, dur, ftu, m0, m1, c0, c1, _, _,
         clock0, clock1, _, handler, observer) = row
        key = (tid, pid, fs.index, handler, kind, verdict)
        head = self.heads.get(key) or self._head(key, Fault(row, self.an))
        stamps = ('"mtime_before_ns":%d,"mtime_after_ns":%d,"ctime_before_ns":%d,'
                  '"ctime_after_ns":%d' % (m0, m1, c0, c1))
        pending = self.pending
        pending.append('%s%d.%03d,"dur":%d.%03d,%s"page":%d,"ftu_calls":%d,%s,'
                       '"kernel_clock_ns":[%d,%d]%s}}' % (
                           head[0], ts // 1000, ts % 1000, dur // 1000, dur % 1000, head[1],
                           pgoff, ftu, stamps, clock0, clock1,
                           "" if observer is None else ',"invisible_to":'
                           + _dumps(Fault(row, self.an).invisible_dict())))
        self.slices += 1
        if m0 != m1 or c0 != c1:
            end = ts + dur
            self.instants += 1
            pending.append('%s%d.%03d,%s"page":%d,"mtime_ns":%d,"ctime_ns":%d}}' % (
                head[2] % _MOVED[(m0 != m1) + 2 * (c0 != c1)], end // 1000, end % 1000,
                head[3], pgoff, m1, c1))
        self.counters.add(fs, ts)
        if len(pending) >= _BATCH:
            self._write()

    def exposure(self, items):
        """An ExposureBatch: windows that ended, exposed observations, with
        their files; of the selected files only (a window is its file's,
        not a process's: --pid and --comm do not thin them)."""
        for item, fs in items:
            if fs is not None and not fs.selected:
                continue
            key = file_key(item.dev, item.ino)
            path = key if fs is None else fs.shown_path
            if not self.windows and not self.exposed:
                self._metadata("process_name", EXPOSURE_PID, EXPOSURE_PID, EXPOSURE_PROCESS)
            file = '"file":%s,"dev_ino":"%s"' % (_dumps(path), key)
            if isinstance(item, Window):
                self._window(item, path, file, items.end_ns)
            else:
                self._exposed(item, file)
        if len(self.pending) >= _BATCH:
            self._write()

    def _window(self, w, path, file, end_ns):
        self.windows += 1
        end = w.closed_ns if w.closed_ns is not None else end_ns
        head = '{"cat":"exposure","name":%s,"id":%d,"pid":%d,"tid":%d' % (
            _dumps(path), self.windows, EXPOSURE_PID, EXPOSURE_PID)
        self.pending.append('%s,"ph":"b","ts":%d.%03d,"args":{%s,"page":%d,"pages":%d,'
                            '"opened_by_pid":%d,"closed_by":"%s","closed_by_pid":%s}}' % (
                                head, w.opened_ns // 1000, w.opened_ns % 1000, file,
                                w.pgoff, w.npages, w.opened_by[0], w.cause,
                                _dumps(w.closed_by)))
        self.pending.append('%s,"ph":"e","ts":%d.%03d}' % (head, end // 1000, end % 1000))

    def _exposed(self, ob, file):
        self.exposed += 1
        self.pending.append(
            '{"ph":"i","s":"p","cat":"exposure","name":"exposed stat","pid":%d,"tid":%d,'
            '"ts":%d.%03d,"args":{%s,"observer_pid":%d,"observer_comm":%s,"mtime_ns":%s,'
            '"open_pages":%s}}' % (
                EXPOSURE_PID, EXPOSURE_PID, ob.ts_ns // 1000, ob.ts_ns % 1000, file, ob.pid,
                _dumps(ob.comm), _dumps(ob.mtime_ns),
                _dumps([p.window.pgoff for p in ob.pages])))

    def counts(self):
        return {"slices": self.slices, "instants": self.instants,
                "counter_samples": self.counters.samples, "metadata": self.metadata,
                "exposure_windows": self.windows, "exposed_observations": self.exposed}


def other_data(an):
    """The document's otherData: the recording and the report's summary
    (an finished: every fault through)."""
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


def write(out, an, batches, other=other_data):
    """Write the trace of the write faults of correlate.stream_batches()
    to the text file out; an's aggregates are read at the end only, by
    other(an) (the document's otherData).  Returns counts of what was
    written, by event kind."""
    w = TraceWriter(out, an)
    w.begin()
    fault = w.fault
    for rows in batches:
        if type(rows) is ExposureBatch:
            w.exposure(rows)
            continue
        for row in rows:
            fault(row)
    w.end(other(an))
    return w.counts()


def write_forked(out, an, batches):
    """write() of correlate.stream_batches() in two processes, one per job:
    this one correlates and sends each batch of fault rows down a pipe
    (pickled); a forked child formats and writes the trace.  Correlating
    and formatting cost about the same, so on two CPUs the trace is written
    nearly twice as fast as by write().  The same document as write(), byte
    for byte; an error of either process (a corrupt recording here, a full
    disk there) is raised here, after the child has exited."""
    out.flush()                     # the child's copy of out starts empty
    rows_r, rows_w = os.pipe()
    _widen(rows_w)
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rows_w)
        os.close(result_r)
        _format_child(out, an, rows_r, result_w)       # does not return
    os.close(rows_r)
    os.close(result_w)
    failure = None
    try:
        with open(rows_w, "wb") as pipe:
            for rows in batches:
                pickle.dump(rows, pipe, pickle.HIGHEST_PROTOCOL)
            pickle.dump(_Done(other_data(an)), pipe, pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        pass                        # the child stopped: its result says why
    except BaseException as e:      # closing the pipe mid-way tells the child
        failure = e
    with open(result_r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    if failure is not None:
        raise failure
    if not raw:
        raise OSError("the trace writer (pid %d) died: %s" % (pid, _how(status)))
    ok, value = pickle.loads(raw)
    if not ok:
        raise value or OSError("the trace writer stopped")
    return value


def _widen(fd):
    """A pipe of 1 MiB (Linux's default pipe-max-size) rather than 64 KiB:
    the two processes wait less on each other's bursts."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (AttributeError, OSError):
        pass                        # a smaller pipe is slower, not wrong


class _Done:
    """The last message down the pipe: the trace is complete."""

    def __init__(self, other):
        self.other = other


def _format_child(out, an, rows_fd, result_fd):
    """write_forked()'s child: format the rows that come down rows_fd, then
    report (True, counts) or (False, the exception) on result_fd and exit."""
    gc.disable()                    # millions of acyclic tuples: see correlate
    try:
        try:
            with open(rows_fd, "rb") as pipe:
                received = _Received(pipe)
                counts = write(out, an, received, lambda _: received.done.other)
            out.flush()
            result = (True, counts)
        except _Abandoned:
            result = (False, None)   # the correlating process raises its own error
        except BaseException as e:  # noqa: BLE001 (handed to the parent)
            result = (False, e)
        try:
            raw = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except Exception:           # noqa: BLE001 (an exception pickle cannot carry)
            raw = pickle.dumps((False, OSError(str(result[1]))), pickle.HIGHEST_PROTOCOL)
        with open(result_fd, "wb") as f:
            f.write(raw)
    finally:
        os._exit(0)


class _Received:
    """The batches of fault rows that come down the pipe, up to the _Done
    (then in .done); the pipe closed before it: _Abandoned."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.done = None

    def __iter__(self):
        while True:
            try:
                msg = pickle.load(self.pipe)
            except EOFError:
                raise _Abandoned() from None
            if isinstance(msg, _Done):
                self.done = msg
                return
            yield msg


class _Abandoned(Exception):
    """The correlating process closed the pipe before the end."""


def _how(status):
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.waitstatus_to_exitcode(status)
