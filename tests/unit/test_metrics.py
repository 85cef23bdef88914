"""Issue 13: the exporter's metric families from a synthetic counter
snapshot (names, labels, log2 -> cumulative le buckets in seconds, the
per-file cap), its textfile writes (atomic), and its bad input."""

import os
import threading

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from pfntrace import aggregate, tracer
from pfntrace.tracer import LOST_REASONS
from pfntrace.cli import main
from pfntrace.commands.common import Fail
from pfntrace.commands.exporter import DEFAULT_LISTEN, parse_listen
from pfntrace.views import metrics

DAX = (259, 0)
DEV = tracer.kernel_dev(*DAX)
OTHER = tracer.kernel_dev(8, 1)
MOUNTS = {DAX: ("/mnt/dax", "ext4")}


def counts(pfn=0, page=0, lat=None, lat_sum=0, verdicts=None, invisible=0):
    c = aggregate.Counts()
    c.kinds[0], c.kinds[1] = pfn, page
    c.total = pfn + page
    for i, n in (lat or {}).items():
        c.lat[i] = n
    c.lat_sum = lat_sum
    for i, n in (verdicts or {}).items():
        c.verdicts[i] = n
    c.invisible = invisible
    return c


def snapshot():
    s = aggregate.Snapshot(mono_ns=1)
    # 23 pfn_mkwrite faults of one file, one more on a second file; durations
    # 1 us-ish (bit length 10 and 11) and one of 0 ns.
    s.files[(DEV, 13)] = counts(pfn=23, lat={10: 20, 11: 3}, lat_sum=23_000,
                                verdicts={0: 1, 1: 22})
    s.files[(DEV, 14)] = counts(pfn=1, lat={0: 1}, verdicts={2: 1}, invisible=1)
    s.files[(OTHER, 5)] = counts(page=2, lat={31: 2}, lat_sum=4 * 10**9, verdicts={0: 2})
    s.lost_by_reason = {"wp_return_missed": 2, "skipped_by_kernel": 1}
    s.lost = 3
    return s


