"""Reading a recording: Recording.open()."""

import os
import stat
import zlib

from pfntrace import decode
from pfntrace.recording import format as fmt
from pfntrace.recording import schema
from pfntrace.recording.format import RecordingError

# EVENTS payloads are read at most this much at a time (rounded down to
# whole events): the length field is only a claim, and memory must not
# follow it.
READ_CHUNK = 1 << 20

_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)


def _not_regular(path, mode):
    what = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
    return RecordingError("%s is not a regular file (%s)" % (path, what))


class Recording:
    """An open recording.

    open() makes one quick pass over the block headers: HEADER, META, LOST,
    COUNTS and TRAILER payloads are read and CRC-checked there, EVENTS payloads are
    only located (their CRC is checked when they are read, by
    iter_event_blocks() or verify()).  Reading stops at the first incomplete
    or corrupt block; everything before it is usable and ``truncated`` says
    so.  A JSON block whose CRC is right but whose content is not what
    pfntrace writes (schema.py) is refused: RecordingError.  Anything else
    that makes the counts doubtful (EVENTS blocks repeated, totals that
    differ from the trailer's, data after the trailer) goes into
    ``warnings``, which every command shows.  Memory use does not depend on
    the file size nor on any length field.

    Attributes: path, size, header, meta (merged), lost (per-CPU list),
    file_counts (the last COUNTS block's list), trailer (dict or None),
    truncated, truncation_reason, ignored_bytes, warnings (list of str),
    event_count, event_blocks, format_version.
    """

    def __init__(self, path):
        self.path = path
        self._fd = None
        self.size = 0
        self.header = {}
        self.meta = {}
        self.lost = []
        self.file_counts = []       # the last COUNTS block's "files"
        self.trailer = None
        self.truncated = False
        self.truncation_reason = None
        self.ignored_bytes = 0
        self.warnings = []
        self.blocks = 0
        self.format_version = None
        self._event_blocks = []     # [(payload offset, length, crc, seq)]
        self._bad_event_block = None

    # -- opening ----------------------------------------------------------

    @classmethod
    def open(cls, path, verify=False):
        """Open and index path; verify=True also checks every EVENTS CRC now
        (reads the whole file once)."""
        path = os.fspath(path)
        rec = cls(path)
        try:
            # Opening a FIFO for reading blocks until a writer comes: look
            # first, and open non-blocking in case it was swapped in between.
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)
            rec._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            st = os.fstat(rec._fd)
        except OSError as e:
            rec.close()
            raise RecordingError("cannot read %s: %s" % (path, e.strerror)) from None
        try:
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)
            rec.size = st.st_size
            rec._index()
            if verify:
                rec.verify()
        except RecordingError:
            rec.close()
            raise
        except OSError as e:
            rec.close()
            raise RecordingError("cannot read %s: %s" % (path, e.strerror)) from None
        return rec

    def _pread(self, n, offset):
        """n bytes at offset, fewer only at the end of the file.

        pread may return less than asked before the end: a network or
        virtual filesystem hands out at most one message's worth (9p: msize)
        per call.  Only a read of nothing is the end; a short result then
        means the file ends there (it shrank under us): callers check."""
        parts = []
        try:
            while n > 0:
                data = os.pread(self._fd, n, offset)
                if not data:
                    break
                parts.append(data)
                n -= len(data)
                offset += len(data)
        except OSError as e:      # EIO from a bad disk: the reader's one line
            raise RecordingError("cannot read %s: %s" % (self.path, e.strerror)) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_header(self):
        path = self.path
        if self.size == 0:
            raise RecordingError("%s is empty: not a pfntrace recording" % path)
        magic = self._pread(len(fmt.FILE_MAGIC), 0)
        if magic != fmt.FILE_MAGIC:
            if fmt.FILE_MAGIC.startswith(magic):
                raise RecordingError("%s is cut short before its header (%d bytes)"
                                     % (path, self.size))
            raise RecordingError("%s is not a pfntrace recording" % path)
        off = len(fmt.FILE_MAGIC)
        raw = self._pread(fmt.BLOCK_HEADER_SIZE, off)
        if len(raw) < fmt.BLOCK_HEADER_SIZE:
            raise RecordingError("%s is cut short before its header (%d bytes)"
                                 % (path, self.size))
        bh = fmt.unpack_block_header(raw)
        if bh is None or bh.kind != fmt.BLOCK_HEADER or bh.seq != 0:
            raise RecordingError("%s has a corrupt header block" % path)
        if bh.length > fmt.MAX_JSON_PAYLOAD:
            raise RecordingError("%s has a corrupt header block (length %d)"
                                 % (path, bh.length))
        start = off + fmt.BLOCK_HEADER_SIZE
        payload = self._pread(bh.length, start)
        if len(payload) < bh.length:
            raise RecordingError("%s is cut short inside its header block (%d bytes)"
                                 % (path, self.size))
        if fmt.crc32(payload) != bh.crc:
            raise RecordingError("%s has a corrupt header block (CRC mismatch)" % path)
        try:
            header = fmt.decode_json(payload)
        except ValueError as e:
            raise RecordingError("%s has a corrupt header block (%s)"
                                 % (path, str(e).splitlines()[0])) from None
        version = header.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise RecordingError("%s has a corrupt header block (format_version %r)"
                                 % (path, version))
        if version > fmt.FORMAT_VERSION:
            raise RecordingError(
                "%s was written by a newer pfntrace (format %d, this reads up to %d)"
                % (path, version, fmt.FORMAT_VERSION))
        try:
            schema.validate(header, schema.HEADER)
        except schema.SchemaError as e:
            raise RecordingError("%s has an invalid header block (%s)" % (path, e)) from None
        why = fmt.layout_mismatch(header)
        if why:
            raise RecordingError("%s was recorded with a different event layout "
                                 "(%s)" % (path, why))
        self.header = header
        self.format_version = version
        self.blocks = 1
        return start + bh.length

    def _stop(self, offset, reason):
        self.truncated = True
        self.truncation_reason = reason
        self.ignored_bytes = self.size - offset

    def _index(self):
        off = self._read_header()
        seq = 1
        event_size = self.header["event_size"]
        seen = {}       # (length, CRC) of each EVENTS block -> its offset
        size = self.size
        while True:
            if off == size:
                self._stop(off, "no trailer: the recording did not finish")
                return
            if size - off < fmt.BLOCK_HEADER_SIZE:
                self._stop(off, "incomplete block header at offset %d" % off)
                return
            bh = fmt.unpack_block_header(self._pread(fmt.BLOCK_HEADER_SIZE, off))
            if bh is None:
                self._stop(off, "corrupt block header at offset %d" % off)
                return
            if bh.seq != seq:
                self._stop(off, "block out of sequence at offset %d (%d, expected %d)"
                           % (off, bh.seq, seq))
                return
            start = off + fmt.BLOCK_HEADER_SIZE
            end = start + bh.length
            if end > size:
                self._stop(off, "incomplete %s block at offset %d (%d of %d bytes)"
                           % (bh.kind_name, off, size - start, bh.length))
                return
            if bh.kind == fmt.BLOCK_EVENTS:
                if bh.length % event_size:
                    self._stop(off, "corrupt EVENTS block at offset %d (%d bytes is not "
                               "a whole number of events)" % (off, bh.length))
                    return
                first = seen.setdefault((bh.length, bh.crc), off)
                if first != off:
                    # Real event blocks never repeat (timestamps move): a
                    # copy would count its faults twice.
                    self.warnings.append("EVENTS block at offset %d repeats the one at "
                                         "offset %d: its events are counted twice"
                                         % (off, first))
                self._event_blocks.append((start, bh.length, bh.crc, bh.seq))
            elif bh.kind in (fmt.BLOCK_META, fmt.BLOCK_LOST, fmt.BLOCK_TRAILER,
                             fmt.BLOCK_COUNTS):
                if bh.length > fmt.MAX_JSON_PAYLOAD:
                    self._stop(off, "corrupt %s block at offset %d (length %d)"
                               % (bh.kind_name, off, bh.length))
                    return
                payload = self._pread(bh.length, start)
                if len(payload) < bh.length:
                    self._stop(off, "incomplete %s block at offset %d"
                               % (bh.kind_name, off))
                    return
                if fmt.crc32(payload) != bh.crc:
                    self._stop(off, "corrupt %s block at offset %d (CRC mismatch)"
                               % (bh.kind_name, off))
                    return
                # The CRC is right, so this is what the writer meant: a
                # block that is not what pfntrace writes is refused, not
                # half-read (see schema.py).
                obj = self._json_block(bh, payload, off)
                if bh.kind == fmt.BLOCK_META:
                    fmt.merge_meta(self.meta, obj)
                elif bh.kind == fmt.BLOCK_LOST:
                    self.lost = obj["per_cpu"]
                elif bh.kind == fmt.BLOCK_COUNTS:
                    self.file_counts = obj["files"]
                else:
                    self.trailer = obj
            elif bh.kind == fmt.BLOCK_HEADER:
                self._stop(off, "second HEADER block at offset %d" % off)
                return
            else:
                self.warnings.append("skipped a block of unknown kind %d at offset %d"
                                     % (bh.kind, off))
            self.blocks += 1
            seq += 1
            off = end
            if self.trailer is not None:
                if off < size:
                    self.ignored_bytes = size - off
                    self.warnings.append(self._after_trailer(off))
                self._check_trailer()
                return

    def _json_block(self, bh, payload, off):
        shape = {fmt.BLOCK_META: schema.META, fmt.BLOCK_LOST: schema.LOST,
                 fmt.BLOCK_TRAILER: schema.TRAILER, fmt.BLOCK_COUNTS: schema.COUNTS}[bh.kind]
        try:
            obj = fmt.decode_json(payload)
            schema.validate(obj, shape)
        except ValueError as e:    # SchemaError is one
            raise RecordingError("%s has an invalid %s block at offset %d (%s)" % (
                self.path, bh.kind_name, off, str(e).splitlines()[0])) from None
        return obj

    def _after_trailer(self, off):
        n = self.size - off
        head = self._pread(len(fmt.FILE_MAGIC), off)
        if head == fmt.FILE_MAGIC:
            return ("another recording follows the trailer at offset %d: its %d bytes "
                    "are not read" % (off, n))
        bh = fmt.unpack_block_header(self._pread(fmt.BLOCK_HEADER_SIZE, off))
        if bh is not None:
            return ("%s %s block follows the trailer at offset %d: %d bytes not read"
                    % ("an" if bh.kind_name[0] in "AEIOU" else "a", bh.kind_name, off, n))
        return "%d bytes after the trailer ignored" % n

    def _check_trailer(self):
        """What the writer counted, against what the file holds: blocks
        removed, repeated or moved change the totals, not the CRCs."""
        written = self.trailer.get("written") or {}
        if "events" in written and written["events"] != self.event_count:
            self.warnings.append("trailer says %d events were written, the file "
                                 "holds %d" % (written["events"], self.event_count))
        blocks = len(self._event_blocks)
        if "event_blocks" in written and written["event_blocks"] != blocks:
            self.warnings.append("trailer says %d EVENTS blocks were written, the file "
                                 "holds %d" % (written["event_blocks"], blocks))
        lost = self.trailer.get("lost_per_cpu")
        if lost is not None and lost != self.lost:
            self.warnings.append("trailer says %d events were lost, the LOST blocks say %d"
                                 % (sum(lost), sum(self.lost)))

    # -- events -----------------------------------------------------------

    @property
    def event_count(self):
        """Events in the usable EVENTS blocks (exact once they were read or
        verified: a block failing its CRC then no longer counts)."""
        size = self.header.get("event_size") or 1
        blocks = self._event_blocks
        if self._bad_event_block is not None:
            blocks = blocks[:self._bad_event_block]
        return sum(length for _, length, _, _ in blocks) // size

    @property
    def event_blocks(self):
        if self._bad_event_block is not None:
            return self._bad_event_block
        return len(self._event_blocks)

    def iter_event_blocks(self):
        """Yield each EVENTS payload (bytes, a whole number of events) in file
        order, checking its CRC; at the first bad one the recording becomes
        truncated there (with a warning) and iteration ends."""
        if self._fd is None:
            raise RecordingError("%s is closed" % self.path)
        chunk = self._chunk_bytes()
        for i, (start, length, crc, seq) in enumerate(self._event_blocks):
            if self._bad_event_block is not None and i >= self._bad_event_block:
                return
            if length <= chunk:
                payload = self._pread(length, start)
                why = self._block_fault(payload, length, crc)
                if why:
                    self._mark_bad(i, start, why)
                    return
                yield payload
                continue
            # Longer than the writer's default block: check it whole before a
            # single event of it counts, then read it again piece by piece.
            why = self._crc_in_chunks(start, length, crc, chunk)
            if why:
                self._mark_bad(i, start, why)
                return
            for off in range(start, start + length, chunk):
                want = min(chunk, start + length - off)
                payload = self._pread(want, off)
                if len(payload) != want:
                    self._mark_bad(i, start, "file shrank")
                    return
                yield payload

    def _chunk_bytes(self):
        size = self.header.get("event_size") or 1
        return max(1, READ_CHUNK // size) * size

    @staticmethod
    def _block_fault(payload, length, crc):
        if len(payload) != length:
            return "file shrank"
        if fmt.crc32(payload) != crc:
            return "CRC mismatch"
        return None

    def _crc_in_chunks(self, start, length, crc, chunk):
        value, done = 0, 0
        while done < length:
            piece = self._pread(min(chunk, length - done), start + done)
            if not piece:
                return "file shrank"
            value = zlib.crc32(piece, value)
            done += len(piece)
        return None if (value & 0xFFFFFFFF) == crc else "CRC mismatch"

    def _mark_bad(self, i, start, why):
        if self._bad_event_block is not None and self._bad_event_block <= i:
            return
        self._bad_event_block = i
        off = start - fmt.BLOCK_HEADER_SIZE
        reason = ("corrupt EVENTS block at offset %d (%s): events from there on ignored"
                  % (off, why))
        self.warnings.append(reason)
        self.truncated = True
        self.truncation_reason = reason
        self.ignored_bytes = sum(
            fmt.BLOCK_HEADER_SIZE + length for _, length, _, _ in self._event_blocks[i:])

    def verify(self):
        """Read every EVENTS block once, checking CRCs; returns not truncated."""
        for _ in self.iter_event_blocks():
            pass
        return not self.truncated

    def iter_rows(self):
        """Fast: flat tuples for every event (see pfntrace.decode.ROW_INDEX)."""
        for payload in self.iter_event_blocks():
            yield from decode.iter_rows(payload)

    def iter_events(self):
        """Every event as a dict shaped like decode.event()."""
        for payload in self.iter_event_blocks():
            yield from decode.iter_events(payload)

    # -- lifetime ---------------------------------------------------------

    def close(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "<Recording %s: %d events%s>" % (
            self.path, self.event_count, ", truncated" if self.truncated else "")
