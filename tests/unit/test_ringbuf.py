"""The ring buffer reader over a file laid out as the kernel lays out a BPF
ring (kernel/bpf/ringbuf.c): consumer page, producer page, data area twice."""

import mmap
import struct

import pytest

from pfntrace.ringbuf import BUSY, DISCARD, RingReader

PAGE = mmap.PAGESIZE
DATA = 4 * PAGE
SIZE = 24  # record payload; stride = 32 with the 8-byte header


class FakeRing:
    def __init__(self, path):
        self.f = open(path, "w+b")
        self.f.truncate(2 * PAGE + 2 * DATA)
        self.prod = 0

    def put(self, payload, flags=0, length=None):
        length = len(payload) if length is None else length
        rec = struct.pack("<II", length | flags, 0) + payload
        rec += b"\0" * (-len(rec) % 8)
        for copy in (0, DATA):  # the data area is mapped twice in a row
            for i, byte in enumerate(rec):
                off = 2 * PAGE + copy + ((self.prod + i) % DATA)
                self.f.seek(off)
                self.f.write(bytes([byte]))
        self.prod += len(rec)
        self.f.seek(PAGE)
        self.f.write(struct.pack("<Q", self.prod))
        self.f.flush()

    def consumer(self):
        self.f.seek(0)
        return struct.unpack("<Q", self.f.read(8))[0]


@pytest.fixture
def ring(tmp_path):
    fake = FakeRing(tmp_path / "ring")
    reader = RingReader(fake.f.fileno(), DATA, SIZE)
    yield fake, reader
    reader.close()


def rec(n):
    return bytes([n]) * SIZE


def test_records_come_out_whole_and_the_consumer_moves(ring):
    fake, reader = ring
    assert reader.drain() == b""
    fake.put(rec(1))
    fake.put(rec(2))
    assert reader.drain() == rec(1) + rec(2)
    assert fake.consumer() == 64
    assert reader.drain() == b""


def test_discarded_records_are_skipped_and_busy_stops_the_batch(ring):
    fake, reader = ring
    fake.put(rec(1))
    fake.put(rec(9), flags=DISCARD)
    fake.put(rec(2))
    fake.put(rec(3), flags=BUSY)
    assert reader.drain() == rec(1) + rec(2)
    assert fake.consumer() == 96  # stopped before the busy one: read it later


def test_a_record_across_the_end_reads_as_one_piece(ring):
    fake, reader = ring
    # Fill to 16 bytes short of the end, so the next 32-byte record wraps.
    fake.prod = DATA - 16
    fake.f.seek(0)
    fake.f.write(struct.pack("<Q", DATA - 16))
    fake.put(rec(7))
    assert reader.drain() == rec(7)


def test_a_foreign_size_is_skipped_by_its_length(ring):
    fake, reader = ring
    fake.put(b"x" * 40)
    fake.put(rec(4))
    assert reader.drain() == rec(4)


def test_records_are_copied_before_their_space_is_given_back(ring, monkeypatch):
    """Once the consumer position moves, the kernel may write new records
    over the old ones at once (another CPU, a full ring): what drain returns
    must already be a copy.  Here the 'kernel' overwrites the data area the
    moment the consumer position is written."""
    import pfntrace.ringbuf as ringbuf

    fake, reader = ring
    fake.put(rec(1))
    fake.put(rec(2))
    real = ringbuf._U64

    class KernelRefills:
        unpack_from = staticmethod(real.unpack_from)

        @staticmethod
        def pack_into(buf, off, value):
            real.pack_into(buf, off, value)
            for copy in (0, DATA):
                fake.f.seek(2 * PAGE + copy)
                fake.f.write(b"\xee" * 64)
            fake.f.flush()

    monkeypatch.setattr(ringbuf, "_U64", KernelRefills)
    assert reader.drain() == rec(1) + rec(2)


def test_committed_records_are_read_as_one_batch_across_the_end(ring, monkeypatch):
    """All committed and ours: one pass at C speed, no loop per record."""
    fake, reader = ring
    fake.prod = DATA - 5 * 32
    fake.f.seek(0)
    fake.f.write(struct.pack("<Q", fake.prod))
    for n in range(20):
        fake.put(rec(n))

    def each(*_):
        raise AssertionError("read one record at a time")

    monkeypatch.setattr(reader, "_drain_each", each)
    assert reader.drain() == b"".join(rec(n) for n in range(20))
    assert fake.consumer() == DATA + 15 * 32


@pytest.mark.parametrize("flags", [BUSY, DISCARD])
def test_a_busy_or_discarded_record_in_a_batch_is_read_one_at_a_time(ring, flags):
    fake, reader = ring
    for n in range(5):
        fake.put(rec(n), flags=flags if n == 3 else 0)
    want = b"".join(rec(n) for n in range(3 if flags == BUSY else 5) if n != 3)
    assert reader.drain() == want
    assert fake.consumer() == (3 if flags == BUSY else 5) * 32
