"""The .pft recording format: writer, reader, crash safety."""

import json
import sys
import os
import stat
import subprocess
import uuid

import pytest

from pfntrace import decode, layout
from pfntrace.recording import (
    Recording, RecordingError, RecordingWriter, DEFAULT_NAME, EXTENSION,
)
from pfntrace.recording import format as fmt

ES = layout.EVENT_SIZE


def ev(i, **kw):
    kw.setdefault("ts_ns", 1000 + i)
    kw.setdefault("pid", 100 + i % 3)
    kw.setdefault("comm", "proc%d" % (i % 3))
    kw.setdefault("mtime_sec", [i, -i])
    return layout.encode(**kw)


def events(lo, hi):
    return b"".join(ev(i) for i in range(lo, hi))


def one_line(exc):
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


def raw_file(path, header, blocks=(), magic=fmt.FILE_MAGIC):
    """Write a file by hand: magic, HEADER(header), then (kind, payload) blocks."""
    out = bytearray(magic)
    payload = fmt.encode_json(header)
    out += fmt.pack_block_header(fmt.BLOCK_HEADER, 0, payload) + payload
    for seq, (kind, payload) in enumerate(blocks, 1):
        out += fmt.pack_block_header(kind, seq, payload) + payload
    with open(path, "wb") as f:
        f.write(out)
    return bytes(out)


def good_header(**over):
    h = dict(fmt.layout_header())
    h.update(over)
    return h


def test_names():
    assert DEFAULT_NAME == "pfntrace.pft" and EXTENSION == ".pft"


def test_round_trip(tmp_path):
    path = tmp_path / "r.pft"
    w = RecordingWriter.create(path, {"kernel": "6.12.0", "command": ["dd"],
                                      "format_version": 99})
    w.add_events(events(0, 5))
    w.add_meta({"files": {"259:1:12": {"path": "/mnt/dax/f"}}})
    w.add_events(memoryview(events(5, 7)))
    w.set_lost([0, 3])
    w.flush()
    w.add_meta({"procs": {"100": {"comm": "dd", "cmdline": "dd if=x"}}})
    assert w.events_written == 7 and w.events_buffered == 0
    w.close({"exit_code": 0, "end_wall": 12.5})
    assert w.closed

    rec = Recording.open(path)
    assert rec.header["kernel"] == "6.12.0"
    assert rec.header["command"] == ["dd"]
    assert rec.header["format_version"] == 1          # writer's value wins
    assert rec.header["event_size"] == ES
    assert rec.header["event_layout"] == fmt.event_layout()
    assert {f["name"] for f in rec.header["event_layout"]} == set(layout.FIELDS)
    assert rec.header["pfntrace_version"]
    assert rec.meta == {"files": {"259:1:12": {"path": "/mnt/dax/f"}},
                        "procs": {"100": {"comm": "dd", "cmdline": "dd if=x"}}}
    assert rec.lost == [0, 3]
    assert rec.trailer["exit_code"] == 0 and rec.trailer["end_wall"] == 12.5
    assert rec.trailer["written"] == {"events": 7, "event_blocks": 1}
    assert rec.trailer["lost_per_cpu"] == [0, 3]
    assert not rec.truncated and rec.truncation_reason is None
    assert rec.ignored_bytes == 0 and rec.warnings == []
    assert rec.event_count == 7 and rec.event_blocks == 1
    got = list(rec.iter_events())
    assert got == [decode.event(ev(i)) for i in range(7)]
    assert b"".join(rec.iter_event_blocks()) == events(0, 7)
    assert len(list(rec.iter_rows())) == 7
    assert rec.verify()
    rec.close()


def test_file_mode_0600(tmp_path):
    path = tmp_path / "m.pft"
    path.write_bytes(b"old contents")
    os.chmod(path, 0o644)
    old = os.umask(0)
    try:
        RecordingWriter.create(path, {}).close({})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        os.unlink(path)
        RecordingWriter.create(path, {}).close({})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)
    assert Recording.open(path).event_count == 0


