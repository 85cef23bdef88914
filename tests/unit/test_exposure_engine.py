"""pfntrace.exposure: write-exposure windows and the stats made inside them."""

from pfntrace.exposure import OPEN, STAMP, UNMAP, WRITEBACK, Exposure

DEV, INO, OTHER = 259 << 20, 12, 13
WRITER, OBSERVER = 100, 200
MTIME = 1_700_000_000 * 10**9


def _rounds(e, n, stat_after_store=True, msync_before_stat=False, unmap_before_stat=False):
    """The issue's workload: per round msync; a store (faults, stamps);
    [msync | munmap]; stat; a second store (no fault); msync; stat.  The
    fault of each round stamps a new mtime (a fine-grained clock)."""
    t = 0
    for i in range(n):
        mtime = MTIME + i
        t += 10
        e.writeback(t, DEV, INO, 0)
        t += 10
        e.fault(t, DEV, INO, 0, WRITER, mtime_ns=mtime)
        if msync_before_stat:
            t += 1
            e.writeback(t, DEV, INO, 0)
        if unmap_before_stat:
            t += 1
            e.unmap(t, DEV, INO, 0, 1, WRITER)
        t += 10
        if stat_after_store:
            e.observe(t, DEV, INO, OBSERVER, "backup", mtime)
        t += 10           # the second store: nothing to see
        t += 10
        e.writeback(t, DEV, INO, 0)
        t += 10
        e.observe(t, DEV, INO, OBSERVER, "backup", mtime)
    e.finish(t + 1)
    return e


def test_each_round_exposes_its_stat_until_the_msync():
    e = _rounds(Exposure(), 20)
    assert len(e.observations) == 20 and e.unexposed == 20
    assert len(e.windows) == 20
    for ob in e.observations:
        (page,) = ob.pages
        assert page.ended_by == WRITEBACK and page.until_ns - ob.ts_ns == 20
        assert ob.open_after_ns(e.end_ns) == 20
        assert page.window.cause == WRITEBACK and page.window.length_ns(e.end_ns) == 30


def test_a_stat_after_msync_is_not_exposed():
    e = _rounds(Exposure(), 5, msync_before_stat=True)
    assert e.observations == [] and e.unexposed == 10


def test_a_stat_after_munmap_is_not_exposed():
    e = _rounds(Exposure(), 5, unmap_before_stat=True)
    assert e.observations == [] and e.unexposed == 10
    assert {w.cause for w in e.windows} == {UNMAP}


def test_a_file_never_observed_has_windows_and_no_observation():
    e = _rounds(Exposure(), 3, stat_after_store=False)
    assert len(e.windows) == 3 and e.observations == [] and e.unexposed == 3


def test_a_window_stays_open_while_any_process_maps_the_page_writable():
    e = Exposure()
    e.fault(1, DEV, INO, 0, WRITER)
    e.fault(2, DEV, INO, 0, WRITER + 1)
    assert len(e.windows) == 1
    e.unmap(4, DEV, INO, 0, 1, WRITER)
    assert e.observe(6, DEV, INO, OBSERVER) is not None
    e.unmap(7, DEV, INO, 0, 16, WRITER + 1)    # its whole mapping
    (w,) = e.windows
    assert (w.closed_ns, w.cause) == (7, UNMAP)
    assert e.observe(8, DEV, INO, OBSERVER) is None
    (ob,) = e.observations
    assert ob.pages[0].until_ns == 7 and ob.open_after_ns(100) == 1


def test_an_unmap_of_another_process_or_file_closes_nothing():
    e = Exposure()
    e.fault(1, DEV, INO, 3, WRITER)
    e.unmap(2, DEV, INO, 0, 16, OBSERVER)
    e.unmap(3, DEV, OTHER, 0, 16, WRITER)
    e.writeback(4, DEV, OTHER, 3)
    e.writeback(5, DEV, INO, 4)
    assert e.open_windows() == 1 and e.windows[0].cause == OPEN


def test_a_foreign_unmap_closes_every_mapping_of_its_pages():
    """truncate unmaps the pages from every address space, from the
    truncating task (unmap_page_range with another mm)."""
    e = Exposure()
    e.fault(1, DEV, INO, 5, WRITER)
    e.fault(2, DEV, INO, 5, WRITER + 1)
    e.fault(3, DEV, INO, 9, WRITER)
    e.unmap(4, DEV, INO, 4, 4, OBSERVER, foreign=True)
    assert [(w.pgoff, w.cause) for w in e.windows] == [(5, UNMAP), (9, OPEN)]


