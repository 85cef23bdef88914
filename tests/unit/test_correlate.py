"""The correlation engine on hand-built event streams (layout.encode)."""

import pytest

from pfntrace import correlate, decode, layout
from pfntrace.findings import findings

C = layout.const
NS = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * NS          # realtime - monotonic in these streams
DEV = (259 << 20) | 3            # 259:3
KEY = "259:3:12"
TICK = 4 * MS                    # HZ=250

HANDLER = C("PFT_EV_HANDLER")
WP = C("PFT_EV_WP")
IN_WP = C("PFT_F_IN_WP")
DAX = C("PFT_F_INODE_DAX")
R_FAULT, R_HUGE = C("PFT_ROLE_FAULT"), C("PFT_ROLE_HUGE_FAULT")
R_PAGE, R_PFN = C("PFT_ROLE_PAGE_MKWRITE"), C("PFT_ROLE_PFN_MKWRITE")
EXT4_ROLES = R_FAULT | R_PAGE | R_PFN
WRITE, MKWRITE = C("PFT_FAULT_FLAG_WRITE"), C("PFT_FAULT_FLAG_MKWRITE")
SHARED_PFN = C("PFT_VM_SHARED") | C("PFT_VM_PFNMAP")
SHARED_MIXED = C("PFT_VM_SHARED") | C("PFT_VM_MIXEDMAP")


class FakeRecording:
    """The attributes analyse() uses from pfntrace.recording.Recording."""

    def __init__(self, events, header=None, meta=None, trailer=None, lost=None,
                 truncated=False, reason=None, file_counts=None):
        self._events = [decode.event(e) for e in events]
        self.header = {"kernel": "6.12.117", "plan": {"huge_fault_arg_is_order": True},
                       "clock": {"realtime_minus_monotonic_ns": T0, "tick_ns": TICK}}
        self.header.update(header or {})
        self.meta = meta if meta is not None else {"files": {KEY: {"path": "/mnt/dax/f"}}}
        self.trailer = trailer
        self.lost = lost or [0, 0]
        self.truncated = truncated
        self.truncation_reason = reason
        self.file_counts = file_counts or []

    def iter_events(self):
        return iter(self._events)


def split(ns):
    return divmod(ns, NS)


PFN_OPS = 0xffffffffc0a01230      # the vma's ->pfn_mkwrite ("ext4_dax_fault")
FILE = C("PFT_F_FILE")
SHARED = C("PFT_VM_SHARED")
QUERIED = C("PFT_I_CTIME_QUERIED")


def ev(type=HANDLER, ts=1 * NS, m=(None, None), c=None, pid=100,
       tid=None, comm="writer", dev=DEV, ino=12, clock=None, **kw):
    """One event; m/c are wall-clock ns before/after (c defaults to m).
    clock: the kernel's timestamp clock at entry and return; by default the
    coarse clock at ts: T0 + ts down to its 4 ms tick."""
    c = c if c is not None else m
    if clock is None:
        coarse = T0 + ts - ts % TICK
        clock = (coarse, coarse)
    fields = dict(type=type, ts_ns=ts, pid=pid, tid=tid if tid is not None else pid, comm=comm,
                  dev=dev, ino=ino, duration_ns=kw.pop("duration_ns", 2000), clock_ns=list(clock),
                  time_gran=1)
    if m[0] is not None:
        (ms0, mn0), (ms1, mn1) = split(m[0]), split(m[1])
        (cs0, cn0), (cs1, cn1) = split(c[0]), split(c[1])
        fields.update(mtime_sec=[ms0, ms1], mtime_nsec=[mn0, mn1],
                      ctime_sec=[cs0, cs1], ctime_nsec=[cn0, cn1])
    kw.setdefault("vm_flags", SHARED)
    fields.update(kw)
    return layout.encode(**fields)


