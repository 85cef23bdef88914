"""What pfntrace reads through memory instead of map syscalls (mapmem.py):
the layout of a mapped array, and the rows and counters tracer.py makes of
it, on anonymous memory laid out the way the kernel lays out the maps."""

from pfntrace import layout, tracer
from pfntrace.mapmem import MappedArray

ffi = layout.ffi


def test_values_are_rounded_up_to_8_bytes_and_copied_out():
    a = MappedArray(-1, 12, 3)
    assert a.stride == 16
    a.set_u64(2, 7)
    assert a.u64(2) == 7 and a.mem[32:40] == (7).to_bytes(8, "little")
    a.put(1, b"\x01\x02")
    (row,) = a.rows(ffi, "struct pft_rate_slot", 1)
    a.close()                    # rows stay readable: they are copies
    assert row.epoch == 0


def _tracer(ncpus=2):
    t = tracer.Tracer(plan={})
    t.ncpus = ncpus
    t.mem = {"blind": MappedArray(-1, 8, ncpus * tracer.BLIND_STRIDE),
             "inflight": MappedArray(-1, 8, 1),
             "rownext": MappedArray(-1, 8, tracer.ROW_TABLES),
             "countrows": MappedArray(-1, ffi.sizeof("struct pft_count_row"), 8)}
    t.skipped_by_program = lambda: {}
    return t


def _count_row(t, i, dev, ino, pid, comm, ready=1, **counts):
    row = ffi.new("struct pft_count_row *")
    row.key.dev, row.key.ino, row.key.pid, row.ready = dev, ino, pid, ready
    ffi.memmove(row.counts.comm, comm, len(comm))
    for name, v in counts.items():
        setattr(row.counts, name, v)
    t.mem["countrows"].put(i, bytes(ffi.buffer(row)))


def test_file_counts_skip_rows_being_claimed_and_add_up_a_key_claimed_twice():
    t = _tracer()
    _count_row(t, 0, 5, 10, 100, b"db", retries=2, dax_pte_faults=3)
    _count_row(t, 1, 5, 11, 100, b"db", ready=0, retries=9)    # being claimed
    _count_row(t, 2, 5, 10, 100, b"db", dax_pte_faults=1)      # the race's second row
    _count_row(t, 3, 5, 12, 101, b"never claimed", retries=5)  # past rownext
    t.mem["rownext"].set_u64(tracer.COUNTS_TABLE, 3)
    (got,) = t.file_counts()
    assert (got["dev"], got["ino"], got["pid"], got["comm"]) == (5, 10, 100, "db")
    assert (got["retries"], got["dax_pte_faults"]) == (2, 4)


def test_lost_is_per_cpu_and_blind_sums_each_reason_over_cpus():
    t = _tracer(ncpus=3)
    ring = tracer.BLIND_REASONS["ring_full"]
    for cpu, n in ((0, 2), (2, 5)):
        t.mem["blind"].set_u64(cpu * tracer.BLIND_STRIDE + ring, n)
        t.mem["blind"].set_u64(cpu * tracer.BLIND_STRIDE + tracer.BLIND_LOST, n)
    t.mem["inflight"].set_u64(0, 1)
    assert t.lost() == [2, 0, 5]
    blind = t.blind()
    assert blind["ring_full"] == 7 and blind["state_full"] == 0
    assert blind["unfinished"] == 1 and blind["skipped_by_kernel"] == 0


def test_possible_cpus_reads_ranges_and_lists(tmp_path):
    for text, n in (("0-3\n", 4), ("0\n", 1), ("0-1,4-5\n", 6)):
        p = tmp_path / "possible"
        p.write_text(text)
        assert tracer.possible_cpus(str(p)) == n
