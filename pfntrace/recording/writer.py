"""Writing a recording: RecordingWriter."""

import errno
import os

from pfntrace import __version__, layout
from pfntrace.recording import format as fmt
from pfntrace.recording.format import RecordingError


def _error(path, exc, verb="write"):
    return RecordingError("cannot %s %s: %s" % (
        verb, path, exc.strerror or os.strerror(exc.errno or 0) or str(exc)))


class RecordingWriter:
    """Appends blocks to a recording file.

    Every block reaches the file with one positional write of header+payload
    (looping only on a short write), so a crash or a full disk leaves the file
    readable up to its last complete block.  On a write error the torn tail is
    cut off again where possible, RecordingError is raised, and the writer is
    then "failed": later writes raise the same error and close() just closes.

    Counters: events_written (events in blocks on disk), events_buffered,
    events_dropped (lost to a write error), blocks_written, bytes_written.
    """

    def __init__(self, path, fd, block_size=fmt.DEFAULT_EVENTS_BLOCK_BYTES):
        self.path = path
        self._fd = fd
        self._offset = 0
        self._seq = 0
        self._pending = bytearray()
        self._block_bytes = max(1, block_size // layout.EVENT_SIZE) * layout.EVENT_SIZE
        self._lost = None
        self._lost_written = None
        self._counts = None
        self._counts_written = None
        self.failed = None          # the RecordingError that stopped writing
        self.closed = False
        self.events_written = 0
        self.events_dropped = 0
        self.blocks_written = 0
        self.event_blocks_written = 0
        self.bytes_written = 0

    # -- creation ---------------------------------------------------------

    @classmethod
    def create(cls, path, header, block_size=fmt.DEFAULT_EVENTS_BLOCK_BYTES):
        """Create (or truncate) path with mode 0600 and write magic + HEADER.

        header is the recorder's dict; format_version, event_size, byte_order
        and event_layout are added (and win over same-named keys).
        """
        full = dict(header)
        full.setdefault("pfntrace_version", __version__)
        full.update(fmt.layout_header())
        payload = fmt.encode_json(full)   # TypeError before touching the disk
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise _error(path, e) from None
        writer = cls(path, fd, block_size)
        try:
            os.fchmod(fd, 0o600)   # an existing file keeps its mode under O_CREAT
            writer._write(fmt.FILE_MAGIC)
            writer._write_block(fmt.BLOCK_HEADER, payload)
        except (OSError, RecordingError) as e:
            writer.abort()
            if isinstance(e, RecordingError):
                raise
            raise _error(path, e) from None
        return writer

    # -- public API -------------------------------------------------------

    @property
    def events_buffered(self):
        return len(self._pending) // layout.EVENT_SIZE

    @property
    def events(self):
        """Events accepted so far (written + buffered)."""
        return self.events_written + self.events_buffered

    def add_events(self, buf):
        """Queue raw events (a bytes-like of whole struct pft_event records);
        an EVENTS block is written each time ~block_size bytes are queued."""
        self._check_open()
        n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
        if n % layout.EVENT_SIZE:
            raise ValueError("%d bytes is not a whole number of %d-byte events"
                             % (n, layout.EVENT_SIZE))
        self._pending += buf
        if len(self._pending) >= self._block_bytes:
            self._flush_events(whole_blocks_only=True)

    def add_meta(self, meta):
        """Write a META block now; readers deep-merge all META blocks in file
        order (later values win)."""
        self._check_open()
        if not isinstance(meta, dict):
            raise TypeError("meta must be a dict")
        self._write_block(fmt.BLOCK_META, fmt.encode_json(meta))

    def set_lost(self, per_cpu):
        """Record cumulative lost-event counts per CPU; written as a LOST block
        with the next flush of events (or flush()/close()) if they changed."""
        self._lost = [int(x) for x in per_cpu]

    def set_counts(self, files):
        """Record what the kernel counted per file and process instead of
        sending events (a list of dicts, schema.COUNTS), cumulative; written
        as a COUNTS block with the next flush if it changed."""
        self._counts = list(files)

    def flush(self, sync=False):
        """Write buffered events (a possibly short block), changed lost counts
        and changed file counts."""
        self._check_open()
        self._flush_events()
        self._flush_cumulative()
        if sync:
            self._fsync()

    def close(self, trailer=None, sync=True):
        """Flush, write the TRAILER block and close.  trailer is the recorder's
        dict; a "written" summary is added ({"events", "event_blocks"}).

        After a write failure this only closes the file (no trailer: readers
        then see it as truncated, which it is)."""
        if self.closed:
            return
        try:
            if self.failed is None:
                self._flush_events()
                self._flush_cumulative()
                full = dict(trailer or {})
                if self._lost is not None:
                    full.setdefault("lost_per_cpu", self._lost)
                full["written"] = {
                    "events": self.events_written,
                    "event_blocks": self.event_blocks_written,
                }
                self._write_block(fmt.BLOCK_TRAILER, fmt.encode_json(full))
                if sync:
                    self._fsync()
        finally:
            self._close_fd()

    def abort(self):
        """Close and remove the file (recording failed before it was useful)."""
        self._close_fd()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif not self.closed:
            # Keep what was recorded, without a trailer (reads as truncated).
            try:
                if self.failed is None:
                    self._flush_events()
                    self._flush_cumulative()
            except RecordingError:
                pass
            finally:
                self._close_fd()
        return False

    # -- internals --------------------------------------------------------

    def _check_open(self):
        if self.failed is not None:
            raise self.failed
        if self.closed:
            raise RecordingError("%s is already closed" % self.path)

    def _close_fd(self):
        if not self.closed:
            self.closed = True
            self._pending = bytearray()
            try:
                os.close(self._fd)
            except OSError:
                pass

    def _fsync(self):
        try:
            os.fsync(self._fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EROFS):
                self._fail(e)

    def _flush_events(self, whole_blocks_only=False):
        pending = self._pending
        step = self._block_bytes
        end = len(pending)
        if whole_blocks_only:
            end -= end % step
        if not end:
            return
        self._pending = pending[end:]
        view = memoryview(pending)
        try:
            for start in range(0, end, step):
                chunk = view[start:min(start + step, end)]
                try:
                    self._write_block(fmt.BLOCK_EVENTS, chunk)
                except RecordingError:
                    self.events_dropped += (len(pending) - start) // layout.EVENT_SIZE
                    self._pending = bytearray()
                    raise
                self.events_written += len(chunk) // layout.EVENT_SIZE
                self.event_blocks_written += 1
        finally:
            view.release()
        self._flush_cumulative()

    def _flush_cumulative(self):
        """The LOST and COUNTS blocks, where their totals changed."""
        self._flush_lost()
        if self._counts is not None and self._counts != self._counts_written:
            counts = list(self._counts)
            self._write_block(fmt.BLOCK_COUNTS, fmt.encode_json({"files": counts}))
            self._counts_written = counts

    def _flush_lost(self):
        if self._lost is not None and self._lost != self._lost_written:
            lost = list(self._lost)
            self._write_block(fmt.BLOCK_LOST, fmt.encode_json({"per_cpu": lost}))
            self._lost_written = lost

    def _write_block(self, kind, payload):
        if self.failed is not None:
            raise self.failed
        head = fmt.pack_block_header(kind, self._seq, payload)
        self._write(head, payload)
        self._seq += 1
        self.blocks_written += 1

    def _write(self, *parts):
        """Write parts contiguously at the current end; on error cut the file
        back to where it was and fail."""
        start = self._offset
        total = sum(len(p) if not isinstance(p, memoryview) else p.nbytes for p in parts)
        views = [memoryview(p).cast("B") for p in parts]
        done = 0
        try:
            while done < total:
                # Skip what is already written.
                bufs, skip = [], done
                for v in views:
                    if skip >= len(v):
                        skip -= len(v)
                        continue
                    bufs.append(v[skip:])
                    skip = 0
                n = os.pwritev(self._fd, bufs, start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                done += n
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            self._fail(e)
        self._offset = start + total
        self.bytes_written = self._offset

    def _fail(self, exc):
        self.failed = _error(self.path, exc)
        raise self.failed from None