def wp(ts, before, after, **kw):
    """A do_wp_page return on a DAX file whose vm_ops has ->pfn_mkwrite."""
    kw.setdefault("flags", FILE | DAX)
    kw.setdefault("ops_pfn_mkwrite", PFN_OPS)
    kw.setdefault("ret", C("PFT_VM_FAULT_NOPAGE"))
    return ev(type=WP, ts=ts, m=(before, after), **kw)


def run(events, **kw):
    return correlate.analyse(FakeRecording(events, **kw))


def verdicts(an):
    return [f.verdict for f in an.faults]


# -- verdicts (the rules themselves: verdict_spec.py) ---------------------------

def test_updated():
    an = run([wp(5 * NS, T0 + 1 * NS, T0 + 5 * NS, ftu_calls=1)],
             meta={"files": {KEY: {"path": "/mnt/dax/f"}},
                   "symbols": {"0x%x" % PFN_OPS: "ext4_dax_fault"}})
    (f,) = an.faults
    assert (f.kind, f.verdict, f.key, f.path) == ("pfn_mkwrite", "UPDATED", KEY, "/mnt/dax/f")
    assert f.ftu_calls == 1 and f.latency == 2000 and f.pid == 100 and f.comm == "writer"
    assert f.handler_name == "ext4_dax_fault" and "(ext4_dax_fault)" in f.detail
    assert "->" in f.detail
    assert findings(an) == []


def test_same_tick_second_is_current():
    now = T0 + 5 * NS
    an = run([wp(5 * NS, T0 + 1 * NS, now, pgoff=0),
              wp(5 * NS, now, now, pgoff=1)])
    assert verdicts(an) == ["UPDATED", "CURRENT"]
    assert an.summary()["verdicts"]["MISSED"] == 0


def test_missed_stale_mtime():
    old = T0 + 1 * NS
    an = run([wp(5 * NS, old, old, pgoff=7)])
    (f,) = an.faults
    assert f.verdict == "MISSED"
    assert "mtime stayed at" in f.detail and "4.000 s before" in f.detail
    (line,) = findings(an)
    assert line.startswith("MISSED /mnt/dax/f page 7 pid 100 (writer): mtime stayed at")


def test_file_update_time_ran_is_no_proof_of_current():
    # The case (c): the handler stamps, something puts the old
    # timestamps back before the fault completes.
    old = T0 + 1 * NS
    (f,) = run([wp(5 * NS, old, old, ftu_calls=1)]).faults
    assert f.verdict == "MISSED" and "file_update_time called 1 time(s)" in f.detail


def test_future_mtime_is_missed():
    later = T0 + 9 * NS
    (f,) = run([wp(5 * NS, later, later)]).faults
    assert f.verdict == "MISSED" and "after the kernel's clock" in f.detail


def test_queried_ctime_must_move():
    now = T0 + 5 * NS
    s, n = split(now)
    raw = layout.encode(type=WP, ts_ns=5 * NS, pid=1, tid=1, dev=DEV, ino=12, flags=FILE | DAX,
                        vm_flags=SHARED, ops_pfn_mkwrite=PFN_OPS, clock_ns=[now, now],
                        mtime_sec=[s, s], mtime_nsec=[n, n], ctime_sec=[s, s],
                        ctime_nsec=[n | QUERIED, n | QUERIED])
    (f,) = run([raw]).faults
    assert f.verdict == "MISSED" and "I_CTIME_QUERIED" in f.detail
    assert f.ctime_after == now            # the bit is not part of the time


def test_undecided_without_the_kernel_clock_or_timestamps():
    old = T0 + NS
    an = run([wp(5 * NS, old, old, clock=(0, 0)), wp(6 * NS, None, None, pgoff=1)])
    assert verdicts(an) == ["UNDECIDED", "UNDECIDED"]
    assert findings(an) == [] and len(an.undecided) == 2
    assert "clock was not readable" in an.faults[0].detail
    assert an.faults[1].detail == "no timestamps were read"


# -- kinds ------------------------------------------------------------------

