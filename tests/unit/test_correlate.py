"""The correlation engine on hand-built event streams (layout.encode)."""

import pytest

from pfntrace import correlate, layout
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
                 truncated=False, reason=None):
        self._events = [layout.decode(e) for e in events]
        self.header = {"kernel": "6.12.117", "plan": {"huge_fault_arg_is_order": True},
                       "clock": {"realtime_minus_monotonic_ns": T0, "tick_ns": TICK}}
        self.header.update(header or {})
        self.meta = meta if meta is not None else {"files": {KEY: {"path": "/mnt/dax/f"}}}
        self.trailer = trailer
        self.lost = lost or [0, 0]
        self.truncated = truncated
        self.truncation_reason = reason

    def iter_events(self):
        return iter(self._events)


def split(ns):
    return divmod(ns, NS)


def ev(type=HANDLER, ts=1 * NS, m=(None, None), c=None, pid=100,
       tid=None, comm="writer", dev=DEV, ino=12, **kw):
    """One event; m/c are wall-clock ns before/after (c defaults to m)."""
    c = c if c is not None else m
    fields = dict(type=type, ts_ns=ts, pid=pid, tid=tid if tid is not None else pid, comm=comm, dev=dev,
                  ino=ino, duration_ns=kw.pop("duration_ns", 2000))
    if m[0] is not None:
        (ms0, mn0), (ms1, mn1) = split(m[0]), split(m[1])
        (cs0, cn0), (cs1, cn1) = split(c[0]), split(c[1])
        fields.update(mtime_sec=[ms0, ms1], mtime_nsec=[mn0, mn1],
                      ctime_sec=[cs0, cs1], ctime_nsec=[cn0, cn1])
    fields.update(kw)
    return layout.encode(**fields)


def pfn(ts, before, after, **kw):
    """An xfs-style ->pfn_mkwrite return inside do_wp_page."""
    kw.setdefault("roles", R_PFN)
    kw.setdefault("flags", IN_WP | DAX)
    kw.setdefault("fault_flags", WRITE | MKWRITE)
    return ev(ts=ts, m=(before, after), **kw)


def run(events, **kw):
    tol = kw.pop("tolerance_ns", 1 * MS)
    return correlate.analyse(FakeRecording(events, **kw), tolerance_ns=tol)


def verdicts(an):
    return [f.verdict for f in an.faults]


# -- verdicts ---------------------------------------------------------------

def test_updated():
    an = run([pfn(5 * NS, T0 + 1 * NS, T0 + 5 * NS, ftu_calls=1)])
    (f,) = an.faults
    assert (f.kind, f.verdict, f.key, f.path) == ("pfn_mkwrite", "UPDATED", KEY, "/mnt/dax/f")
    assert f.ftu_calls == 1 and f.latency == 2000 and f.pid == 100 and f.comm == "writer"
    assert "->" in f.detail
    assert findings(an) == []


def test_same_tick_second_is_current():
    now = T0 + 5 * NS
    an = run([pfn(5 * NS, T0 + 1 * NS, now, pgoff=0),
              pfn(5 * NS + 1000, now, now, pgoff=1)])
    assert verdicts(an) == ["UPDATED", "CURRENT"]
    assert an.summary()["verdicts"]["MISSED"] == 0


def test_missed_stale_mtime():
    old = T0 + 1 * NS
    an = run([pfn(5 * NS, old, old, pgoff=7)])
    (f,) = an.faults
    assert f.verdict == "MISSED"
    assert "mtime stayed at" in f.detail and "4.000 s before" in f.detail
    (line,) = findings(an)
    assert line.startswith("MISSED /mnt/dax/f page 7 pid 100 (writer): mtime stayed at")


