"""report --perfetto: the Chrome trace-event timeline of a recording's write
faults, checked structurally (trace_event_spec.py), exactly (slices, pages,
verdicts, timestamp moves, counters), streamed in flat memory, and failing
in one line when it cannot be written."""

import gc
import json
import os
import signal
import struct
import subprocess
import threading
import tracemalloc

import pytest

from pfntrace import correlate, layout
from pfntrace.recording import Recording, RecordingError, RecordingWriter
from pfntrace.views import perfetto

import trace_event_spec
from test_recording import tiny_fs  # noqa: F401  (a fixture)
from test_bad_input import _run
from test_report import HEADER, META, NS, T0, cli, fault, write_recording


@pytest.fixture
def rec_path(tmp_path):
    from test_report import observed_stream

    return write_recording(tmp_path / "run.pft", events=observed_stream())


def trace_of(rec_path, tmp_path, *options):
    out = tmp_path / "trace.json"
    r = cli("report", "--perfetto", str(out), *options, str(rec_path))
    assert r.exit_code == 0, r.stderr
    with open(out) as f:
        return json.load(f), r


def slices(doc):
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == "write_fault"]


def test_the_trace_is_valid_and_has_one_slice_per_write_fault(rec_path, tmp_path):
    doc, r = trace_of(rec_path, tmp_path)
    phases = trace_event_spec.check(doc)
    assert doc["displayTimeUnit"] == "ns"
    got = slices(doc)
    assert len(got) == len(phases["X"]) == 4
    assert [(s["args"]["file"], s["args"]["page"], s["args"]["verdict"]) for s in got] == [
        ("/mnt/dax/f", 0, "UPDATED"), ("/mnt/dax/f", 1, "CURRENT"),
        # g is gone by the end (the trailer's statx): named as at the fault, marked.
        ("/mnt/dax/f", 2, "MISSED"), ("/mnt/dax/g (deleted)", 5, "NO_NOTIFIER")]
    first = got[0]
    assert first["name"] == "pfn_mkwrite UPDATED"
    assert (first["pid"], first["tid"], first["ts"], first["dur"]) == (100, 100, 1e6, 3.0)
    assert first["args"]["handler"] == "ext4_dax_fault"
    assert first["args"]["kind"] == "pfn_mkwrite" and first["args"]["dev_ino"] == "259:3:12"
    assert first["args"]["mtime_after_ns"] - first["args"]["mtime_before_ns"] == NS
    assert got[3]["args"]["kind"] == "no_notifier" and got[3]["args"]["handler"] is None
    # The CURRENT and the MISSED write are invisible to rsync's stat before them.
    assert [s["args"].get("invisible_to", {}).get("observer_comm") for s in got] == [
        None, "rsync", "rsync", None]
    # Only the UPDATED fault moved the timestamps: one instant, at its end.
    (moved,) = phases["i"]
    assert moved["name"] == "mtime+ctime moved" and moved["s"] == "t"
    assert (moved["tid"], moved["ts"], moved["args"]["page"]) == (100, 1e6 + 3, 0)
    assert (moved["args"]["mtime_ns"], moved["args"]["ctime_ns"]) == (
        first["args"]["mtime_after_ns"], first["args"]["ctime_after_ns"])
    assert doc["otherData"]["write_faults"] == 4
    assert doc["otherData"]["verdicts"]["MISSED"] == 1
    assert r.stdout == "" and r.stderr == (
        "%s: 4 write faults, 1 timestamp moves, 6 counter samples (open it in "
        "https://ui.perfetto.dev)\n" % (tmp_path / "trace.json"))


def test_names_and_counters(rec_path, tmp_path):
    doc, _ = trace_of(rec_path, tmp_path)
    meta = {(e["name"], e["pid"], e["tid"]): e["args"] for e in doc["traceEvents"]
            if e["ph"] == "M"}
    fp = perfetto.FILES_PID
    assert meta == {("process_name", fp, fp): {"name": "write faults per file"},
                    ("process_sort_index", fp, fp): {"sort_index": -1},
                    ("process_name", 100, 100): {"name": "writer"},
                    ("thread_name", 100, 100): {"name": "writer"},
                    ("process_name", 200, 200): {"name": "other"},
                    ("thread_name", 200, 200): {"name": "other"}}
    counters = [(e["name"], e["ts"], e["args"][perfetto.COUNTER_SERIES])
                for e in doc["traceEvents"] if e["ph"] == "C"]
    assert all(e["pid"] == fp for e in doc["traceEvents"] if e["ph"] == "C")
    # Faults per second, each second at its start; 0 where a second had none.
    assert counters == [("/mnt/dax/f", 1e6, 2), ("/mnt/dax/f", 2e6, 0), ("/mnt/dax/f", 3e6, 1),
                        ("/mnt/dax/f", 4e6, 0), ("/mnt/dax/g (deleted)", 4e6, 1),
                        ("/mnt/dax/g (deleted)", 5e6, 0)]