def test_dax_without_pfn_mkwrite_is_no_notifier_whatever_vm_flags():
    # fsdax vmas have had no VM_PFNMAP/VM_MIXEDMAP since 4.15: the pre-4.1
    # bug is a DAX file's shared mapping whose vm_ops lack ->pfn_mkwrite.
    old = T0 + NS
    an = run([wp(5 * NS, old, old, pgoff=4, ops_pfn_mkwrite=0)])
    (f,) = an.faults
    assert (f.kind, f.verdict, f.pgoff) == ("no_notifier", "NO_NOTIFIER", 4)
    (line,) = findings(an)
    assert line.startswith("NO_NOTIFIER /mnt/dax/f page 4 pid 100 (writer):")


def test_no_notifier_on_a_pfnmap_and_what_is_not_a_write_fault():
    old = T0 + NS
    pfnmap = SHARED | C("PFT_VM_PFNMAP")
    events = [
        wp(5 * NS, old, old, vm_flags=pfnmap, flags=FILE, ops_pfn_mkwrite=0, pgoff=4),
        wp(7 * NS, old, old, ret=2),                       # an error: SIGBUS
        wp(8 * NS, old, old, vm_flags=C("PFT_VM_PFNMAP")),  # private: not ours
    ]
    an = run(events)
    s = an.summary()
    assert [f.kind for f in an.faults] == ["no_notifier"]
    assert s["wp_entries"] == 3 and s["write_faults"] == 1 and s["no_notifier"] == 1
    assert s["handler_errors"] == 1


def test_page_cache_wp_is_page_mkwrite():
    now = T0 + 5 * NS
    an = run([wp(5 * NS, T0, now, flags=FILE, ops_pfn_mkwrite=0, ops_page_mkwrite=0x1234)])
    assert [(f.kind, f.verdict, f.handler) for f in an.faults] == [
        ("page_mkwrite", "UPDATED", 0x1234)]


def test_handler_inside_do_wp_page_is_not_a_second_fault():
    now = T0 + 5 * NS
    inner = ev(ts=5 * NS + 100, m=(T0, now), roles=EXT4_ROLES, flags=FILE | IN_WP | DAX,
               fault_flags=WRITE | MKWRITE)
    an = run([inner, wp(5 * NS, T0, now)])
    assert [(f.kind, f.verdict) for f in an.faults] == [("pfn_mkwrite", "UPDATED")]
    assert an.summary()["handler_calls_in_wp"] == 1


def test_a_folded_handler_counts_as_its_own_event_did():
    """record folds the handler called inside do_wp_page into the
    do_wp_page's event (PFT_F_HANDLER_FOLDED): the same fault, verdict and
    handler_calls as the two events of a recording made before."""
    now = T0 + 5 * NS
    folded = C("PFT_F_HANDLER_FOLDED")
    before = run([ev(ts=5 * NS + 100, m=(T0, now), roles=EXT4_ROLES, flags=FILE | IN_WP | DAX,
                     fault_flags=WRITE | MKWRITE), wp(5 * NS, T0, now)])
    after = run([wp(5 * NS, T0, now, flags=FILE | DAX | folded, handler=0xffffffffc0a01230)])
    for an in (before, after):
        assert [(f.kind, f.verdict) for f in an.faults] == [("pfn_mkwrite", "UPDATED")]
        assert an.summary()["handler_calls_in_wp"] == 1
        assert an.summary()["wp_entries"] == 1
    # A retried do_wp_page whose handler ran: counted, not judged.
    an = run([wp(5 * NS, T0, T0, ret=C("PFT_VM_FAULT_RETRY"), flags=FILE | DAX | folded)])
    assert an.faults == [] and an.summary()["handler_calls_in_wp"] == 1
    assert an.summary()["retries"] == 1