def test_within_one_tick_and_tolerance_is_current_outside_is_missed():
    # The coarse clock lags ts_ns by up to one tick (4 ms) + 1 ms tolerance.
    at5, at6 = T0 + 5 * NS, T0 + 6 * NS
    an = run([pfn(5 * NS, at5 - 4 * MS - MS // 2, at5 - 4 * MS - MS // 2),
              pfn(6 * NS, at6 - 6 * MS, at6 - 6 * MS)])
    assert verdicts(an) == ["CURRENT", "MISSED"]
    # Without clock.tick_ns the longest tick (HZ=100, 10 ms) is assumed.
    an = run([pfn(6 * NS, at6 - 6 * MS, at6 - 6 * MS)],
             header={"clock": {"realtime_minus_monotonic_ns": T0}})
    assert verdicts(an) == ["CURRENT"] and an.tick_ns == 10 * MS


def test_only_mtime_moved_is_missed_with_detail():
    old, now = T0 + 1 * NS, T0 + 5 * NS
    an = run([pfn(5 * NS, old, now, c=(old, old))])
    (f,) = an.faults
    assert f.verdict == "MISSED" and "ctime stayed" in f.detail
    an = run([pfn(5 * NS, old, old, c=(old, now))])
    assert an.faults[0].verdict == "MISSED" and "mtime stayed" in an.faults[0].detail


def test_fine_grained_timestamp_newer_than_tick_is_current():
    fine = T0 + 5 * NS + 3 * MS      # multigrain: newer than the coarse tick
    an = run([pfn(5 * NS + 4 * MS, fine, fine)])
    assert verdicts(an) == ["CURRENT"]


def test_multigrain_queried_bit_masked():
    now = T0 + 5 * NS
    s, n = split(now)
    # Unchanged ctime, but bit 31 set at return only (a stat in between).
    raw = layout.encode(type=HANDLER, ts_ns=5 * NS, pid=1, tid=1,
                        dev=DEV, ino=12, roles=R_PFN, flags=IN_WP, fault_flags=3,
                        mtime_sec=[s, s], mtime_nsec=[n, n], ctime_sec=[s, s],
                        ctime_nsec=[n, n | (1 << 31)])
    an = correlate.analyse(FakeRecording([raw]))
    (f,) = an.faults
    assert f.verdict == "CURRENT"
    assert f.ctime_after == now            # not ~2 s later
    # Both set and a real update of mtime+ctime: UPDATED, sane values.
    s0, n0 = split(T0 + 1 * NS)
    raw = layout.encode(type=HANDLER, ts_ns=5 * NS, pid=1, tid=1,
                        dev=DEV, ino=12, roles=R_PFN, flags=IN_WP, fault_flags=3,
                        mtime_sec=[s0, s], mtime_nsec=[n0, n], ctime_sec=[s0, s],
                        ctime_nsec=[n0 | (1 << 31), n | (1 << 31)])
    (f,) = correlate.analyse(FakeRecording([raw])).faults
    assert f.verdict == "UPDATED" and f.ctime_after == now and f.ctime_before == T0 + NS


def test_clock_set_backwards_uses_right_sample():
    back = T0 - 3600 * NS
    meta = {"files": {}, "clock_samples": [[0, T0], [10 * NS, back]]}
    stale = T0 - 1800 * NS
    events = [
        # before the change: offset T0, so this mtime is half an hour stale
        pfn(5 * NS, stale, stale, pgoff=0),
        # after the change at mono 10 s: wall clock is an hour back
        pfn(20 * NS, back + 20 * NS, back + 20 * NS, pgoff=1),
    ]
    an = run(events, meta=meta)
    assert verdicts(an) == ["MISSED", "CURRENT"]
    assert an.faults[1].wall == back + 20 * NS
    # Without samples the header offset is used: the second looks stale.
    an = run(events, meta={"files": {}})
    assert verdicts(an) == ["MISSED", "MISSED"]


def test_clock_sample_after_event_falls_back_to_header():
    meta = {"files": {}, "clock_samples": [[100 * NS, T0 - 3600 * NS]]}
    an = run([pfn(5 * NS, T0 + 5 * NS, T0 + 5 * NS)], meta=meta)
    assert verdicts(an) == ["CURRENT"]


def test_unknown_without_timestamps():
    an = run([ev(roles=R_PFN, flags=IN_WP, fault_flags=3)])
    assert verdicts(an) == ["UNKNOWN"]
    assert findings(an) == []


# -- kinds ------------------------------------------------------------------

def test_ext4_roles_on_dax_inode_is_pfn_mkwrite():
    an = run([pfn(5 * NS, T0, T0 + 5 * NS, roles=EXT4_ROLES, flags=IN_WP | DAX)])
    assert an.faults[0].kind == "pfn_mkwrite"
    an = run([pfn(5 * NS, T0, T0 + 5 * NS, roles=EXT4_ROLES, flags=IN_WP)])
    assert an.faults[0].kind == "page_mkwrite"


def test_xfs_distinct_handlers():
    an = run([pfn(5 * NS, T0, T0 + 5 * NS, roles=R_PFN),
              pfn(6 * NS, T0, T0 + 6 * NS, roles=R_PAGE, flags=IN_WP)])
    assert [f.kind for f in an.faults] == ["pfn_mkwrite", "page_mkwrite"]
    s = an.summary()
    assert (s["pfn_mkwrite"], s["page_mkwrite"], s["write_faults"]) == (1, 1, 2)


def test_ext4_612_wp_retry_then_handler_is_one_fault():
    now = T0 + 5 * NS
    events = [
        ev(type=WP, ts=5 * NS, vm_flags=SHARED_MIXED, ret=C("PFT_VM_FAULT_RETRY"),
           flags=C("PFT_F_HAS_PFN_MKWRITE")),
        pfn(5 * NS + 500, T0, now, roles=EXT4_ROLES, flags=IN_WP | DAX),
        ev(type=WP, ts=5 * NS + 400, vm_flags=SHARED_MIXED, ret=C("PFT_VM_FAULT_NOPAGE"),
           flags=C("PFT_F_HAS_PFN_MKWRITE") | C("PFT_F_HANDLER_RAN")),
    ]
    an = run(events)
    s = an.summary()
    assert s["write_faults"] == 1 and s["retries"] == 1 and s["wp_entries"] == 2
    assert verdicts(an) == ["UPDATED"]


def test_handler_retry_is_not_a_write_fault():
    an = run([pfn(5 * NS, T0, T0, ret=C("PFT_VM_FAULT_RETRY"))])
    assert an.summary()["write_faults"] == 0 and an.summary()["retries"] == 1


def test_no_notifier():
    old = T0 + NS
    events = [
        ev(type=WP, ts=5 * NS, m=(old, old), vm_flags=SHARED_PFN, pgoff=4),
        # has ->pfn_mkwrite but no traced handler ran: only a wp entry
        ev(type=WP, ts=6 * NS, vm_flags=SHARED_PFN, flags=C("PFT_F_HAS_PFN_MKWRITE")),
        # an error return: not a write fault
        ev(type=WP, ts=7 * NS, vm_flags=SHARED_PFN, ret=2),
        # private mapping: not ours
        ev(type=WP, ts=8 * NS, vm_flags=C("PFT_VM_PFNMAP")),
    ]
    an = run(events)
    (f,) = an.faults
    assert (f.kind, f.verdict, f.pgoff) == ("no_notifier", "NO_NOTIFIER", 4)
    s = an.summary()
    assert s["wp_entries"] == 4 and s["write_faults"] == 1 and s["no_notifier"] == 1
    assert s["verdicts"]["NO_NOTIFIER"] == 1
    (line,) = findings(an)
    assert line.startswith("NO_NOTIFIER /mnt/dax/f page 4 pid 100 (writer):")


@pytest.mark.parametrize("is_order,arg,kind", [
    (True, 9, "pmd"), (True, 18, "pmd"), (True, 0, "fault"), (True, 1, "fault"),
    (False, 1, "pmd"), (False, 2, "pmd"), (False, 0, "fault"),
])
def test_huge_fault_size_conventions(is_order, arg, kind):
    e = ev(ts=5 * NS, m=(T0, T0 + 5 * NS), roles=R_HUGE, flags=DAX, fault_flags=WRITE,
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
    # A lone ->fault write (xfs, ext2) is a first-touch fault too.
    an = run([ev(ts=5 * NS, m=(T0, now), roles=R_FAULT, fault_flags=WRITE)])
    assert [f.kind for f in an.faults] == ["fault"]


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


# -- files and processes ----------------------------------------------------

def test_two_writers_one_file():
    now = T0 + 5 * NS
    old = T0 + NS
    events = [pfn(5 * NS, T0, now, pid=100, comm="w1"),
              pfn(5 * NS + 10, now, now, pid=200, comm="w2", pgoff=1),
              pfn(6 * NS, old, old, pid=200, tid=201, comm="w2", pgoff=2)]
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
    an = run([pfn(5 * NS, T0, T0 + 5 * NS, ino=99)])
    assert an.files[0].path == "259:3:99" and an.files[0].devstr == "259:3"


def test_deleted_file_keeps_faults():
    trailer = {"statx": {KEY: {"path": "/mnt/dax/f", "exists": False}}}
    an = run([pfn(5 * NS, T0, T0 + 5 * NS)], trailer=trailer)
    (f,) = an.files
    assert f.deleted and f.final_cmp == "deleted" and f.write_faults == 1


def test_final_statx_compared_with_last_fault():
    now = T0 + 5 * NS
    for final, cmp in ((now, "equal"), (now + NS, "newer"), (now - NS, "older")):
        trailer = {"statx": {KEY: {"path": "/mnt/dax/f", "exists": True,
                                   "mtime_ns": final, "ctime_ns": final}}}
        an = run([pfn(5 * NS, T0, now)], trailer=trailer)
        assert an.files[0].final_cmp == cmp and an.files[0].final_mtime == final


def test_timestamps_set_externally_mid_run():
    now = T0 + 5 * NS
    yesterday = T0 - 86400 * NS
    events = [pfn(5 * NS, T0, now),
              # touch -d yesterday between the faults; the next fault updates
              pfn(8 * NS, yesterday, T0 + 8 * NS, pgoff=1),
              # and one after another touch that the kernel failed to update
              pfn(9 * NS, yesterday, yesterday, pgoff=2)]
    an = run(events)
    assert verdicts(an) == ["UPDATED", "UPDATED", "MISSED"]
    (f,) = an.files
    assert f.external == 2
    assert not an.faults[0].external and an.faults[1].external
    assert "set externally" in an.faults[1].detail


def test_truncated_recording_analysed():
    an = run([pfn(5 * NS, T0, T0 + 5 * NS)], truncated=True, reason="cut short")
    s = an.summary()
    assert s["truncated"] and s["truncation_reason"] == "cut short"
    assert s["write_faults"] == 1


def test_lost_events_summed():
    an = run([], lost=[3, 4])
    assert an.summary()["lost"] == 7 and an.summary()["lost_per_cpu"] == [3, 4]


# -- selection, keep_faults, fast path ---------------------------------------

def _mixed():
    old = T0 + NS
    return [pfn(5 * NS, T0, T0 + 5 * NS, pid=100, comm="a"),
            pfn(6 * NS, old, old, pid=200, comm="b", pgoff=1),
            pfn(7 * NS, old, old, pid=200, comm="b", ino=13, pgoff=2)]


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


def test_row_struct_matches_layout():
    raw = layout.encode(ts_ns=1, duration_ns=2, ino=3, pgoff=4, vm_flags=5,
                        mtime_sec=[6, 7], ctime_sec=[8, 9], mtime_nsec=[10, 11],
                        ctime_nsec=[12, 13], type=14, pid=15, tid=16, dev=17,
                        fault_flags=18, ret=19, roles=20, flags=21, ftu_calls=22,
                        arg=23, comm="x", address=99, handler=98, cpu=97)
    (row,) = correlate.iter_rows(raw)
    assert row[:-1] == tuple(range(1, 24))
    assert row == correlate.row_from_dict(layout.decode(raw))[:-1] + (row[-1],)
    assert row[-1].rstrip(b"\0") == b"x"


def test_unchanged_after_file_update_time_is_current_even_when_the_tick_is_late():
    # Seen in the lab under TCG (6.12 ext4): the coarse clock lagged the
    # fault by 6 ms at HZ=250.  file_update_time ran and found mtime equal to
    # its current_time(): the kernel's own judgment is CURRENT.
    at6 = T0 + 6 * NS
    an = run([pfn(6 * NS, at6 - 6 * MS, at6 - 6 * MS, ftu_calls=1),
              pfn(6 * NS + 1, at6 - 6 * MS, at6 - 6 * MS, ftu_calls=0, pgoff=1)])
    assert verdicts(an) == ["CURRENT", "MISSED"]


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


def test_probed_wp_pfn_shared_decides_the_kind():
    # Where wp_pfn_shared is a symbol the BPF side marks the fault
    # PFT_F_PFN_PATH: even a handler that fills only ->page_mkwrite's slot on
    # a non-DAX inode was called on the pfn path.
    now = T0 + 5 * NS
    pfn_path = C("PFT_F_PFN_PATH")
    an = run([ev(ts=5 * NS, m=(T0, now), roles=R_PAGE, fault_flags=WRITE | MKWRITE,
                 flags=IN_WP | pfn_path),
              ev(ts=6 * NS, m=(now, now + NS), roles=R_PAGE, fault_flags=WRITE | MKWRITE,
                 flags=IN_WP, pgoff=1)])
    assert [f.kind for f in an.faults] == ["pfn_mkwrite", "page_mkwrite"]