def test_report_filters_select_the_slices(rec_path, tmp_path):
    doc, _ = trace_of(rec_path, tmp_path, "--verdict", "missed")
    assert [s["args"]["page"] for s in slices(doc)] == [2]
    doc, _ = trace_of(rec_path, tmp_path, "--file", "/g")
    assert [s["args"]["file"] for s in slices(doc)] == ["/mnt/dax/g (deleted)"]
    trace_event_spec.check(doc)


def test_exposure_windows_are_async_slices_and_exposed_stats_instants(tmp_path):
    """The exposure recording of test_report: four windows, each one async
    slice from its fault to its close, named after its file; rsync's
    exposed stat one instant, with the page then open."""
    from test_report import exposure_recording

    doc, r = trace_of(exposure_recording(tmp_path / "e.pft"), tmp_path)
    phases = trace_event_spec.check(doc)
    ep = perfetto.EXPOSURE_PID
    windows = {(e["args"]["file"], e["args"]["page"]): (e["ts"], e["args"]["closed_by"],
                                                          e["args"]["opened_by_pid"],
                                                          e["args"]["closed_by_pid"])
               for e in phases["b"]}
    ends = {e["id"]: e["ts"] for e in phases["e"]}
    assert all(e["pid"] == ep and e["cat"] == "exposure" for e in phases["b"] + phases["e"])
    assert windows == {("/mnt/dax/f", 0): (1e6, "writeback", 100, 100),
                       ("/mnt/dax/f", 1): (1e6 + 5, "writeback", 100, 100),
                       ("/mnt/dax/f", 2): (3e6, "writeback", 100, 100),
                       ("/mnt/dax/g", 5): (4e6, "unmap", 200, 200)}
    assert sorted(ends.values()) == [4.5e6, 5e6, 5e6, 5e6]
    (stat,) = [e for e in phases["i"] if e["cat"] == "exposure"]
    assert (stat["name"], stat["s"], stat["pid"], stat["ts"]) == ("exposed stat", "p", ep,
                                                                  1e6 + 1.5)
    assert (stat["args"]["observer_pid"], stat["args"]["observer_comm"],
            stat["args"]["open_pages"]) == (300, "rsync", [0])
    assert ("%s: 4 write faults, 1 timestamp moves, 6 counter samples, 4 write-exposure "
            "windows, 1 exposed stats (open it in https://ui.perfetto.dev)\n"
            % (tmp_path / "trace.json")) == r.stderr
    # --file keeps the windows of the files it selects.
    doc, _ = trace_of(exposure_recording(tmp_path / "e.pft"), tmp_path, "--file", "/g")
    assert [e["args"]["page"] for e in doc["traceEvents"] if e["ph"] == "b"] == [5]


def test_a_window_open_at_the_end_ends_with_the_recording(tmp_path):
    """g's window is never closed: its slice ends when the recording ended
    (6 s), in the forked writer report uses on a real file too."""
    from test_report import exposure_recording

    doc, r = trace_of(exposure_recording(tmp_path / "e.pft", unmap_g=False), tmp_path)
    phases = trace_event_spec.check(doc)
    (begun,) = [e for e in phases["b"] if e["args"]["file"] == "/mnt/dax/g"]
    (ended,) = [e for e in phases["e"] if e["id"] == begun["id"]]
    assert (begun["args"]["closed_by"], begun["args"]["closed_by_pid"]) == ("open", None)
    assert (begun["ts"], ended["ts"]) == (4e6, 6e6)


def test_stdout(rec_path):
    r = cli("report", "--perfetto", "-", str(rec_path))
    assert r.exit_code == 0 and r.stderr == ""
    assert len(slices(json.loads(r.stdout))) == 4