def test_ext4_612_wp_retry_then_handler_is_one_fault():
    now = T0 + 5 * NS
    events = [
        wp(5 * NS, T0, T0, ret=C("PFT_VM_FAULT_RETRY")),
        ev(ts=5 * NS + 500, m=(T0, now), roles=EXT4_ROLES, flags=FILE | IN_WP | DAX,
           fault_flags=WRITE | MKWRITE),
        wp(5 * NS + 400, T0, now, flags=FILE | DAX | C("PFT_F_HANDLER_RAN")),
    ]
    an = run(events)
    s = an.summary()
    assert s["write_faults"] == 1 and s["retries"] == 1 and s["wp_entries"] == 2
    assert verdicts(an) == ["UPDATED"]


def test_probed_wp_pfn_shared_decides_the_kind():
    # Where wp_pfn_shared is a symbol the BPF side marks the fault
    # PFT_F_PFN_PATH: the pfn path even for a non-DAX inode.
    now = T0 + 5 * NS
    an = run([wp(5 * NS, T0, now, flags=FILE | C("PFT_F_PFN_PATH")),
              wp(6 * NS, now, T0 + 6 * NS, flags=FILE, pgoff=1)])
    assert [f.kind for f in an.faults] == ["pfn_mkwrite", "page_mkwrite"]


@pytest.mark.parametrize("is_order,arg,kind", [
    (True, 9, "pmd"), (True, 18, "pmd"), (True, 0, "fault"), (True, 1, "fault"),
    (False, 1, "pmd"), (False, 2, "pmd"), (False, 0, "fault"),
])
def test_huge_fault_size_conventions(is_order, arg, kind):
    e = ev(ts=5 * NS, m=(T0, T0 + 5 * NS), roles=R_HUGE, flags=FILE | DAX, fault_flags=WRITE,
           arg=arg)
    an = run([e], header={"plan": {"huge_fault_arg_is_order": is_order}})
    assert [f.kind for f in an.faults] == [kind]


def test_read_faults_counted_not_judged():
    events = [ev(ts=5 * NS, m=(T0, T0), roles=EXT4_ROLES, flags=DAX, fault_flags=0),
              ev(ts=6 * NS, m=(T0, T0), roles=R_HUGE, flags=DAX, fault_flags=0, arg=9)]
    an = run(events)
    assert an.faults == [] and an.summary()["reads"] == 2
    assert an.files[0].reads == 2 and an.processes[0].reads == 2


def test_first_touch_fault_and_ext4_nested_huge_fault_counted_once():
    now = T0 + 5 * NS
    # ext4_dax_fault (outer, returns last) calls ext4_dax_huge_fault(PTE)
    inner = ev(ts=5 * NS + 100, m=(T0, now), roles=R_HUGE, flags=DAX, fault_flags=WRITE,
               arg=0, duration_ns=1000, ftu_calls=1)
    outer = ev(ts=5 * NS, m=(T0, now), roles=EXT4_ROLES, flags=DAX, fault_flags=WRITE,
               duration_ns=2000, ftu_calls=1)
    an = run([inner, outer])
    assert [(f.kind, f.verdict) for f in an.faults] == [("fault", "UPDATED")]
    assert an.summary()["nested_handler_calls"] == 1
    # A lone ->fault write (xfs, ext2) is a first-touch fault too...
    an = run([ev(ts=5 * NS, m=(T0, now), roles=R_FAULT, fault_flags=WRITE)])
    assert [f.kind for f in an.faults] == ["fault"]
    # ...on a shared mapping; a private one is copy-on-write.
    an = run([ev(ts=5 * NS, m=(T0, T0), roles=R_FAULT, fault_flags=WRITE, vm_flags=0)])
    assert an.faults == []