def test_a_later_stamp_ends_the_exposure_of_a_stat_that_saw_an_older_mtime():
    e = Exposure()
    e.fault(10, DEV, INO, 0, WRITER, mtime_ns=MTIME)
    ob = e.observe(20, DEV, INO, OBSERVER, mtime_ns=MTIME)
    e.fault(25, DEV, INO, 1, WRITER, mtime_ns=MTIME)        # same tick: no news
    assert ob.pages[0].until_ns is None
    e.fault(30, DEV, INO, 2, WRITER, mtime_ns=MTIME + 1)    # a new mtime
    # The pages open at the stat (page 1's same-tick fault after it is an
    # invisible write of its own: correlate's verdict.invisible).
    assert [(p.window.pgoff, p.until_ns, p.ended_by) for p in ob.pages] == [(0, 30, STAMP)]
    e.writeback(40, DEV, INO, 0, 3)
    assert ob.open_after_ns(100) == 10              # the stamp came first
    assert [w.cause for w in e.windows] == [WRITEBACK] * 3


def test_windows_still_open_at_the_end_are_open():
    e = Exposure()
    e.fault(10, DEV, INO, 0, WRITER)
    ob = e.observe(15, DEV, INO, OBSERVER)
    e.finish(100)
    (w,) = e.windows
    assert w.cause == OPEN and w.length_ns(e.end_ns) == 90
    assert ob.pages[0].ended_by == OPEN and ob.open_after_ns(e.end_ns) == 85


def test_a_pmd_window_closes_by_a_writeback_inside_it():
    e = Exposure()
    e.fault(1, DEV, INO, 512, WRITER, npages=512)
    e.writeback(2, DEV, INO, 0, 512)       # the PMD before: not this one
    assert e.open_windows() == 1
    e.writeback(3, DEV, INO, 700, 1)       # inside it
    assert e.windows[0].cause == WRITEBACK and e.open_windows() == 0


def test_a_big_close_matches_the_open_windows():
    e = Exposure()
    for p in range(0, 1000, 7):
        e.fault(p, DEV, INO, p, WRITER)
    e.unmap(2000, DEV, INO, 0, 1 << 20, WRITER)
    assert e.open_windows() == 0 and {w.cause for w in e.windows} == {UNMAP}


def test_observations_list_every_open_page_and_an_unwatched_file_costs_nothing():
    e = Exposure()
    for p in (3, 1, 2):
        e.fault(p, DEV, INO, p, WRITER)
    ob = e.observe(5, DEV, INO, OBSERVER, "rsync", MTIME)
    assert [p.window.pgoff for p in ob.pages] == [1, 2, 3]
    assert (ob.pid, ob.comm, ob.key) == (OBSERVER, "rsync", (DEV, INO))
    assert e.observe(6, DEV, OTHER, OBSERVER) is None and e.unexposed == 1


def test_the_counts_and_histograms_without_keeping_anything():
    """What record's report and a streamed view count, in memory that does
    not grow with the recording."""
    e = _rounds(Exposure(keep=False), 20)
    assert e.windows == [] and e.observations == [] and e._watching == {}
    assert (e.opened, e.exposed, e.unexposed) == (20, 20, 20)
    assert e.closed == {WRITEBACK: 20}
    assert e.window_ns[30 .bit_length()] == 20      # each open 30 ns
    assert e.after_ns[20 .bit_length()] == 20       # each stat exposed 20 ns


def test_what_is_open_at_the_end_is_counted_open():
    e = Exposure(keep=False)
    e.fault(10, DEV, INO, 0, WRITER)
    e.fault(11, DEV, INO, 1, WRITER)
    e.observe(20, DEV, INO, OBSERVER)
    e.writeback(30, DEV, INO, 0)
    e.finish(100)
    assert e.closed == {WRITEBACK: 1, OPEN: 1}
    assert e.after_ns[80 .bit_length()] == 1        # page 1, open to the end


def test_a_window_knows_who_closed_it():
    """Another process's sync closes windows: the window names it; an unmap
    names the unmapping process; a foreign one (truncate) the truncating
    one."""
    syncer = 77
    e = Exposure()
    e.fault(1, DEV, INO, 0, WRITER)
    e.fault(1, DEV, INO, 1, WRITER)
    e.fault(1, DEV, INO, 2, WRITER)
    e.writeback(2, DEV, INO, 0, 1, syncer)
    e.unmap(3, DEV, INO, 1, 1, WRITER)
    e.unmap(4, DEV, INO, 2, 1, OBSERVER, foreign=True)
    e.finish(5)
    assert [(w.pgoff, w.cause, w.closed_by) for w in e.windows] == [
        (0, WRITEBACK, syncer), (1, UNMAP, WRITER), (2, UNMAP, OBSERVER)]