def test_times_are_exact_microseconds(rec_path, tmp_path):
    trace_of(rec_path, tmp_path)
    text = (tmp_path / "trace.json").read_text()
    # The CURRENT fault: 1 s + 5 us, 9 us; the MISSED one lasted 1.5 us.
    assert '"ts":1000005.000,"dur":9.000,' in text and '"dur":1.500,' in text


def test_a_fault_behind_the_counter_window_counts_in_the_next_open_second():
    out = []
    c = perfetto._Counters(out.append)
    fs = correlate.FileStats(1, 2, "/f", 0)
    for second in (0, 0, 1, 20):
        c.add(fs, second * NS)
    # At 20 s the seconds up to 10 were written (0 and 1): a fault of second
    # 1 now counts in second 2.
    c.add(fs, 1 * NS)
    c.flush()
    samples = [(json.loads(e)["ts"], json.loads(e)["args"]["write faults/s"]) for e in out]
    assert samples == [(0, 2), (1e6, 1), (2e6, 1), (3e6, 0), (20e6, 1), (21e6, 0)]


def test_stream_gives_the_faults_and_aggregates_of_analyse(rec_path):
    with Recording.open(rec_path) as rec:
        kept = correlate.analyse(rec)
    with Recording.open(rec_path) as rec:
        an, faults = correlate.stream(rec)
        streamed = [f.as_dict() for f in faults]
    with Recording.open(rec_path) as rec:
        an2, batches = correlate.stream_batches(rec)
        rows = [correlate.Fault(row, an2).as_dict() for b in batches for row in b]
    assert streamed == rows == [f.as_dict() for f in kept.faults]
    assert an.summary() == kept.summary()
    assert an.problems == [] and an.invisible == []      # nothing kept
    assert an.multigrain_warning() == kept.multigrain_warning()


# -- flat memory ----------------------------------------------------------------

BLOCK = 500        # faults per EVENTS block