def test_dax_tracepoint_and_writeback_counts():
    events = [
        ev(type=C("PFT_EV_DAX_FAULT"), fault_flags=WRITE | MKWRITE),
        ev(type=C("PFT_EV_DAX_FAULT"), fault_flags=0),
        ev(type=C("PFT_EV_DAX_FAULT"), fault_flags=WRITE, flags=C("PFT_F_PMD")),
        ev(type=C("PFT_EV_DAX_WRITEBACK"), arg=512, pgoff=0),
        ev(type=C("PFT_EV_DAX_WRITEBACK"), arg=1, pgoff=3),
        ev(type=C("PFT_EV_DAX_MKWRITE")),
    ]
    an = run(events)
    (f,) = an.files
    assert (f.dax_pte_faults, f.dax_pmd_faults, f.dax_write_faults) == (2, 1, 2)
    assert (f.reprotects, f.reprotect_pages, f.map_sync) == (2, 513, 1)
    assert an.summary()["write_faults"] == 0


def test_huge_fault_fallback_is_not_a_write_fault():
    # ->huge_fault(PMD) on a vma smaller than 2 MiB returns VM_FAULT_FALLBACK
    # and the PTE ->fault that follows is the write fault.
    now = T0 + 5 * NS
    an = run([ev(ts=5 * NS, m=(T0, T0), roles=R_HUGE, arg=9, fault_flags=WRITE, flags=DAX,
                 ret=0x800),
              ev(ts=5 * NS + 10, m=(T0, now), roles=EXT4_ROLES, fault_flags=WRITE, flags=DAX,
                 ret=0x100)])
    assert [(f.kind, f.verdict) for f in an.faults] == [("fault", "UPDATED")]
    assert an.summary()["huge_fault_fallbacks"] == 1


# -- files and processes ----------------------------------------------------

def test_two_writers_one_file():
    now = T0 + 5 * NS
    old = T0 + NS
    events = [wp(5 * NS, T0, now, pid=100, comm="w1"),
              wp(5 * NS + 10, now, now, pid=200, comm="w2", pgoff=1),
              wp(6 * NS, old, old, pid=200, tid=201, comm="w2", pgoff=2)]
    an = run(events, meta={"files": {KEY: {"path": "/mnt/dax/f"}},
                           "procs": {"200": {"comm": "w2", "cmdline": "w2 --x"}}})
    assert len(an.files) == 1 and an.files[0].write_faults == 3
    procs = {p.pid: p for p in an.processes}
    assert procs[100].comm == "w1" and procs[100].verdict_counts()["UPDATED"] == 1
    assert procs[200].write_faults == 2 and procs[200].cmdline == "w2 --x"
    assert procs[200].verdict_counts()["CURRENT"] == 1
    assert procs[200].verdict_counts()["MISSED"] == 1
    assert an.faults[2].tid == 201


def test_file_path_from_meta_else_key():
    an = run([wp(5 * NS, T0, T0 + 5 * NS, ino=99)])
    assert an.files[0].path == "259:3:99" and an.files[0].devstr == "259:3"


def test_deleted_file_keeps_faults():
    trailer = {"statx": {KEY: {"path": "/mnt/dax/f", "exists": False}}}
    an = run([wp(5 * NS, T0, T0 + 5 * NS)], trailer=trailer)
    (f,) = an.files
    assert f.deleted and f.final_cmp == "deleted" and f.write_faults == 1


def test_final_statx_compared_with_last_fault():
    now = T0 + 5 * NS
    for final, cmp in ((now, "equal"), (now + NS, "newer"), (now - NS, "older")):
        trailer = {"statx": {KEY: {"path": "/mnt/dax/f", "exists": True,
                                   "mtime_ns": final, "ctime_ns": final}}}
        an = run([wp(5 * NS, T0, now)], trailer=trailer)
        assert an.files[0].final_cmp == cmp and an.files[0].final_mtime == final


def test_timestamps_set_externally_mid_run():
    now = T0 + 5 * NS
    yesterday = T0 - 86400 * NS
    events = [wp(5 * NS, T0, now),
              # touch -d yesterday between the faults; the next fault updates
              wp(8 * NS, yesterday, T0 + 8 * NS, pgoff=1),
              # and one after another touch that the kernel failed to update
              wp(9 * NS, yesterday, yesterday, pgoff=2)]
    an = run(events)
    assert verdicts(an) == ["UPDATED", "UPDATED", "MISSED"]
    (f,) = an.files
    assert f.external == 2
    assert not an.faults[0].external and an.faults[1].external
    assert "set externally" in an.faults[1].detail


