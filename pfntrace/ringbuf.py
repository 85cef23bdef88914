"""Drain a BPF ring buffer by reading its memory, not by a callback per event.

bcc's ring buffer API calls a Python function through ctypes for every
record; under a fault storm that consumer falls behind and the kernel drops
events.  The ring is memory the kernel lets us map (kernel/bpf/ringbuf.c):

    offset 0          one page: consumer position (we write it)
    offset PAGE       one page: producer position (kernel writes it),
                      then the data area, mapped twice in a row so that a
                      record crossing the end reads as one piece

Each record is an 8-byte header (u32 length with BUSY = bit 31 and
DISCARD = bit 30, u32 page offset) and its data, padded to 8 bytes.
pfntrace sends records of one size only, so a batch is a slice of the
mapping with the headers cut out.
"""

import mmap
import operator
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_FIRST = operator.itemgetter(0)


class RingReader:
    def __init__(self, map_fd, data_size, record_size):
        page = mmap.PAGESIZE
        if data_size & (data_size - 1):
            raise ValueError("ring size %d is not a power of two" % data_size)
        self.mask = data_size - 1
        self.record_size = record_size
        self.stride = (record_size + HDR + 7) & ~7
        # A committed record's length word (no BUSY or DISCARD bit), and a
        # record as iter_unpack cuts it: header, data, padding.
        self._length = struct.pack("I", record_size)    # native, as cast("I") reads
        self._data = struct.Struct("%dx%ds%dx" % (HDR, record_size,
                                                  self.stride - HDR - record_size))
        self.consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.area = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                              mmap.PROT_READ, offset=page)
        self.page = page
        self.view = memoryview(self.area)
        self.fd = map_fd
        self.epoll = None

    def wait(self, timeout_ms):
        """Sleep until the kernel wakes us or timeout_ms passes.

        Edge-triggered: a wakeup ends one wait.  Level-triggered, the ring
        reads as ready whenever a record is in it, and under a steady stream
        every wait would end at once."""
        if self.epoll is None:
            self.epoll = select.epoll()
            self.epoll.register(self.fd, select.EPOLLIN | select.EPOLLET)
        self.epoll.poll(timeout_ms / 1000.0)

    @property
    def position(self):
        """The consumer position: bytes of the ring read so far."""
        return _U64.unpack_from(self.consumer, 0)[0]

    def drain(self):
        """Every complete record now in the ring, concatenated (bytes)."""
        cons = _U64.unpack_from(self.consumer, 0)[0]
        prod = _U64.unpack_from(self.area, 0)[0]
        if prod == cons:
            return b""
        data = self._drain_whole(cons, prod)
        if data is None:
            data, prod = self._drain_each(cons, prod)
        # Copy first, then give the space back: once the consumer position
        # moves, the kernel may write new records over these bytes (a full
        # ring under a storm did, and events came out with an mtime for an
        # inode number).
        _U64.pack_into(self.consumer, 0, prod)
        return data

    def _drain_whole(self, cons, prod):
        """The records from cons to prod, when all are committed and ours,
        at C speed: their length words checked as one strided column
        against the expected one (a memcmp), their data cut out of the
        headers by struct.iter_unpack.  No Python step per record, whose CPU
        under QEMU TCG was taken from the traced workload.  None when the
        slow path must look (a busy, discarded or foreign record)."""
        span = prod - cons
        if span % self.stride:
            return None
        start = self.page + (cons & self.mask)
        # The data area is mapped twice in a row: any span reads as one.
        chunk = self.view[start:start + span]
        lengths = chunk.cast("I")[::self.stride // 4]
        if lengths.tobytes() != self._length * (span // self.stride):
            return None
        return b"".join(map(_FIRST, self._data.iter_unpack(chunk)))

    def _drain_each(self, cons, prod):
        """(records, position reached), one record at a time: stops at the
        first record not yet committed."""
        base = self.page
        view = self.view
        stride, size, mask = self.stride, self.record_size, self.mask
        out = []
        pos = cons
        while pos < prod:
            start = base + (pos & mask)
            length = _U32.unpack_from(view, start)[0]
            if length & BUSY:
                break  # reserved, not yet committed: stop here, come back later
            if length & DISCARD:
                pos += ((length & ~(BUSY | DISCARD)) + HDR + 7) & ~7
                continue
            if length != size:
                # Not one of ours: skip it by its own length.
                pos += (length + HDR + 7) & ~7
                continue
            out.append(view[start + HDR:start + HDR + size])
            pos += stride
        return b"".join(out), pos

    def close(self):
        if self.epoll is not None:
            self.epoll.close()
        self.view.release()
        self.area.close()
        self.consumer.close()