def _big_recording(path, blocks):
    """blocks x BLOCK write faults, one second per block, 4 threads, 3 files."""
    tmpl = b"".join(fault(i * (NS // BLOCK), T0, T0 + i, ino=12 + i % 3, pgoff=i,
                          pid=100 + i % 4) for i in range(BLOCK))
    size = layout.EVENT_SIZE
    off = layout.ffi.offsetof("struct pft_event", "ts_ns")
    q = struct.Struct("=Q")
    base = [q.unpack_from(tmpl, i * size + off)[0] for i in range(BLOCK)]
    w = RecordingWriter.create(path, HEADER)
    w.add_meta(META)
    buf = bytearray(tmpl)
    for b in range(blocks):
        for i, ts in enumerate(base):
            q.pack_into(buf, i * size + off, ts + b * NS)
        w.add_events(bytes(buf))
    w.close({"duration_ns": blocks * NS, "exit_code": 0})
    return path


def _peak(path):
    with Recording.open(path) as rec:
        gc.collect()
        tracemalloc.start()
        try:
            an, batches = correlate.stream_batches(rec)
            with open(os.devnull, "w") as out:
                counts = perfetto.write(out, an, batches)
            return tracemalloc.get_traced_memory()[1], counts["slices"]
        finally:
            tracemalloc.stop()


def test_memory_does_not_grow_with_the_recording(tmp_path):
    small, n_small = _peak(_big_recording(tmp_path / "small.pft", 16))
    big, n_big = _peak(_big_recording(tmp_path / "big.pft", 96))
    assert (n_small, n_big) == (16 * BLOCK, 96 * BLOCK)
    # 6x the faults, the same peak give or take (analyse() keeping the big
    # one's 48,000 faults would hold several MB more).
    assert big < small * 1.1 + 256 * 1024, (small, big)


# -- cannot write ----------------------------------------------------------------

def test_bad_path_full_disk_and_closed_pipe_are_one_line(rec_path, tmp_path):
    r = cli("report", "--perfetto", str(tmp_path / "no" / "t.json"), str(rec_path))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == "pfntrace: cannot write %s: No such file or directory\n" % (
        tmp_path / "no" / "t.json")
    r = cli("report", "--perfetto", str(tmp_path), str(rec_path))
    assert r.exit_code == 2 and r.stderr == "pfntrace: cannot write %s: Is a directory\n" % (
        tmp_path)
    p = _run(["report", "--perfetto", "/dev/full", str(rec_path)], stdout=subprocess.PIPE)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == "pfntrace: cannot write /dev/full: No space left on device\n"
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        p = _run(["report", "--perfetto", "-", str(rec_path)], stdout=w_fd)
    finally:
        os.close(w_fd)
    assert p.returncode == 2 and p.stderr == "pfntrace: cannot write output: Broken pipe\n"


def test_a_full_disk_leaves_no_half_trace(tiny_fs, tmp_path):  # noqa: F811
    rec = _big_recording(tmp_path / "r.pft", 2)
    out = tiny_fs / "t.json"
    p = _run(["report", "--perfetto", str(out), str(rec)])
    assert p.returncode == 2
    assert p.stderr == "pfntrace: cannot write %s: No space left on device\n" % out
    assert not out.exists()


def test_exclusive_options(rec_path):
    for other in (["--json"], ["--csv", "files"], ["--events"]):
        r = cli("report", "--perfetto", "t.json", *other, str(rec_path))
        assert r.exit_code == 2 and "exclusive" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_corrupt_recording_is_one_line(tmp_path):
    p = tmp_path / "garbage.pft"
    p.write_bytes(b"not a recording\n" * 10)
    r = cli("report", "--perfetto", str(tmp_path / "t.json"), str(p))
    assert r.exit_code == 2 and r.stderr == "pfntrace: %s is not a pfntrace recording\n" % p
    assert not (tmp_path / "t.json").exists()


def test_a_truncated_recording_is_written_and_warned(tmp_path):
    p = write_recording(tmp_path / "t.pft")
    p.write_bytes(p.read_bytes()[:-40])          # tear the trailer block
    doc, r = trace_of(p, tmp_path)
    assert len(slices(doc)) == 4
    warning, done = r.stderr.splitlines()
    assert warning.startswith("pfntrace: warning: %s: the recording is truncated" % p)
    assert done.endswith("(open it in https://ui.perfetto.dev)")
    assert doc["otherData"]["warnings"][0].startswith("the recording is truncated")


# -- two processes -----------------------------------------------------------------

def _one_and_two(rec_path, tmp_path):
    with Recording.open(rec_path) as rec, open(tmp_path / "one.json", "w") as out:
        an, batches = correlate.stream_batches(rec)
        one = perfetto.write(out, an, batches)
    with Recording.open(rec_path) as rec, open(tmp_path / "two.json", "w") as out:
        an, batches = correlate.stream_batches(rec)
        two = perfetto.write_forked(out, an, batches)
    return one, two


@pytest.mark.parametrize("blocks", [None, 16])
def test_two_processes_write_what_one_does(rec_path, tmp_path, blocks):
    if blocks:
        rec_path = _big_recording(tmp_path / "big.pft", blocks)
    one, two = _one_and_two(rec_path, tmp_path)
    assert one == two and one["slices"] == (blocks * BLOCK if blocks else 4)
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_an_error_while_correlating_is_raised_after_the_writer_exits(rec_path, tmp_path):
    def failing(batches):
        for rows in batches:
            yield rows
            raise RecordingError("EVENTS block 2: bad CRC")

    before = _children()
    with Recording.open(_big_recording(tmp_path / "big.pft", 16)) as rec, \
            open(tmp_path / "t.json", "w") as out:
        an, batches = correlate.stream_batches(rec)
        with pytest.raises(RecordingError, match="bad CRC"):
            perfetto.write_forked(out, an, failing(batches))
    # The writer was waited for: not even a zombie of it is left.  (Not
    # waitpid(-1): the lab's guests are this process's children too.)
    assert _children() == before


def _children():
    """This thread's children, zombies included (the kernel lists a child
    until its parent has waited for it)."""
    with open("/proc/self/task/%d/children" % threading.get_native_id()) as f:
        return set(f.read().split())


def test_a_writer_that_dies_is_an_error_not_a_short_trace(tmp_path):
    def killing(batches):
        for i, rows in enumerate(batches):
            if i == 1:      # the writer has started: kill it
                with open("/proc/self/task/%d/children" % os.getpid()) as f:
                    (child,) = [int(p) for p in f.read().split()]
                os.kill(child, signal.SIGKILL)
            yield rows

    with Recording.open(_big_recording(tmp_path / "big.pft", 16)) as rec, \
            open(tmp_path / "t.json", "w") as out:
        an, batches = correlate.stream_batches(rec)
        with pytest.raises(OSError, match=r"the trace writer \(pid \d+\) died: signal 9"):
            perfetto.write_forked(out, an, killing(batches))