def test_truncated_recording_analysed():
    an = run([wp(5 * NS, T0, T0 + 5 * NS)], truncated=True, reason="cut short")
    s = an.summary()
    assert s["truncated"] and s["truncation_reason"] == "cut short"
    assert s["write_faults"] == 1


def test_lost_events_summed():
    an = run([], lost=[3, 4])
    assert an.summary()["lost"] == 7 and an.summary()["lost_per_cpu"] == [3, 4]
    # Faults whose return never came count too, and every reason is shown.
    blind = {"ring_full": 7, "wp_return_missed": 0, "unfinished": 2}
    an = run([], lost=[3, 4], trailer={"blind": blind})
    assert an.summary()["lost"] == 9 and an.summary()["lost_by_reason"] == blind


def _only_counted(e):
    """Whether record counts the event e in the kernel (COUNTS) instead of
    sending it: a retried do_wp_page attempt, an fs_dax tracepoint."""
    d = decode.event(e)
    if d["type"] == WP:
        return bool(d["ret"] & C("PFT_VM_FAULT_RETRY"))
    return d["type"] in (C("PFT_EV_DAX_FAULT"), C("PFT_EV_DAX_WRITEBACK"),
                         C("PFT_EV_DAX_MKWRITE"))


def _counted(events):
    """The COUNTS rows record's kernel side makes of what _only_counted()."""
    rows = {}
    for d in map(decode.event, filter(_only_counted, events)):
        row = rows.setdefault((d["dev"], d["ino"], d["pid"]), dict(
            {"dev": d["dev"], "ino": d["ino"], "pid": d["pid"], "comm": d["comm"]},
            **dict.fromkeys(layout.FILE_COUNTERS, 0)))
        if d["type"] == WP:
            row["retries"] += 1
        elif d["type"] == C("PFT_EV_DAX_FAULT"):
            row["dax_pmd_faults" if d["flags"] & C("PFT_F_PMD") else "dax_pte_faults"] += 1
            row["dax_write_faults"] += bool(d["fault_flags"] & WRITE)
        elif d["type"] == C("PFT_EV_DAX_WRITEBACK"):
            row["reprotects"] += 1
            row["reprotect_pages"] += d["arg"]
        else:
            row["map_sync"] += 1
    return list(rows.values())


@pytest.mark.parametrize("selection", [
    None, dict(pid=200), dict(comm="a"), dict(pid=300), dict(file="/g"), dict(file="/f")])
