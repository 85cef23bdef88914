"""`pfntrace top`'s view, rendered from synthetic aggregates (host only).

Golden text lives in tests/unit/data/top_*.txt; regenerate with
PFNTRACE_UPDATE_GOLDEN=1 after an intended change, and read the diff.  The
screen is rich's layout: made with the rich tests/unit/conftest.py names.
"""

import os

import pytest
from rich.console import Console

from pfntrace import aggregate, bpfstats, layout, tracer
from pfntrace.aggregate import Counts, Snapshot
from pfntrace.commands.top import plan_counts
from pfntrace.views import top

DATA = os.path.join(os.path.dirname(__file__), "data")
S = 1_000_000_000
DEV = (259 << 20) | 0          # pmem0: 259:0
T0 = 1000 * S


def counts(pfn=0, page=0, pmd=0, touch=0, nonotify=0, updated=0, current=0, missed=0,
           lat=None, last_ts=0, pid=0, comm=""):
    c = Counts()
    c.kinds = [pfn, page, pmd, touch, nonotify]
    c.verdicts = [updated, current, missed, nonotify, 0]
    c.total = pfn + page + pmd + touch + nonotify
    for b, n in (lat or {}).items():
        c.lat[b] = n
    c.last_ts, c.last_pid, c.comm = last_ts, pid, comm
    return c


