"""pfntrace.exposure: write-exposure windows and the stats made inside them."""

from pfntrace.exposure import EXIT, OPEN, STAMP, UNMAP, WRITEBACK, Exposure

DEV, INO, OTHER = 259 << 20, 12, 13
WRITER, OBSERVER = 100, 200
MAP = 0x7f0000000000


def _rounds(e, n, stat_after_store=True, msync_before_stat=False, unmap_before_stat=False):
    """The issue's workload: per round msync; a store (faults, stamps);
    [msync | munmap]; stat; a second store (no fault); msync; stat."""
    t = 0
    for _ in range(n):
        t += 10
        e.writeback(t, DEV, INO, 0)
        t += 10
        e.fault(t, DEV, INO, 0, WRITER, MAP)
        if msync_before_stat:
            t += 1
            e.writeback(t, DEV, INO, 0)
        if unmap_before_stat:
            t += 1
            e.unmap(t, WRITER, MAP, MAP + 4096)
        t += 10
        if stat_after_store:
            e.observe(t, DEV, INO, OBSERVER, "backup")
        t += 10           # the second store: nothing to see
        t += 10
        e.writeback(t, DEV, INO, 0)
        t += 10
        e.observe(t, DEV, INO, OBSERVER, "backup")
        if unmap_before_stat:
            t += 1
            e.unmap(t, WRITER, MAP, MAP + 4096)   # nothing mapped: no-op
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


def test_a_window_stays_open_while_any_mapping_holds_the_page():
    e = Exposure()
    e.fault(1, DEV, INO, 0, WRITER, MAP)
    e.fault(2, DEV, INO, 0, WRITER + 1, MAP + 4096, stamped=False)
    e.fault(3, DEV, INO, 0, WRITER, MAP + 8192 * 16, stamped=False)  # mapped twice
    assert len(e.windows) == 1
    e.unmap(4, WRITER, MAP, MAP + 4096)
    e.mm_gone(5, WRITER + 1)
    assert e.observe(6, DEV, INO, OBSERVER) is not None
    e.mm_gone(7, WRITER)
    (w,) = e.windows
    assert (w.closed_ns, w.cause) == (7, EXIT)
    assert e.observe(8, DEV, INO, OBSERVER) is None
    (ob,) = e.observations
    assert (ob.pages[0].until_ns, ob.pages[0].ended_by) == (7, EXIT)


def test_writeback_closes_every_mapping_and_later_unmaps_are_no_ops():
    e = Exposure()
    e.fault(1, DEV, INO, 3, WRITER, MAP)
    e.fault(2, DEV, INO, 3, WRITER + 1, MAP, stamped=False)
    e.writeback(3, DEV, INO, 3)
    e.unmap(4, WRITER, MAP, MAP + 4096)
    e.mm_gone(5, WRITER + 1)
    (w,) = e.windows
    assert (w.closed_ns, w.cause) == (3, WRITEBACK)
    # the page faults again: a new window, closed by its own unmap
    e.fault(6, DEV, INO, 3, WRITER, MAP)
    e.unmap(7, WRITER, MAP, MAP + 4096)
    assert [(w.opened_ns, w.closed_ns, w.cause) for w in e.windows] == [
        (1, 3, WRITEBACK), (6, 7, UNMAP)]


def test_a_pmd_window_closes_with_its_entry():
    e = Exposure()
    e.fault(1, DEV, INO, 512, WRITER, MAP, npages=512)
    e.fault(2, DEV, INO, 7, WRITER, MAP + (1 << 21), stamped=False)
    e.writeback(3, DEV, INO, 0, npages=1)        # another entry: nothing
    assert all(w.closed_ns is None for w in e.windows)
    e.writeback(4, DEV, INO, 512, npages=512)
    assert [(w.pgoff, w.closed_ns) for w in e.windows] == [(512, 4), (7, None)]


def test_a_later_stamp_ends_the_exposure_a_same_tick_fault_does_not():
    e = Exposure()
    e.fault(1, DEV, INO, 0, WRITER, MAP)
    ob = e.observe(2, DEV, INO, OBSERVER)
    e.fault(3, DEV, INO, 1, WRITER, MAP + 4096, stamped=False)   # mtime unchanged
    e.fault(4, DEV, INO, 2, WRITER, MAP + 8192, stamped=True)    # mtime moves
    e.writeback(5, DEV, INO, 0, npages=4)
    (page,) = ob.pages
    assert (page.until_ns, page.ended_by) == (4, STAMP)
    assert page.window.closed_ns == 5


def test_windows_of_other_files_do_not_expose_a_stat():
    e = Exposure()
    e.fault(1, DEV, OTHER, 0, WRITER, MAP)
    assert e.observe(2, DEV, INO, OBSERVER) is None
    assert e.observe(3, DEV + 1, OTHER, OBSERVER) is None
    e.fault(4, DEV, INO, 0, WRITER, MAP + 4096)
    ob = e.observe(5, DEV, INO, OBSERVER)
    assert [p.window.ino for p in ob.pages] == [INO]


def test_open_at_the_end():
    e = Exposure()
    e.fault(10, DEV, INO, 0, WRITER, MAP)
    ob = e.observe(15, DEV, INO, OBSERVER, "rsync")
    e.finish(115)
    (page,) = ob.pages
    assert (page.until_ns, page.ended_by) == (None, OPEN)
    assert ob.open_after_ns(e.end_ns) == 100
    assert e.windows[0].cause == OPEN and e.windows[0].length_ns(e.end_ns) == 105