def test_blocks_split_at_block_size(tmp_path):
    path = tmp_path / "b.pft"
    w = RecordingWriter.create(path, {}, block_size=4 * ES + 10)
    w.add_events(events(0, 3))
    assert w.event_blocks_written == 0 and w.events_buffered == 3
    w.add_events(events(3, 14))     # 14 pending -> 3 blocks of 4, 2 left
    assert w.event_blocks_written == 3 and w.events_written == 12
    assert w.events_buffered == 2 and w.events == 14
    w.add_events(events(14, 15))
    w.close({})
    rec = Recording.open(path)
    assert rec.event_blocks == 4 and rec.event_count == 15
    assert [len(b) // ES for b in rec.iter_event_blocks()] == [4, 4, 4, 3]
    assert b"".join(rec.iter_event_blocks()) == events(0, 15)


def test_add_events_rejects_partial_events(tmp_path):
    w = RecordingWriter.create(tmp_path / "p.pft", {})
    with pytest.raises(ValueError):
        w.add_events(b"\0" * (ES + 1))
    w.close({})


def test_meta_deep_merge_later_wins(tmp_path):
    path = tmp_path / "meta.pft"
    w = RecordingWriter.create(path, {})
    w.add_meta({"procs": {"1": {"comm": "a", "cmdline": "a -x"}}, "n": 1})
    w.add_events(events(0, 2))
    w.flush()
    w.add_meta({"procs": {"1": {"comm": "b"}, "2": {"comm": "c"}}, "n": 2})
    w.close({})
    rec = Recording.open(path)
    assert rec.meta == {"procs": {"1": {"comm": "b", "cmdline": "a -x"},
                                  "2": {"comm": "c"}}, "n": 2}


def test_lost_written_only_when_changed(tmp_path):
    path = tmp_path / "lost.pft"
    w = RecordingWriter.create(path, {})
    w.set_lost([1, 0])
    w.flush()
    blocks = w.blocks_written
    w.set_lost([1, 0])
    w.flush()
    assert w.blocks_written == blocks
    w.set_lost([1, 5])
    w.close({})
    rec = Recording.open(path)
    assert rec.lost == [1, 5]


def _counts(ino, **n):
    row = {"dev": (259 << 20) | 1, "ino": ino, "pid": 100, "comm": "dd"}
    row.update(dict.fromkeys(layout.FILE_COUNTERS, 0), **n)
    return row


def test_file_counts_the_last_counts_block_counts(tmp_path):
    """COUNTS blocks are cumulative like LOST: written only when they
    changed, and a reader keeps the last one, also from a file cut short
    after it (kill -9)."""
    path = tmp_path / "counts.pft"
    w = RecordingWriter.create(path, {})
    w.set_counts([_counts(12, retries=3)])
    w.flush()
    blocks = w.blocks_written
    w.set_counts([_counts(12, retries=3)])
    w.flush()
    assert w.blocks_written == blocks
    w.set_counts([_counts(12, retries=5), _counts(13, reprotect_pages=7)])
    w.add_events(events(0, 2))
    w.flush()
    size = os.path.getsize(path)
    w.set_counts([_counts(12, retries=9)])
    w.close({})
    rec = Recording.open(path)
    assert rec.file_counts == [_counts(12, retries=9)]
    os.truncate(path, size)
    cut = Recording.open(path)
    assert cut.truncated
    assert cut.file_counts == [_counts(12, retries=5), _counts(13, reprotect_pages=7)]
    assert Recording.open(tmp_path / "counts.pft").event_count == 2


@pytest.mark.parametrize("bad, why", [
    ({"files": [dict(_counts(12), retries=-1)]}, "files[0].retries: -1 is below"),
    ({"files": [{"ino": 12, "pid": 1}]}, "files[0]: dev is missing"),
    ({"files": {"12": 1}}, "files: expected a list"),
    ({}, "files is missing"),
])
def test_a_bad_counts_block_is_refused_in_one_line(tmp_path, bad, why):
    path = tmp_path / "bad.pft"
    raw_file(path, good_header(), [(fmt.BLOCK_COUNTS, fmt.encode_json(bad))])
    with pytest.raises(RecordingError) as e:
        Recording.open(path)
    assert "invalid COUNTS block" in one_line(e.value) and why in str(e.value)


def test_header_must_be_json(tmp_path):
    path = tmp_path / "j.pft"
    with pytest.raises(TypeError):
        RecordingWriter.create(path, {"x": object()})
    assert not path.exists()


def test_truncated_at_every_offset(tmp_path):
    path = tmp_path / "full.pft"
    w = RecordingWriter.create(path, {"k": "v"}, block_size=2 * ES)
    checkpoints = [(os.path.getsize(path), 0, {})]   # (size, events, meta)
    meta = {}
    for step in range(4):
        w.add_events(events(step * 3, step * 3 + 2))   # a full block: written
        assert w.events_buffered == 0
        checkpoints.append((os.path.getsize(path), w.events_written, dict(meta)))
        w.add_events(events(step * 3 + 2, step * 3 + 3))
        w.flush()                                        # a short block
        checkpoints.append((os.path.getsize(path), w.events_written, dict(meta)))
        if step % 2 == 0:
            w.add_meta({"step%d" % step: step})
            meta["step%d" % step] = step
            checkpoints.append((os.path.getsize(path), w.events_written, dict(meta)))
    w.set_lost([2])
    w.flush()
    w.close({"done": True})
    data = path.read_bytes()
    header_end = checkpoints[0][0]
    all_events = events(0, 12)

    cut = tmp_path / "cut.pft"
    for n in range(len(data) + 1):
        cut.write_bytes(data[:n])
        if n < header_end:
            with pytest.raises(RecordingError) as ei:
                Recording.open(cut)
            one_line(ei.value)
            continue
        rec = Recording.open(cut)
        assert rec.header["k"] == "v"
        if n == len(data):
            assert not rec.truncated and rec.trailer == {
                "done": True, "lost_per_cpu": [2],
                "written": {"events": 12, "event_blocks": 8}}
        else:
            assert rec.truncated, n
            assert rec.truncation_reason, n
            assert rec.trailer is None
            want_events, want_meta = 0, {}
            for size, count, m in checkpoints:
                if size <= n:
                    want_events, want_meta = count, m
            got = b"".join(rec.iter_event_blocks())
            assert got == all_events[:want_events * ES], n
            assert rec.event_count == want_events
            assert rec.meta == want_meta, n
            assert rec.truncated  # reading the events did not "repair" it
        rec.close()


def test_crash_leaves_no_trailer(tmp_path):
    path = tmp_path / "crash.pft"
    with pytest.raises(KeyboardInterrupt):
        with RecordingWriter.create(path, {}) as w:
            w.add_events(events(0, 4))
            raise KeyboardInterrupt
    rec = Recording.open(path)
    assert rec.truncated and rec.trailer is None
    assert "trailer" in rec.truncation_reason
    assert rec.ignored_bytes == 0
    assert rec.event_count == 4


def test_killed_writer_process(tmp_path):
    """A writer killed with SIGKILL mid-stream leaves a readable prefix."""
    path = tmp_path / "killed.pft"
    code = (
        "import os, signal\n"
        "from pfntrace import layout\n"
        "from pfntrace.recording import RecordingWriter\n"
        "w = RecordingWriter.create(%r, {})\n"
        "w.add_events(layout.encode(ts_ns=1) * 50)\n"
        "w.flush()\n"
        "w.add_events(layout.encode(ts_ns=2) * 7)\n"   # buffered, never written
        "os.kill(os.getpid(), signal.SIGKILL)\n" % str(path))
    proc = subprocess.run([sys.executable, "-c", code],
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == -9
    rec = Recording.open(path)
    assert rec.truncated and rec.event_count == 50


def test_corrupt_meta_crc_in_middle(tmp_path):
    path = tmp_path / "c.pft"
    w = RecordingWriter.create(path, {})
    w.add_events(events(0, 3))
    w.flush()
    before_meta = os.path.getsize(path)
    w.add_meta({"a": 1})
    w.add_events(events(3, 6))
    w.close({})
    data = bytearray(path.read_bytes())
    data[before_meta + fmt.BLOCK_HEADER_SIZE + 2] ^= 0x20   # inside META payload
    path.write_bytes(bytes(data))
    rec = Recording.open(path)
    assert rec.truncated and "CRC" in rec.truncation_reason
    assert str(before_meta) in rec.truncation_reason
    assert rec.ignored_bytes == len(data) - before_meta
    assert rec.meta == {} and rec.trailer is None
    assert rec.event_count == 3
    assert list(rec.iter_events()) == [decode.event(ev(i)) for i in range(3)]


def test_corrupt_block_header(tmp_path):
    path = tmp_path / "h.pft"
    w = RecordingWriter.create(path, {})
    w.add_events(events(0, 3))
    w.flush()
    second = os.path.getsize(path)
    w.add_events(events(3, 6))
    w.close({})
    data = bytearray(path.read_bytes())
    data[second + 8] ^= 0x01          # the length field: header CRC catches it
    path.write_bytes(bytes(data))
    rec = Recording.open(path)
    assert rec.truncated and "corrupt block header" in rec.truncation_reason
    assert rec.event_count == 3


@pytest.mark.parametrize("verify", [False, True])
def test_corrupt_events_crc_in_middle(tmp_path, verify):
    path = tmp_path / "e.pft"
    w = RecordingWriter.create(path, {}, block_size=2 * ES)
    w.add_events(events(0, 6))     # three blocks of two
    w.add_meta({"late": True})
    w.close({"x": 1})
    data = bytearray(path.read_bytes())
    # Flip a byte in the second EVENTS payload.
    rec = Recording.open(path)
    start = rec._event_blocks[1][0]
    rec.close()
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))

    rec = Recording.open(path, verify=verify)
    assert rec.meta == {"late": True} and rec.trailer["x"] == 1
    if not verify:
        assert not rec.truncated and rec.event_count == 6
    got = list(rec.iter_events())
    assert got == [decode.event(ev(i)) for i in range(2)]
    assert rec.truncated and "CRC" in rec.truncation_reason
    assert rec.event_count == 2 and rec.event_blocks == 1
    assert rec.ignored_bytes == 2 * (fmt.BLOCK_HEADER_SIZE + 2 * ES)
    assert rec.warnings == [rec.truncation_reason]
    assert not rec.verify()
    assert len(rec.warnings) == 1


