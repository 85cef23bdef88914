"""pfntrace report: rich text (golden), JSON contract, CSV tables, CLI errors."""

import csv
import io
import json
import os
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from pfntrace import correlate, layout
from pfntrace.cli import main
from pfntrace.findings import findings
from pfntrace.recording import Recording, RecordingWriter
from pfntrace.recording import format as recfmt
from pfntrace.views import export, report

C = layout.const
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
DEV = (259 << 20) | 3
IN_WP, DAX = C("PFT_F_IN_WP"), C("PFT_F_INODE_DAX")
R_PFN = C("PFT_ROLE_PFN_MKWRITE")
EXT4 = C("PFT_ROLE_FAULT") | C("PFT_ROLE_PAGE_MKWRITE") | R_PFN

HEADER = {
    "kernel": "6.12.117+deb12-amd64",
    "command": ["./writer", "/mnt/dax/f"],
    "clock": {"realtime_minus_monotonic_ns": T0, "tick_ns": 4_000_000},
    "plan": {"huge_fault_arg_is_order": True,
             "clock": {"status": "read", "symbol": "tk_core", "tk_base": 1, "mg_floor": 0,
                       "why": "tk_core in /proc/kallsyms"},
             "hooks": [
        {"hook": "do_wp_page", "kind": "kprobe", "status": "attach", "why": ""},
        {"hook": "do_wp_page", "kind": "kretprobe", "status": "attach", "why": ""},
        {"hook": "ext4_dax_fault", "kind": "kprobe", "status": "attach", "why": ""},
        {"hook": "xfs_filemap_pfn_mkwrite", "kind": "kprobe", "status": "missing",
         "why": "not loaded"},
        {"hook": "ext2_dax_fault", "kind": "kprobe", "status": "n/a",
         "why": "no ext2 filesystem is mounted (its module is not loaded)"},
        {"hook": "ext2_dax_fault", "kind": "kretprobe", "status": "n/a",
         "why": "no ext2 filesystem is mounted (its module is not loaded)"},
        {"hook": "vfs_getattr_nosec", "kind": "kprobe", "status": "attach", "why": ""},
        {"hook": "vfs_getattr_nosec", "kind": "kretprobe", "status": "attach", "why": ""},
    ]},
}
META = {"files": {"259:3:12": {"path": "/mnt/dax/f"}, "259:3:13": {"path": "/mnt/dax/g"}},
        "procs": {"100": {"comm": "writer", "cmdline": "./writer /mnt/dax/f"}},
        "clock_samples": [[0, T0]], "symbols": {"0xffffffffc0a01230": "ext4_dax_fault"}}


def _ts(ns):
    s, n = divmod(ns, NS)
    return s, n


FILE = C("PFT_F_FILE")
SHARED = C("PFT_VM_SHARED")
TICK = 4_000_000


def fault(ts, before, after, ino=12, pgoff=0, pid=100, comm="writer", dur=3000, **kw):
    """A do_wp_page return on a DAX file with ->pfn_mkwrite; the kernel's
    clock reads the coarse tick of ts."""
    (s0, n0), (s1, n1) = _ts(before), _ts(after)
    coarse = T0 + ts - ts % TICK
    fields = dict(type=C("PFT_EV_WP"), ts_ns=ts, duration_ns=dur,
                  dev=DEV, ino=ino, pgoff=pgoff, pid=pid, tid=pid, comm=comm,
                  flags=FILE | DAX, vm_flags=SHARED, fault_flags=3, ret=0x100,
                  ops_pfn_mkwrite=0xffffffffc0a01230, clock_ns=[coarse, coarse], time_gran=1,
                  mtime_sec=[s0, s1], mtime_nsec=[n0, n1],
                  ctime_sec=[s0, s1], ctime_nsec=[n0, n1], ftu_calls=int(before != after))
    fields.update(kw)
    return layout.encode(**fields)


def getattr_ev(ts, shown, ino=12, pid=300, comm="rsync", dur=500):
    """A stat of the file by another process, which was shown `shown`."""
    s, n = _ts(shown)
    return layout.encode(type=C("PFT_EV_GETATTR"), ts_ns=ts, duration_ns=dur, dev=DEV,
                         ino=ino, pid=pid, tid=pid, comm=comm, flags=FILE | DAX,
                         mtime_sec=[s, 0], mtime_nsec=[n, 0], ctime_sec=[s, 0],
                         ctime_nsec=[n, 0])