def test_counts_kept_in_the_kernel_read_as_their_events_did(selection):
    """record counts a retried do_wp_page and the fs_dax tracepoints per
    (file, process) in the kernel: a report of the COUNTS gives each file
    and the summary what the same events gave, under every selection."""
    now = T0 + 5 * NS
    events = []
    for pid, comm, ino, t in ((100, "a", 12, 5), (200, "b", 12, 6), (200, "b", 13, 7)):
        who = dict(pid=pid, comm=comm, ino=ino)
        events += [
            wp(t * NS, T0, T0, ret=C("PFT_VM_FAULT_RETRY"), **who),
            ev(ts=t * NS + 500, m=(T0, now), roles=EXT4_ROLES, flags=FILE | IN_WP | DAX,
               fault_flags=WRITE | MKWRITE, **who),
            wp(t * NS + 400, T0, now, flags=FILE | DAX | C("PFT_F_HANDLER_RAN"), **who),
            ev(type=C("PFT_EV_DAX_FAULT"), fault_flags=WRITE | MKWRITE, ts=t * NS + 450, **who),
            ev(type=C("PFT_EV_DAX_FAULT"), fault_flags=WRITE, flags=C("PFT_F_PMD"), **who),
            ev(type=C("PFT_EV_DAX_WRITEBACK"), arg=pid // 100, **who),
            ev(type=C("PFT_EV_DAX_MKWRITE"), **who),
        ]
    meta = {"files": {KEY: {"path": "/mnt/dax/f"}, "259:3:13": {"path": "/mnt/dax/g"}}}
    sel = correlate.Selection(**selection) if selection else None
    as_events = correlate.analyse(FakeRecording(events, meta=meta), selection=sel)
    counted = correlate.analyse(FakeRecording(
        [e for e in events if not _only_counted(e)], meta=meta,
        file_counts=_counted(events)), selection=sel)
    fields = layout.FILE_COUNTERS + ["wp_entries", "write_faults", "handler_calls"]
    per_file = [[(f.path, name, getattr(f, name)) for name in fields] for f in as_events.files]
    assert per_file == [[(f.path, name, getattr(f, name)) for name in fields]
                        for f in counted.files]
    # Only the events themselves differ.
    stream = ("events", "event_counts")
    assert as_events.summary() == dict(counted.summary(),
                                       **{k: as_events.summary()[k] for k in stream})
    if selection is None:
        assert [f.retries for f in counted.files] == [2, 1]
        assert [f.reprotect_pages for f in counted.files] == [3, 2]


# -- selection, keep_faults, fast path ---------------------------------------

def _mixed():
    old = T0 + NS
    return [wp(5 * NS, T0, T0 + 5 * NS, pid=100, comm="a"),
            wp(6 * NS, old, old, pid=200, comm="b", pgoff=1),
            wp(7 * NS, old, old, pid=200, comm="b", ino=13, pgoff=2)]


def test_selection_filters():
    meta = {"files": {KEY: {"path": "/mnt/dax/f"}, "259:3:13": {"path": "/mnt/dax/g"}}}
    rec = FakeRecording(_mixed(), meta=meta)
    an = correlate.analyse(rec, selection=correlate.Selection(pid=200))
    assert an.write_faults == 2 and [p.pid for p in an.processes] == [200]
    an = correlate.analyse(rec, selection=correlate.Selection(comm="a"))
    assert an.write_faults == 1
    an = correlate.analyse(rec, selection=correlate.Selection(file="/g"))
    assert [f.path for f in an.files] == ["/mnt/dax/g"]
    an = correlate.analyse(rec, selection=correlate.Selection(verdict="missed"))
    assert verdicts(an) == ["MISSED", "MISSED"]
    assert an.summary()["filter"] == "verdict=MISSED"


def test_keep_faults_false_keeps_problems():
    an = correlate.analyse(FakeRecording(_mixed()), keep_faults=False)
    assert an._fault_rows == [] and len(an.problems) == 2 and len(findings(an)) == 2
    assert an.summary()["write_faults"] == 3


def test_real_recording_matches_fake(tmp_path):
    from pfntrace.recording import Recording, RecordingWriter

    events = _mixed()
    fake = FakeRecording(events)
    w = RecordingWriter.create(tmp_path / "r.pft", fake.header)
    w.add_meta(fake.meta)
    for e in events:
        w.add_events(e)
    w.close({"duration_ns": 3 * NS})
    with Recording.open(tmp_path / "r.pft") as rec:
        fast = correlate.analyse(rec)
    slow = correlate.analyse(fake)
    assert [f.as_dict() for f in fast.faults] == [f.as_dict() for f in slow.faults]
    assert fast.summary()["duration_ns"] == 3 * NS


def test_a_file_whose_filesystem_was_unmounted_is_not_deleted():
    trailer = {"statx": {KEY: {"path": "/mnt/dax/f", "exists": False, "unmounted": True}}}
    an = run([wp(5 * NS, T0, T0 + 5 * NS)], trailer=trailer)
    (f,) = an.files
    assert f.unmounted and not f.deleted and f.final_cmp == "unmounted"
    assert f.write_faults == 1