def test_newer_format_version(tmp_path):
    path = tmp_path / "new.pft"
    raw_file(path, good_header(format_version=2))
    with pytest.raises(RecordingError) as ei:
        Recording.open(path)
    assert one_line(ei.value) == (
        "%s was written by a newer pfntrace (format 2, this reads up to 1)" % path)


def test_layout_mismatch(tmp_path):
    path = tmp_path / "lay.pft"
    lay = fmt.event_layout()
    lay[3] = dict(lay[3], offset=lay[3]["offset"] + 8)
    raw_file(path, good_header(event_layout=lay))
    with pytest.raises(RecordingError) as ei:
        Recording.open(path)
    assert "different event layout" in one_line(ei.value)
    assert lay[3]["name"] in str(ei.value)

    raw_file(path, good_header(event_size=ES + 8))
    with pytest.raises(RecordingError) as ei:
        Recording.open(path)
    assert "different event layout" in one_line(ei.value)

    other = "big" if sys.byteorder == "little" else "little"
    raw_file(path, good_header(byte_order=other))
    with pytest.raises(RecordingError) as ei:
        Recording.open(path)
    assert "endian" in one_line(ei.value)


def test_bad_header_blocks(tmp_path):
    path = tmp_path / "bad.pft"
    raw_file(path, {"no": "version"})
    with pytest.raises(RecordingError, match="corrupt header"):
        Recording.open(path)
    # A header block that is not JSON.
    payload = b"\xff not json"
    path.write_bytes(fmt.FILE_MAGIC + fmt.pack_block_header(fmt.BLOCK_HEADER, 0, payload)
                     + payload)
    with pytest.raises(RecordingError, match="corrupt header") as ei:
        Recording.open(path)
    one_line(ei.value)
    # First block is not a HEADER.
    payload = fmt.encode_json(good_header())
    path.write_bytes(fmt.FILE_MAGIC + fmt.pack_block_header(fmt.BLOCK_META, 0, payload)
                     + payload)
    with pytest.raises(RecordingError, match="corrupt header"):
        Recording.open(path)