def parsed(fams):
    text = metrics.exposition(fams).decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam, name=None, **labels):
    return [s for s in fam.samples
            if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def one(fam, name=None, **labels):
    (s,) = samples(fam, name, **labels)
    return s.value


def test_log2_buckets_become_cumulative_le_in_seconds():
    lat = [0] * aggregate.NBUCKETS
    lat[0], lat[1], lat[10], lat[31] = 1, 2, 4, 8
    b = metrics.latency_buckets(lat)
    assert len(b) == aggregate.NBUCKETS
    # bucket b holds durations of bit length b: at most 2**b - 1 ns.
    assert b[0] == ("0.0", 1)
    assert b[1] == ("1e-09", 3)
    assert b[10] == (repr(1023 / 1e9), 7)
    assert float(b[30][0]) == (2**30 - 1) / 1e9 and b[30][1] == 7
    assert b[-1] == ("+Inf", 15)
    counts_ = [n for _, n in b]
    assert counts_ == sorted(counts_)


def test_families_names_labels_and_values():
    text, fams = parsed(metrics.families(snapshot(), MOUNTS, "0.1.0", "6.12.0-test"))
    assert set(fams) == {"pfntrace_write_faults", "pfntrace_verdicts",
                         "pfntrace_handler_latency_seconds", "pfntrace_invisible_writes",
                         "pfntrace_lost_events", "pfntrace_build_info"}
    wf = fams["pfntrace_write_faults"]
    assert wf.type == "counter"
    assert one(wf, kind="pfn_mkwrite", mount="/mnt/dax", fs="ext4") == 24
    assert one(wf, kind="page_mkwrite", mount="/mnt/dax") == 0
    # A device not mounted with DAX: named by its numbers, no filesystem.
    assert one(wf, kind="page_mkwrite", mount="8:1", fs="") == 2
    assert {s.name for s in wf.samples} == {"pfntrace_write_faults_total"}
    assert len(wf.samples) == 2 * 5
    v = fams["pfntrace_verdicts"]
    assert one(v, mount="/mnt/dax", verdict="CURRENT") == 22
    assert one(v, mount="/mnt/dax", verdict="MISSED") == 1
    h = fams["pfntrace_handler_latency_seconds"]
    assert h.type == "histogram"
    assert one(h, "pfntrace_handler_latency_seconds_count", mount="/mnt/dax") == 24
    assert one(h, "pfntrace_handler_latency_seconds_sum", mount="/mnt/dax") == 23e-6
    assert one(h, "pfntrace_handler_latency_seconds_bucket", mount="/mnt/dax", le="0.0") == 1
    assert one(h, "pfntrace_handler_latency_seconds_bucket", mount="/mnt/dax",
               le="1.023e-06") == 21
    assert one(h, "pfntrace_handler_latency_seconds_bucket", mount="8:1", le="+Inf") == 2
    assert one(fams["pfntrace_invisible_writes"], mount="/mnt/dax") == 1
    # Lost by reason, every reason a series (zeros too), summing to the total.
    lost = {s.labels["reason"]: s.value for s in fams["pfntrace_lost_events"].samples
            if s.name == "pfntrace_lost_events_total"}
    assert set(lost) == set(LOST_REASONS) and sum(lost.values()) == 3
    assert (lost["wp_return_missed"], lost["skipped_by_kernel"], lost["ring_full"]) == (2, 1, 0)
    assert samples(fams["pfntrace_build_info"], version="0.1.0", kernel="6.12.0-test")
    # No inode, pid or path label anywhere by default.
    labels = {k for f in fams.values() for s in f.samples for k in s.labels}
    assert labels == {"mount", "fs", "kind", "verdict", "le", "version", "kernel", "reason"}
    assert text.endswith("\n")


def test_no_files_yet_still_exports_lost_and_build_info():
    _, fams = parsed(metrics.families(aggregate.Snapshot(mono_ns=1), {}, "0.1.0", "k"))
    assert {s.value for s in fams["pfntrace_lost_events"].samples} == {0}
    assert fams["pfntrace_write_faults"].samples == []


def test_per_file_series_are_capped():
    snap = snapshot()
    for ino in range(100, 130):
        snap.files[(DEV, ino)] = counts(pfn=ino - 99)
    paths = {(DEV, 129): "/mnt/dax/big"}
    _, fams = parsed(metrics.families(snap, MOUNTS, "v", "k", per_file=3, paths=paths))
    ff = fams["pfntrace_file_write_faults"]
    files = {s.labels["path"] for s in ff.samples}
    # The three with the most faults: 30 (named), 29 and 28 (unnamed: ino).
    assert files == {"/mnt/dax/big", "ino 128", "ino 127"}
    assert one(ff, path="/mnt/dax/big", kind="pfn_mkwrite") == 30
    assert len(fams["pfntrace_file_verdicts"].samples) == 3 * 5
    # Without --per-file there is none.
    _, fams = parsed(metrics.families(snap, MOUNTS, "v", "k"))
    assert "pfntrace_file_write_faults" not in fams


def test_dax_mounts_by_dev():
    mountinfo = (
        "22 1 259:0 / /mnt/dax rw,relatime shared:1 - ext4 /dev/pmem0 rw,dax=always\n"
        "23 1 8:1 / / rw,relatime shared:2 - ext4 /dev/sda1 rw\n"
        "24 1 259:1 / /mnt/x\\040y rw - xfs /dev/pmem1 rw,dax=always\n")
    assert metrics.dax_mounts_by_dev(mountinfo) == {(259, 0): ("/mnt/dax", "ext4"),
                                                    (259, 1): ("/mnt/x y", "xfs")}


def test_textfile_write_is_atomic(tmp_path):
    """A reader polling the file while it is rewritten sees one whole
    version or another, never a mix or a part; no temporary file is left."""
    versions = [(b"# version %d\n" % i) + b"x" * (i * 4096) + b"\nend\n" for i in range(40)]
    stop = threading.Event()
    seen = []

    def reader():
        path = tmp_path / metrics.TEXTFILE_NAME
        while not stop.is_set():
            try:
                seen.append(path.read_bytes())
            except FileNotFoundError:
                pass

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in versions * 3:
            metrics.write_atomically(str(tmp_path), metrics.TEXTFILE_NAME, v)
    finally:
        stop.set()
        t.join()
    assert seen and all(s in versions for s in seen)
    assert os.listdir(tmp_path) == [metrics.TEXTFILE_NAME]
    assert (tmp_path / metrics.TEXTFILE_NAME).stat().st_mode & 0o777 == 0o644


def test_textfile_write_failure_leaves_no_temporary(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        metrics.write_atomically(str(tmp_path), metrics.TEXTFILE_NAME, b"x\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:10813", ("127.0.0.1", 10813)),
    (":9999", ("0.0.0.0", 9999)),
    ("[::1]:10813", ("::1", 10813)),
    ("localhost:1", ("localhost", 1)),
    (DEFAULT_LISTEN, ("0.0.0.0", 10813)),
])
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text,line", [
    ("10813", "--listen 10813: want HOST:PORT, [IPV6]:PORT or :PORT"),
    ("127.0.0.1:0", "--listen 127.0.0.1:0: the port must be 1 to 65535, not '0'"),
    ("127.0.0.1:http", "--listen 127.0.0.1:http: the port must be 1 to 65535, not 'http'"),
    ("::1:80", "--listen ::1:80: an IPv6 address goes in brackets: [::1]:PORT"),
])
def test_parse_listen_refuses(text, line):
    with pytest.raises(Fail) as e:
        parse_listen(text)
    assert e.value.format_message() == line