def stream():
    t1 = T0 + 1 * NS
    return [
        fault(1 * NS, T0, t1, pgoff=0),                        # UPDATED
        fault(1 * NS + 5000, t1, t1, pgoff=1, dur=9000),       # CURRENT (same tick)
        fault(3 * NS, t1, t1, pgoff=2, dur=1500),              # MISSED
        layout.encode(type=C("PFT_EV_WP"), ts_ns=4 * NS, dev=DEV, ino=13,
                      pgoff=5, pid=200, tid=200, comm="other", flags=FILE,
                      vm_flags=C("PFT_VM_SHARED") | C("PFT_VM_MIXEDMAP")),  # NO_NOTIFIER
        layout.encode(type=C("PFT_EV_DAX_WRITEBACK"), ts_ns=5 * NS, dev=DEV, ino=12,
                      arg=3, pid=100, tid=100, comm="writer"),
        layout.encode(type=C("PFT_EV_DAX_FAULT"), ts_ns=1 * NS, dev=DEV, ino=12,
                      fault_flags=3, pid=100, tid=100, comm="writer"),
    ]


def observed_stream():
    """stream() with another process's stats in between: the CURRENT and
    the MISSED write leave the timestamps as the second stat saw them."""
    t1 = T0 + 1 * NS
    events = stream()
    events.insert(0, getattr_ev(NS // 2, T0))       # saw the old mtime: the UPDATED shows
    events.insert(2, getattr_ev(1 * NS + 1000, t1))  # saw the new one: the next two cannot
    return events


def write_recording(path, events=None, trailer=None):
    w = RecordingWriter.create(path, HEADER)
    w.add_meta(META)
    w.add_events(b"".join(stream() if events is None else events))
    w.set_lost([0, 2])
    w.close(trailer if trailer is not None else {
        "duration_ns": 6 * NS, "exit_code": 0,
        "statx": {"259:3:12": {"path": "/mnt/dax/f", "exists": True,
                               "mtime_ns": T0 + NS, "ctime_ns": T0 + NS},
                  "259:3:13": {"path": "/mnt/dax/g", "exists": False}}})
    return path


@pytest.fixture
def rec_path(tmp_path):
    return write_recording(tmp_path / "run.pft", events=observed_stream())


@pytest.fixture
def analysis(rec_path):
    with Recording.open(rec_path) as rec:
        return correlate.analyse(rec)


GOLDEN = """\
pfntrace report

  recording           run.pft
  kernel              6.12.117+deb12-amd64
  command             ./writer /mnt/dax/f
  duration            6.000 s
  exit code           0
  events              8 (WP 4, DAX_FAULT 1, DAX_WRITEBACK 1, GETATTR 2)
  write faults        4: pfn_mkwrite 3, page_mkwrite 0, pmd 0, first-touch 0, no notifier 1
  verdicts            UPDATED 1  CURRENT 1  MISSED 1  NO_NOTIFIER 1
  invisible writes    2 of 4 write faults left mtime and ctime as the last stat before them saw them (2 stats of traced files)
  exposed stats       unknown: a recording made without write-exposure windows
  other               reads 0, retries 0, PMD fallbacks 0, do_wp_page 4, MAP_SYNC 0, re-protects 1 (3 pages)
  fs_dax tracepoints  pte 1, pmd 0, write 1
  lost events         2 (per CPU: 0, 2)

probe plan

 attached (3)
   do_wp_page               kprobe+kretprobe
   ext4_dax_fault           kprobe
   vfs_getattr_nosec        kprobe+kretprobe
 not applicable here (1)
   ext2_dax_fault           kprobe+kretprobe  no ext2 filesystem is mounted (its module is not loaded)
 missing (1)
   xfs_filemap_pfn_mkwrite  kprobe            not loaded
 huge_fault_arg_is_order                      True

files
/mnt/dax/f
  writes 3 pfn_mkwrite 3 re-protects 1 · UPDATED 1 CURRENT 1 MISSED 1 · invisible 2 · final mtime equal 22:13:21.000
/mnt/dax/g (deleted)
  writes 1 · NO_NOTIFIER 1 · final mtime deleted

processes

  pid  comm    writes  reads  files  invis  verdicts
  ──────────────────────────────────────────────────
  100  writer       3      0      1      2  UPDATED 1  CURRENT 1  MISSED 1
  200  other        1      0      1      0  NO_NOTIFIER 1

invisible writes
+0.000s pid 100 (writer) /mnt/dax/f page 1: mtime 2023-11-14 22:13:21.000000000 and ctime unchanged since pid 300 (rsync) read them 3.5 us
    before the write: a tool comparing timestamps cannot see it (CURRENT)
+2.000s pid 100 (writer) /mnt/dax/f page 2: mtime 2023-11-14 22:13:21.000000000 and ctime unchanged since pid 300 (rsync) read them 2.000 s
    before the write: a tool comparing timestamps cannot see it (MISSED)

latency of write faults, entry to return (log2 histogram)
                   nsecs : count     distribution
      1024 -> 2047       : 1        |****************************************|
      2048 -> 4095       : 1        |****************************************|
      4096 -> 8191       : 0        |                                        |
      8192 -> 16383      : 1        |****************************************|
write faults

    time  pid  tid  comm    file        page  kind         verdict      latency  ftu  detail
 ───────────────────────────────────────────────────────────────────────────────────────────
 +0.000s  100  100  writer  /mnt/dax/f     0  pfn_mkwrite  UPDATED       3.0 us    1  mtime 2023-11-14 22:13:20.000000000 ->
                                                                                      2023-11-14 22:13:21.000000000 (ext4_dax_fault)
 +0.000s  100  100  writer  /mnt/dax/f     1  pfn_mkwrite  CURRENT       9.0 us    0  mtime 2023-11-14 22:13:21.000000000 already equal to
                                                                                      the kernel's clock during the fault
                                                                                      (2023-11-14 22:13:21.000000000) (ext4_dax_fault);
                                                                                      INVISIBLE: mtime 2023-11-14 22:13:21.000000000 and
                                                                                      ctime unchanged since pid 300 (rsync) read them 3.5 us
                                                                                      before the write: a tool comparing timestamps cannot
                                                                                      see it (CURRENT)
 +2.000s  100  100  writer  /mnt/dax/f     2  pfn_mkwrite  MISSED        1.5 us    0  mtime stayed at 2023-11-14 22:13:21.000000000, 2.000 s
                                                                                      before the kernel's clock at the fault
                                                                                      (2023-11-14 22:13:23.000000000) (ext4_dax_fault),
                                                                                      file_update_time not called; INVISIBLE: mtime
                                                                                      2023-11-14 22:13:21.000000000 and ctime unchanged
                                                                                      since pid 300 (rsync) read them 2.000 s before the
                                                                                      write: a tool comparing timestamps cannot see it
                                                                                      (MISSED)
 +3.000s  200  200  other   /mnt/dax/g     5  no_notifier  NO_NOTIFIER     0 ns    0  made writable without ->pfn_mkwrite: the filesystem
                                                                                      was not told

"""


def test_golden_text(analysis):
    # Laid out by pfntrace, not by rich (views/wrap.py): the same text under
    # any rich, so no rich_golden mark.
    console = Console(record=True, width=140, color_system=None, force_terminal=False,
                      file=io.StringIO())
    report.render(console, analysis, events=True, source="run.pft")
    text = console.export_text()
    got = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    assert got == GOLDEN


def test_golden_text_at_80_columns(analysis):
    """The common terminal: nothing cut (every line whole, no ellipsis),
    files and faults as lines, continuation lines indented, the plan
    grouped.  Not rich's layout: the same text under any rich."""
    console = Console(record=True, width=80, color_system=None, force_terminal=False,
                      file=io.StringIO())
    report.render(console, analysis, events=True, source="run.pft")
    got = "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
    path = os.path.join(os.path.dirname(__file__), "data", "report_80.txt")
    if os.environ.get("PFNTRACE_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(got)
    with open(path) as f:
        assert got == f.read()
    assert max(map(len, got.splitlines())) <= 80 and "…" not in got
    for whole in ("/mnt/dax/f", "/mnt/dax/g (deleted)", "not applicable here (1)",
                  "UPDATED 1  CURRENT 1  MISSED 1"):
        assert whole in got


def test_missed_is_bold_red(analysis):
    console = Console(record=True, width=140, force_terminal=True, color_system="standard",
                      file=io.StringIO())
    console.print(report.files_table(analysis))
    styled = console.export_text(styles=True)
    assert re.search(r"\x1b\[1;31m *1\x1b\[0m", styled)


def test_json_contract(analysis):
    doc = json.loads(export.to_json(analysis))
    s = doc["summary"]
    for k in ("write_faults", "pfn_mkwrite", "page_mkwrite", "lost", "verdicts"):
        assert k in s
    assert s["write_faults"] == 4 and s["pfn_mkwrite"] == 3 and s["lost"] == 2
    assert s["verdicts"] == {"UPDATED": 1, "CURRENT": 1, "MISSED": 1, "NO_NOTIFIER": 1,
                             "UNDECIDED": 0}
    assert s["kernel"] == "6.12.117+deb12-amd64" and s["truncated"] is False
    files = {f["path"]: f for f in doc["files"]}
    f = files["/mnt/dax/f"]
    assert (f["dev"], f["ino"], f["write_faults"], f["pfn_mkwrite"]) == ("259:3", 12, 3, 3)
    assert f["verdicts"]["MISSED"] == 1 and f["final_vs_last_fault"] == "equal"
    assert f["reprotects"] == 1 and f["reprotect_pages"] == 3 and f["dax_pte_faults"] == 1
    assert files["/mnt/dax/g"]["deleted"] is True
    procs = {p["pid"]: p for p in doc["processes"]}
    assert procs[100]["write_faults"] == 3 and procs[200]["verdicts"]["NO_NOTIFIER"] == 1
    assert [b["count"] for b in doc["latency"]["buckets"]] == [1, 1, 0, 1]
    assert len(doc["findings"]) == 2
    assert "events" not in doc
    doc = json.loads(export.to_json(analysis, events=True))
    assert [e["verdict"] for e in doc["events"]] == ["UPDATED", "CURRENT", "MISSED",
                                                    "NO_NOTIFIER"]


@pytest.mark.parametrize("table,n,first_cols", [
    ("summary", None, ["key", "value"]),
    ("files", 2, ["path", "key", "dev", "ino", "write_faults"]),
    ("processes", 2, ["pid", "comm"]),
    ("events", 4, ["ts_ns", "kind", "verdict"]),
    ("latency", 4, ["low", "high", "count"]),
])
def test_csv_tables(analysis, table, n, first_cols):
    out = io.StringIO()
    export.write_csv(analysis, table, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][:len(first_cols)] == first_cols
    if n is not None:
        assert len(rows) == n + 1
    if table == "files":
        assert "MISSED" in rows[0] and "UPDATED" in rows[0]
    if table == "summary":
        d = dict(rows[1:])
        assert d["write_faults"] == "4" and d["MISSED"] == "1"


def test_findings_lines(analysis):
    lines = findings(analysis)
    assert lines[0].startswith("MISSED /mnt/dax/f page 2 pid 100 (writer): mtime stayed at "
                               "2023-11-14 22:13:21.000000000")
    # g is gone by the end (the trailer's statx): named as it was, marked.
    assert lines[1].startswith("NO_NOTIFIER /mnt/dax/g (deleted) page 5 pid 200 (other):")


# -- CLI --------------------------------------------------------------------

def cli(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:          # click >= 8.2 always separates stderr
        runner = CliRunner()
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_cli_text(rec_path):
    r = cli("report", str(rec_path))
    assert r.exit_code == 0, r.stderr
    assert "pfntrace report" in r.stdout and "/mnt/dax/f" in r.stdout
    assert r.stderr == ""


def test_cli_json_and_filters(rec_path):
    r = cli("report", str(rec_path), "--json", "--pid", "100", "--events")
    doc = json.loads(r.stdout)
    assert doc["summary"]["write_faults"] == 3 and len(doc["events"]) == 3
    r = cli("report", str(rec_path), "--json", "--verdict", "missed")
    assert json.loads(r.stdout)["summary"]["verdicts"]["MISSED"] == 1
    assert json.loads(r.stdout)["summary"]["write_faults"] == 1
    r = cli("report", str(rec_path), "--json", "--file", "/g")
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["/mnt/dax/g"]
    r = cli("report", str(rec_path), "--json", "--comm", "other")
    assert json.loads(r.stdout)["summary"]["no_notifier"] == 1


def test_cli_csv(rec_path):
    r = cli("report", str(rec_path), "--csv", "events")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].startswith("ts_ns,kind,verdict")
    assert len(r.stdout.splitlines()) == 5


def _one_line_error(r):
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pfntrace: "), r.stderr
    return lines[0]


def test_cli_missing_file(tmp_path):
    line = _one_line_error(cli("report", str(tmp_path / "nope.pft")))
    assert "nope.pft" in line


def test_cli_garbage_file(tmp_path):
    p = tmp_path / "garbage.pft"
    p.write_bytes(b"this is not a recording at all\n" * 10)
    line = _one_line_error(cli("report", str(p)))
    assert "not a pfntrace recording" in line


def test_cli_newer_version(tmp_path):
    p = tmp_path / "new.pft"
    payload = json.dumps({"format_version": recfmt.FORMAT_VERSION + 1}).encode()
    p.write_bytes(recfmt.FILE_MAGIC + recfmt.pack_block_header(recfmt.BLOCK_HEADER, 0, payload)
                  + payload)
    line = _one_line_error(cli("report", str(p)))
    assert "newer" in line


def test_cli_truncated_warns_and_reports(tmp_path):
    p = write_recording(tmp_path / "t.pft")
    data = p.read_bytes()
    p.write_bytes(data[:-40])                # tear the trailer block
    r = cli("report", str(p), "--json")
    assert r.exit_code == 0
    (line,) = r.stderr.splitlines()
    assert line.startswith("pfntrace: warning: ") and "truncated" in line
    doc = json.loads(r.stdout)
    assert doc["summary"]["truncated"] is True and doc["summary"]["write_faults"] == 4


def test_cli_bad_verdict(rec_path):
    r = cli("report", str(rec_path), "--verdict", "BOGUS")
    assert r.exit_code == 2 and "BOGUS" in r.stderr


def test_cli_json_and_csv_exclusive(rec_path):
    r = cli("report", str(rec_path), "--json", "--csv", "files")
    assert r.exit_code == 2


def test_narrow_console_lists_events_as_lines(analysis):
    console = Console(record=True, width=80, color_system=None, file=io.StringIO())
    report.render(console, analysis, events=True)
    text = console.export_text()
    assert "pfn_mkwrite MISSED 1.5 us ftu 0" in text
    assert "    mtime stayed at 2023-11-14 22:13:21.000000000" in text


def test_narrow_terminal_lists_files_whole(analysis):
    # An 80-column terminal (the lab's serial console) must still show
    # which file, in full, and its counts.
    console = Console(record=True, width=80, color_system=None, file=io.StringIO())
    report.render(console, analysis, source="run.pft")
    lines = console.export_text().splitlines()
    i = lines.index("/mnt/dax/f")
    assert lines[i + 1].split(" · ")[0] == "  writes 3 pfn_mkwrite 3 re-protects 1"
    assert "UPDATED 1 CURRENT 1 MISSED 1" in lines[i + 1]
    assert "/mnt/dax/g (deleted)" in lines


def test_late_probe_is_shown(analysis):
    analysis.meta["late_handlers"] = [{"hook": "nvme_mmap_pfn_mkwrite", "attached": True,
                                       "first_seen_ns": analysis.first_ts + 2 * NS}]
    text = "\n".join(line.plain for line in report.summary_lines(analysis, 140))
    assert "late probe          nvme_mmap_pfn_mkwrite attached from +2.000s" in text


def test_json_lists_invisible_writes_with_their_observer(analysis):
    doc = json.loads(export.to_json(analysis))
    assert doc["summary"]["invisible_writes"] == 2 and doc["summary"]["getattr_probed"]
    assert doc["summary"]["getattrs"] == 2
    rows = doc["invisible_writes"]
    assert [(r["pgoff"], r["verdict"], r["observer_pid"], r["observer_comm"])
            for r in rows] == [(1, "CURRENT", 300, "rsync"), (2, "MISSED", 300, "rsync")]
    # The second stat returned at 1 s + 1500 ns; the faults began at 1 s + 5000 ns and 3 s.
    assert [r["observed_ns_before"] for r in rows] == [3500, 2 * NS - 1500]
    assert [r["mtime_ns"] for r in rows] == [T0 + NS, T0 + NS]
    files = {f["path"]: f["invisible_writes"] for f in doc["files"]}
    assert files == {"/mnt/dax/f": 2, "/mnt/dax/g": 0}
    procs = {p["pid"]: p["invisible_writes"] for p in doc["processes"]}
    assert procs == {100: 2, 200: 0}
    assert not any("multigrain" in w for w in doc["warnings"])


def test_multigrain_kernel_with_an_invisible_write_is_loud(tmp_path):
    header = json.loads(json.dumps(HEADER))
    header["plan"]["clock"]["mg_floor"] = 0xffffffff82000000
    w = RecordingWriter.create(tmp_path / "mg.pft", header)
    w.add_meta(META)
    w.add_events(b"".join(observed_stream()))
    w.close({"duration_ns": 6 * NS, "exit_code": 0})
    with Recording.open(tmp_path / "mg.pft") as rec:
        an = correlate.analyse(rec)
    doc = export.to_json_dict(an)
    assert doc["summary"]["multigrain"] is True
    assert any("multigrain" in w and "2 invisible" in w for w in doc["warnings"])


def test_without_the_getattr_probe_invisible_is_unknown(tmp_path):
    header = json.loads(json.dumps(HEADER))
    header["plan"]["hooks"] = [h for h in header["plan"]["hooks"]
                               if h["hook"] != "vfs_getattr_nosec"]
    w = RecordingWriter.create(tmp_path / "old.pft", header)
    w.add_events(b"".join(stream()))
    w.close({"duration_ns": 6 * NS, "exit_code": 0})
    with Recording.open(tmp_path / "old.pft") as rec:
        an = correlate.analyse(rec)
    text = "\n".join(line.plain for line in report.summary_lines(an, 100))
    assert "unknown: getattr (vfs_getattr_nosec) was not probed" in text
    assert an.summary()["invisible_writes"] == 0 and not an.summary()["getattr_probed"]


def close_ev(ts, pgoff, pages, ino=12, pid=100, comm="writer", unmap=False):
    """A window close: written back (any task), or unmapped by pid."""
    return layout.encode(type=C("PFT_EV_CLOSE"), ts_ns=ts, dev=DEV, ino=ino, pgoff=pgoff,
                         arg=pages, pid=pid, tid=pid, comm=comm, flags=FILE | DAX | (
                             C("PFT_F_CLOSE_UNMAP") if unmap else 0))


def exposure_recording(path, unmap_g=True):
    """observed_stream() with window closes: page 0..2 of f written back at
    5 s, g's page 5 unmapped at 4.5 s (unmap_g=False: still open at the end,
    6 s); rsync's second stat exposed."""
    header = json.loads(json.dumps(HEADER))
    header["plan"]["hooks"].append({"hook": "unmap_page_range", "kind": "kprobe",
                                    "status": "attach", "why": ""})
    events = observed_stream()
    if unmap_g:
        events.insert(-2, close_ev(int(4.5 * NS), 5, 1, ino=13, pid=200, comm="other",
                                   unmap=True))
    events.insert(-2, close_ev(5 * NS, 0, 3))
    w = RecordingWriter.create(str(path), header)
    w.add_meta(META)
    w.add_events(b"".join(events))
    w.close({"duration_ns": 6 * NS, "exit_code": 0, "ended_wall_ns": T0 + 6 * NS})
    return str(path)


def test_exposed_stats_in_the_text_and_the_json(tmp_path):
    """A recording with window closes: rsync's second stat came while page 0
    was writable after its stamping fault (exposed until the writeback 4 s
    later); its first came before any fault (not exposed)."""
    path = exposure_recording(tmp_path / "e.pft")
    with Recording.open(path) as rec:
        an = correlate.analyse(rec)
    doc = json.loads(export.to_json(an))
    assert doc["exposure"]["windows"] == 4
    assert doc["exposure"]["closed"] == {"writeback": 3, "unmap": 1, "open": 0}
    assert (doc["exposure"]["exposed_observations"],
            doc["exposure"]["unexposed_observations"]) == (1, 1)
    assert doc["summary"]["exposed_observations"] == 1
    (ob,) = doc["exposed_observations"]
    seen = NS + 1000 + 500                          # the stat's return
    assert (ob["pid"], ob["comm"], ob["path"], ob["ts_ns"]) == (300, "rsync", "/mnt/dax/f", seen)
    assert ob["pages"] == [{"pgoff": 0, "npages": 1, "opened_ns": NS, "opened_by_pid": 100,
                            "open_after_ns": 5 * NS - seen, "ended_by": "writeback",
                            "closed_by_pid": 100}]
    console = Console(record=True, width=200, color_system=None, force_terminal=False,
                      file=io.StringIO())
    report.render(console, an, source="e.pft")
    text = " ".join(console.export_text().split())     # the words, however wrapped
    assert ("exposed stats 1 of 2 stats of written files came while a page of the file "
            "was still writable after its stamping fault") in text
    assert "4 windows (written back 3, unmapped 1, open at the end 0)" in text
    assert ("pid 300 (rsync) /mnt/dax/f: 1 page writable (page 0, since pid 100's fault "
            "1.5 us before), exposed 4.000 s after, until written back") in text