def test_bad_magic_empty_missing_directory(tmp_path):
    path = tmp_path / "x.pft"
    path.write_bytes(b"PERFILE2" + b"\0" * 200)
    with pytest.raises(RecordingError) as ei:
        Recording.open(path)
    assert one_line(ei.value) == "%s is not a pfntrace recording" % path
    path.write_bytes(b"")
    with pytest.raises(RecordingError, match="empty"):
        Recording.open(path)
    with pytest.raises(RecordingError) as ei:
        Recording.open(tmp_path / "missing.pft")
    assert one_line(ei.value).endswith("No such file or directory")
    with pytest.raises(RecordingError, match="not a regular file"):
        Recording.open(tmp_path)


def test_unknown_block_kind_skipped_and_garbage_after_trailer(tmp_path):
    path = tmp_path / "u.pft"
    raw_file(path, good_header(), [
        (fmt.BLOCK_EVENTS, events(0, 2)),
        (77, b"future"),
        (fmt.BLOCK_TRAILER, fmt.encode_json({"ok": 1})),
    ])
    with open(path, "ab") as f:
        f.write(b"junk")
    rec = Recording.open(path)
    assert not rec.truncated and rec.trailer == {"ok": 1}
    assert rec.event_count == 2 and rec.ignored_bytes == 4
    assert any("unknown kind 77" in w for w in rec.warnings)
    assert any("after the trailer" in w for w in rec.warnings)