def _cli(*args):
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 2 and r.stdout == "", (r.exit_code, r.output)
    (line,) = r.stderr.splitlines()
    return line


@pytest.mark.parametrize("args,line", [
    (["--listen", "nowhere"], "pfntrace: --listen nowhere: want HOST:PORT, [IPV6]:PORT or :PORT"),
    (["--textfile", "/nonexistent/dir"], "pfntrace: --textfile /nonexistent/dir: not a directory"),
    (["--textfile", "/tmp", "--listen", ":1"],
     "pfntrace: --listen and --textfile exclude each other: serve, or write a file"),
    (["--interval", "0", "--textfile", "/tmp"],
     "pfntrace: exporter: Invalid value for '--interval': must be a finite number above 0 "
     "and at most 86400, not 0"),
    (["--max-files", "0", "--per-file"],
     "pfntrace: exporter: Invalid value for '--max-files': must be an integer from 1 to "
     "100000, not 0"),
])
def test_exporter_bad_input_is_one_line(args, line):
    assert _cli("exporter", *args) == line


RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "contrib", "prometheus", "pfntrace-alerts.yml")
RULE_TESTS = """\
rule_files: [%s]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'pfntrace_verdicts_total{instance="db1:10813",mount="/mnt/dax",verdict="MISSED"}'
        values: '0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'pfntrace_verdicts_total{instance="db1:10813",mount="/mnt/dax",verdict="NO_NOTIFIER"}'
        values: '0x18'
      - series: 'pfntrace_lost_events_total{instance="db1:10813",reason="ring_full"}'
        values: '0x18'
    alert_rule_test:
      - eval_time: 2m
        alertname: PfntraceMissedTimestampUpdate
        exp_alerts: []
      - eval_time: 5m
        alertname: PfntraceMissedTimestampUpdate
        exp_alerts:
          - exp_labels: {severity: warning, instance: "db1:10813", mount: /mnt/dax,
                         verdict: MISSED}
            exp_annotations:
              summary: "db1:10813: writes through mmap on /mnt/dax left stale mtime/ctime"
              description: "3 write faults on /mnt/dax in the last 10 minutes were judged MISSED by pfntrace: backup and sync tools that trust mtime will not see those writes. `pfntrace check` or `pfntrace record` on the host names the files."
      - eval_time: 16m
        alertname: PfntraceMissedTimestampUpdate
        exp_alerts: []
      - eval_time: 5m
        alertname: PfntraceNoNotifier
        exp_alerts: []
      - eval_time: 5m
        alertname: PfntraceLostEvents
        exp_alerts: []
"""


def test_sample_alert_rules(tmp_path):
    """promtool accepts the sample rules, and they fire on a MISSED
    increase and only then (promtool's own rule unit tests)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    p = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert p.returncode == 0 and "SUCCESS: 3 rules found" in p.stdout, p.stdout + p.stderr
    tests = tmp_path / "tests.yml"
    tests.write_text(RULE_TESTS % RULES)
    p = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_textfile_loop_writes_each_interval(tmp_path):
    from pfntrace.commands.exporter import _textfile_loop

    reads = []

    def read():
        reads.append(1)
        return metrics.families(snapshot(), MOUNTS, "v", "k")

    _textfile_loop(metrics.registry(read), str(tmp_path), 0.01, 3)
    assert len(reads) == 3
    assert os.listdir(tmp_path) == [metrics.TEXTFILE_NAME]
    text = (tmp_path / metrics.TEXTFILE_NAME).read_text()
    assert text == metrics.exposition(read()).decode()


def test_textfile_loop_fails_in_one_line(tmp_path):
    from pfntrace.commands.exporter import _textfile_loop

    gone = tmp_path / "gone"
    with pytest.raises(Fail) as e:
        _textfile_loop(metrics.registry(lambda: []), str(gone), 0.01, 1)
    assert e.value.format_message() == "--textfile %s: No such file or directory" % gone