def snapshots():
    a = Snapshot(mono_ns=T0, interval_ns=S)
    a.files[(DEV, 12)] = counts(pfn=10, updated=2, current=8, lat={14: 10},
                                last_ts=T0 - S // 2, pid=100)
    a.files[(DEV, 14)] = counts(nonotify=4, last_ts=T0 - 30 * S, pid=102)
    a.procs[100] = counts(pfn=10, updated=2, current=8, last_ts=T0 - S // 2, comm="db")
    a.procs[102] = counts(nonotify=4, last_ts=T0 - 30 * S, comm="fbwriter")
    a.total = counts(pfn=10, nonotify=4, updated=2, current=8, lat={14: 10})
    a.bpf_run_ns, a.bpf_run_cnt = 5_000_000, 400

    b = Snapshot(mono_ns=T0 + 2 * S, interval_ns=S, lost=0)
    b.files[(DEV, 12)] = counts(pfn=30, updated=5, current=25, lat={14: 29, 20: 1},
                                last_ts=T0 + 2 * S - S // 10, pid=100)
    b.files[(DEV, 13)] = counts(pfn=20, touch=3, updated=1, current=2, missed=20,
                                lat={13: 20, 15: 3}, last_ts=T0 + S, pid=101)
    b.files[(DEV, 14)] = counts(nonotify=4, last_ts=T0 - 30 * S, pid=102)
    b.procs[100] = counts(pfn=30, updated=5, current=25, last_ts=T0 + 2 * S - S // 10,
                          comm="db")
    b.procs[101] = counts(pfn=20, touch=3, current=2, updated=1, missed=20, last_ts=T0 + S,
                          comm="logger")
    b.procs[102] = counts(nonotify=4, last_ts=T0 - 30 * S, comm="fbwriter")
    b.total = counts(pfn=50, touch=3, nonotify=4, updated=6, current=27, missed=20,
                     lat={13: 20, 14: 29, 15: 3, 20: 1})
    b.rate = [(T0 // S - 1, 10), (T0 // S + 1, 37), (T0 // S + 2, 10)]
    b.bpf_run_ns, b.bpf_run_cnt = 9_000_000, 800
    return a, b


def state():
    st = top.TopState(kernel="6.12.117+deb12-amd64",
                      plan_counts={"attached": 19, "inferred": 1, "n/a": 10, "missing": 0},
                      mounts=["/mnt/dax"], interval_s=1.0)
    a, b = snapshots()
    paths = {(DEV, 12): "/mnt/dax/db/table", (DEV, 13): "/mnt/dax/log/wal"}
    st.update(a, paths)
    st.update(b, paths)
    return st


def screen(st, width=150, height=None):
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    console.print(top.render(st, now_ns=T0 + 2 * S, width=width, height=height))
    return console.export_text()


def golden(name, text):
    path = os.path.join(DATA, name)
    if os.environ.get("PFNTRACE_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read()


@pytest.mark.rich_golden
@pytest.mark.parametrize("width,height", [(80, 24), (120, 34)])
def test_screen_golden(width, height):
    text = screen(state(), width, height)
    golden("top_%dx%d.txt" % (width, height), text)
    lines = text.splitlines()
    assert len(lines) <= height and max(map(len, lines)) <= width
    assert "…" not in text


def _cells(text, header):
    """{column: [cells]} of the table whose column names start with header."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.lstrip().startswith(header))
    names = lines[i].split()
    rows = []
    for line in lines[i + 2:]:
        if not line.strip() or not line[0].isspace() and not line[0].isdigit():
            break
        rows.append(line.split())
    return {name: [r[n] for r in rows] for n, name in enumerate(names)}


@pytest.mark.parametrize("width", [60, 70, 80, 100, 120, 160])
def test_narrow_screens_drop_columns_never_cut_them(width):
    text = screen(state(), width)
    assert max(map(len, text.splitlines())) <= width
    files = _cells(text, "FLT/S")
    # The most important columns stay at every width, each number whole.
    assert files["TOTAL"] == ["23", "30", "4"] and files["MISSED"] == ["20", "0", "0"]
    assert files["NO_NOTIF"] == ["0", "0", "4"]
    assert files["PATH"] == ["/mnt/dax/log/wal", "/mnt/dax/db/table", "259:0:14"]
    procs = _cells(text, "PID")
    assert procs["COMM"] == ["logger", "db", "fbwriter"] and procs["TOTAL"] == ["23", "30", "4"]
    # Columns go lowest priority first: whatever is shown is a prefix of
    # the priority order.
    order = sorted(top.FILE_COLUMNS, key=lambda c: c.priority)
    shown = [c.name for c in order if c.name in files]
    assert shown == [c.name for c in order][:len(shown)]
    assert "…" not in text


def test_long_path_keeps_its_file_name():
    st = state()
    st.paths[(DEV, 13)] = "/mnt/dax/" + "very-long-directory-name/" * 4 + "wal.0001"
    text = screen(st, 80)
    row = [line for line in text.splitlines() if "wal.0001" in line]
    path = row[0].split()[-1]
    assert len(row) == 1 and path.startswith("…") and path.endswith("-name/wal.0001")
    assert len(path) >= 20 and len(row[0].rstrip()) == 80
    assert "very-long-directory-name/wal.0001" in screen(st, 200)
    # A path that fits beside the essential columns is shown whole: the
    # latencies and the verdicts' split leave for it first.
    st.paths[(DEV, 13)] = "/mnt/dax/test_top_screen_80x24/rtw.0001"
    files = _cells(screen(st, 80), "FLT/S")
    assert files["PATH"][0] == st.paths[(DEV, 13)] and "TOTAL" in files and "MISSED" in files


def test_rows_beyond_the_height_are_counted():
    st = state()
    snap = st.cur
    for ino in range(100, 140):
        snap.files[(DEV, ino)] = counts(pfn=1, current=1, last_ts=T0, pid=100)
    for pid in range(1000, 1030):
        snap.procs[pid] = counts(pfn=1, current=1, last_ts=T0, comm="w%d" % pid)
    text = screen(st, 80, 24)
    lines = text.splitlines()
    assert len(lines) == 24 and lines[-1].startswith("s sort")
    more = [line for line in lines if line.startswith("+")]
    assert len(more) == 2 and "more files" in more[0] and "more processes" in more[1]
    shown_files = len(_cells(text, "FLT/S")["TOTAL"])
    assert int(more[0].split()[0][1:]) + shown_files == 43
    shown_procs = len(_cells(text, "PID")["PID"])
    assert shown_procs >= 2 and int(more[1].split()[0][1:]) + shown_procs == 33


def test_header_wraps_between_parts():
    st = state()
    st.pid = 4242
    text = screen(st, 50)
    head = text.splitlines()[:5]
    assert max(map(len, head)) <= 50
    for part in ("kernel 6.12.117+deb12-amd64",
                 "probes: 19 attached, 1 inferred, 10 n/a, 0 missing", "mounts: /mnt/dax",
                 "pid 4242+children", "lost 0"):
        assert part in head[0] or any(part in line for line in head), (part, head)


def test_header_says_how_many_probes_are_trampolines():
    st = state()
    st.plan_counts = dict(st.plan_counts, fentry=3)
    head = " ".join(screen(st, 80).splitlines()[:3])
    assert "probes: 19 attached (3 fentry), 1 inferred" in head
    st.plan_counts["fentry"] = 0
    assert "fentry" not in " ".join(screen(st, 80).splitlines()[:3])


def test_plain_golden():
    golden("top_plain.txt", top.plain(state(), now_ns=T0 + 2 * S, wall="12:00:00"))


def test_rates_and_cost():
    st = state()
    assert st.rate("files", (DEV, 12)) == 10.0     # 20 faults in 2 s
    assert st.rate("files", (DEV, 13)) == 11.5     # new file: all 23 in 2 s
    assert st.total_rate() == 21.5                 # (57 - 14) / 2
    share, runs = st.cost()
    assert share == pytest.approx(0.002) and runs == 200


def test_sort_cycles_and_orders():
    st = state()
    assert [k[1] for k, _ in st.file_rows()] == [13, 12, 14]     # faults/s
    st.key("s")
    assert top.SORTS[st.sort] == "total"
    assert [k[1] for k, _ in st.file_rows()] == [12, 13, 14]
    st.key("s")
    assert [k[1] for k, _ in st.file_rows()][0] == 13            # missed first
    for _ in range(len(top.SORTS) - 2):
        st.key("s")
    assert st.sort == 0


def test_filter_prompt_and_pause():
    st = state()
    for ch in "fwa":
        assert st.key(ch)
    assert st.prompt == "wa" and "filter by name: wa_" in screen(st)
    st.key("\x7f")
    st.key("a")
    st.key("l")
    st.key("\r")
    assert st.prompt is None and st.filter == "wal"
    assert [k[1] for k, _ in st.file_rows()] == [13]
    assert st.proc_rows() == []          # no comm contains "wal"
    st.key("f")
    st.key("\x1b")
    assert st.filter == "wal"             # Esc keeps the old filter
    st.key("p")
    assert st.paused and "PAUSED" in screen(st)
    assert st.key("q") is False


def test_missed_is_red():
    console = Console(record=True, width=150, force_terminal=True, color_system="standard")
    console.print(top.render(state(), now_ns=T0 + 2 * S))
    ansi = console.export_text(styles=True)
    assert "\x1b[1;31m    20\x1b[0m" in ansi          # the wal file's MISSED cell


def test_percentiles_from_log2_buckets():
    c = counts(pfn=100, lat={10: 50, 12: 49, 20: 1})
    assert c.percentile(0.5) == 1024
    assert c.percentile(0.99) == 4096
    assert c.percentile(1.0) == 1 << 20
    assert Counts().percentile(0.5) is None


def test_sparkline_and_series():
    assert top.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert top.sparkline([0, 0]) == "▁▁"
    series = state().rate_series(points=4)
    assert series == [10.0, 0.0, 37.0, 10.0]


def test_empty_state_renders():
    st = top.TopState()
    text = screen(st)
    assert "write faults: -/s" in text and "unknown" in text
    assert "total 0" in top.plain(st, now_ns=0, wall="x")


def test_decode_from_header_layout():
    ffi = layout.ffi
    raw = ffi.new("struct pft_agg_stats *")
    raw.kinds[0] = 23
    raw.verdicts[1] = 23
    raw.lat[14] = 23
    raw.total = 23
    raw.last_ts = 5
    raw.last_pid = 77
    c = aggregate.stats_counts(raw)
    assert (c.kind("pfn_mkwrite"), c.verdict("CURRENT"), c.total, c.last_pid) == (23, 23, 23, 77)
    assert c.percentile(0.5) == 1 << 14
    p = ffi.new("struct pft_proc_stats *")
    p.total = 3
    p.comm = b"python"
    assert aggregate.proc_counts(p).comm == "python"


def test_read_rows_own_their_bytes():
    """A row read from a mapped map is a copy of its own, good for as long
    as it is used, the mapping closed and its memory reused meanwhile (a
    view of bytes nothing kept alive once showed top a COMM of '?')."""
    from pfntrace.mapmem import MappedArray

    ffi = layout.ffi
    p = ffi.new("struct pft_proc_stats *")
    p.total = 23
    p.comm = b"python"
    raw = bytes(ffi.buffer(p))
    for _ in range(100):
        m = MappedArray(-1, len(raw), 1)
        m.put(0, raw)
        (c,) = m.rows(ffi, "struct pft_proc_stats", 1)
        m.close()
        junk = [bytes([0xff]) * len(raw) for _ in range(4)]
        assert c.total == 23 and ffi.string(c.comm) == b"python", junk[0][:1]


def test_fdinfo_run_times_and_probe_costs(tmp_path):
    (tmp_path / "3").write_text("prog_type:\t2\nrun_time_ns:\t1500\nrun_cnt:\t3\n")
    (tmp_path / "4").write_text("prog_type:\t2\nrun_time_ns:\t4000\nrun_cnt:\t1\n")
    (tmp_path / "7").write_text("prog_type:\t2\nrun_time_ns:\t0\nrun_cnt:\t0\n")
    progs = bpfstats.fdinfo_run_times({"wp_return": 3, "handler_return": 4, "idle": 7,
                                        "gone": 5}, proc=str(tmp_path))
    assert progs == {"wp_return": (1500, 3), "handler_return": (4000, 1), "idle": (0, 0)}
    # The costliest in total first; a program that never ran is left out.
    assert bpfstats.probe_costs(progs) == [("handler_return", 1, 4000.0),
                                            ("wp_return", 3, 500.0)]
    (tmp_path / "6").write_text("prog_type:\t2\n")   # bpf_stats_enabled 0
    assert bpfstats.fdinfo_run_times({"x": 6}, proc=str(tmp_path)) == {}


def test_plan_counts():
    plan = {"hooks": [
        {"hook": "do_wp_page", "kind": "kprobe", "status": "attach"},
        {"hook": "wp_pfn_shared", "kind": "kprobe", "status": "inlined"},
        {"hook": "xfs_filemap_fault", "kind": "kprobe", "status": "missing"},
        {"hook": "ext2_dax_fault", "kind": "kprobe", "status": "n/a"},
        {"hook": "ext2_dax_fault", "kind": "kretprobe", "status": "n/a"},
        {"hook": "fs_dax:dax_pte_fault_done", "kind": "tracepoint", "status": "missing"},
    ]}
    assert plan_counts(plan, [("kprobe", "do_wp_page")]) == \
        {"attached": 1, "fentry": 0, "inferred": 1, "n/a": 2, "missing": 1}
    # Hooks the plan gives to trampolines count as fentry once attached.
    plan["hooks"][0]["mechanism"] = "fentry"
    plan["hooks"].append({"hook": "do_wp_page", "kind": "kretprobe", "status": "attach",
                          "mechanism": "fexit"})
    assert plan_counts(plan, [("kprobe", "do_wp_page"), ("kretprobe", "do_wp_page")])["fentry"] \
        == 2
    assert plan_counts(plan, [("kprobe", "do_wp_page")])["fentry"] == 1


def test_bad_input_is_one_line(monkeypatch):
    from click.testing import CliRunner

    from pfntrace.cli import main

    r = CliRunner().invoke(main, ["top", "--interval", "0"])
    assert r.exit_code == 2 and r.output.strip() == "pfntrace: --interval must be positive"
    r = CliRunner().invoke(main, ["top", "-p", "999999999"])
    assert r.exit_code == 2 and "no process with pid" in r.output


def test_reader_names_every_process(monkeypatch):
    """COMM comes from the row's bytes (whole up to the first NUL, whatever
    follows it); a process whose counters came without a name is named from
    /proc while it lives, so no COMM cell is blank.  The rows are read
    through memory laid out as the kernel lays out the mapped maps."""
    from pfntrace.mapmem import MappedArray

    ffi = layout.ffi
    procs = [(7, b"python\0\xff\xffjunk"), (8, b"fifteen-chars-x"), (os.getpid(), b""),
             (999999999, b"")]
    size = ffi.sizeof
    mem = {"aggfiles": MappedArray(-1, size("struct pft_agg_file_row"), 4),
           "aggprocs": MappedArray(-1, size("struct pft_agg_proc_row"), 8),
           "aggtotal": MappedArray(-1, size("struct pft_agg_stats"), 1),
           "aggrate": MappedArray(-1, size("struct pft_rate_slot"), aggregate.RATE_SLOTS)}
    for i, (pid, comm) in enumerate(procs):
        row = ffi.new("struct pft_agg_proc_row *")
        row.pid, row.stats.total, row.ready = pid, 1, 1
        ffi.memmove(row.stats.comm, comm, len(comm))
        mem["aggprocs"].put(i, bytes(ffi.buffer(row)))
    # A row being claimed (not ready) is not read.
    mem["aggprocs"].put(len(procs), bytes(ffi.buffer(ffi.new("struct pft_agg_proc_row *"))))
    f = ffi.new("struct pft_agg_file_row *")
    f.key.dev, f.key.ino, f.stats.total, f.ready = DEV, 99, 23, 1
    mem["aggfiles"].put(0, bytes(ffi.buffer(f)))

    class Tracer:
        bpf = {"aggconfig": {0: type("Conf", (), {"interval_ns": 0})()}}

        def rows_claimed(self):
            claimed = [0] * layout.const("PFT_ROW_TABLES")
            claimed[aggregate.PROC_ROWS] = len(procs) + 1
            claimed[aggregate.FILE_ROWS] = 1
            return claimed

        def lost_by_reason(self):
            return dict.fromkeys(tracer.LOST_REASONS, 0)

    Tracer.mem = mem
    reader = aggregate.Reader(Tracer(), interval_ns=S, bpf_stats=False)
    snap = reader.read()
    with open("/proc/self/comm") as f:
        me = f.read().strip()
    assert {p: c.comm for p, c in snap.procs.items()} == {
        7: "python", 8: "fifteen-chars-x", os.getpid(): me, 999999999: ""}
    assert snap.total.total == 0 and list(snap.files) == [(DEV, 99)]
    assert snap.files[(DEV, 99)].total == 23
    text = screen(top_state_with(snap), 80)
    assert "?" in _cells(text, "PID")["COMM"]       # a gone process without a name


def top_state_with(snap):
    st = top.TopState(kernel="k", mounts=["/mnt/dax"])
    st.update(snap, {})
    return st


def test_invisible_writes_in_the_header_and_loud_on_multigrain():
    st = state()
    assert "invisible" not in top.plain(st, now_ns=T0 + 2 * S, wall="x")
    st.cur.total.invisible = 5
    assert "  invisible 5  bpf" in top.plain(st, now_ns=T0 + 2 * S, wall="x")
    assert "invisible 5" in screen(st)
    st.multigrain = True
    assert "invisible 5 ON A MULTIGRAIN KERNEL" in top.plain(st, now_ns=T0 + 2 * S, wall="x")


def test_counts_add_invisible():
    a, b = Counts(invisible=2), Counts(invisible=3)
    a.add(b)
    assert a.invisible == 5


def test_probe_cost_line():
    from pfntrace.bpfstats import probe_cost_line

    assert probe_cost_line({"wp_return": (15_000, 3), "kfunc__do_wp_page": (0, 0)}) == \
        "pfntrace: BPF run time per probe run: wp_return 5.0 µs x 3"
    assert probe_cost_line({}) is None