def test_out_of_sequence_block(tmp_path):
    path = tmp_path / "s.pft"
    data = raw_file(path, good_header(), [(fmt.BLOCK_EVENTS, events(0, 1))])
    payload = events(1, 2)
    with open(path, "ab") as f:
        f.write(fmt.pack_block_header(fmt.BLOCK_EVENTS, 5, payload) + payload)
    rec = Recording.open(path)
    assert rec.truncated and "sequence" in rec.truncation_reason
    assert rec.event_count == 1 and rec.ignored_bytes == fmt.BLOCK_HEADER_SIZE + ES
    assert len(data)


@pytest.mark.parametrize("where", ["/nonexistent-dir-%s/x.pft" % uuid.uuid4().hex,
                                   "/proc/pfntrace-test.pft"])
def test_unwritable_path(where):
    with pytest.raises(RecordingError) as ei:
        RecordingWriter.create(where, {})
    msg = one_line(ei.value)
    assert msg.startswith("cannot write %s: " % where)
    assert not os.path.exists(where)


def test_abort_removes_file(tmp_path):
    path = tmp_path / "a.pft"
    w = RecordingWriter.create(path, {})
    w.add_events(events(0, 1))
    w.abort()
    assert not path.exists()
    with pytest.raises(RecordingError):
        w.add_events(events(0, 1))


def test_closed_reader(tmp_path):
    path = tmp_path / "cl.pft"
    RecordingWriter.create(path, {}).close({})
    with Recording.open(path) as rec:
        pass
    with pytest.raises(RecordingError):
        list(rec.iter_event_blocks())


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
    except OSError as e:
        pytest.skip("cannot run mount: %s" % e)
    if proc.returncode != 0:
        pytest.skip("cannot mount a 64 KiB tmpfs: %s" % proc.stderr.strip())
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            # Something still holds it open: detach it anyway, never leak it.
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_enospc_keeps_valid_prefix(tiny_fs):
    path = tiny_fs / "full.pft"
    w = RecordingWriter.create(path, {"big": "x" * 100}, block_size=8 * ES)
    with pytest.raises(RecordingError) as ei:
        for i in range(10000):
            w.add_events(ev(i))
    msg = one_line(ei.value)
    assert msg == "cannot write %s: No space left on device" % path
    written = w.events_written
    assert written > 0 and w.events_dropped > 0
    with pytest.raises(RecordingError):
        w.add_events(ev(0))
    with pytest.raises(RecordingError):
        w.add_meta({"a": 1})
    w.close({"never": "written"})       # no error: just closes
    assert os.path.getsize(path) == w.bytes_written   # torn tail cut off
    with Recording.open(path) as rec:
        assert rec.truncated and rec.trailer is None
        assert rec.ignored_bytes == 0
        assert rec.event_count == written
        assert list(rec.iter_events()) == [decode.event(ev(i)) for i in range(written)]


def test_enospc_on_header_removes_file(tiny_fs):
    path = tiny_fs / "hdr.pft"
    with pytest.raises(RecordingError, match="No space left on device"):
        RecordingWriter.create(path, {"big": "y" * (128 << 10)})
    assert not path.exists()


def test_header_json_is_plain(tmp_path):
    """The HEADER payload is readable JSON for tools that are not pfntrace."""
    path = tmp_path / "plain.pft"
    RecordingWriter.create(path, {"clock": {"boot_to_wall_ns": 5}}).close({})
    data = path.read_bytes()
    off = len(fmt.FILE_MAGIC)
    bh = fmt.unpack_block_header(data[off:off + 32])
    header = json.loads(data[off + 32:off + 32 + bh.length])
    assert header["clock"] == {"boot_to_wall_ns": 5}


def test_short_reads_are_not_a_shrunk_file(tmp_path, monkeypatch):
    """pread may return less than asked before the end of a file (the 6.1
    lab guest's 9p hands out at most msize a call, and report called a whole
    recording on it truncated): only a read of nothing is the end."""
    from pfntrace.recording import reader

    path = tmp_path / "r.pft"
    w = RecordingWriter.create(path, {"kernel": "6.1.0"})
    w.add_events(events(0, 300))
    w.flush()
    w.add_meta({"files": {"259:1:12": {"path": "/mnt/dax/f"}}})
    w.add_events(events(300, 400))
    w.close({"exit_code": 0})
    real = os.pread
    calls = []

    def short(fd, n, offset):
        calls.append(n)
        return real(fd, min(n, 1000), offset)

    monkeypatch.setattr(reader.os, "pread", short)
    rec = Recording.open(path, verify=True)
    assert not rec.truncated and rec.warnings == [], rec.warnings
    assert rec.event_count == 400
    assert b"".join(rec.iter_event_blocks()) == events(0, 400)
    assert max(calls) > 1000          # the reader did ask for more at once
