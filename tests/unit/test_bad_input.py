"""Issue 11: bad recordings and bad arguments give one clear line, never a
traceback, never a silent wrong count.  One test per case of the issue,
each with the exact line."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import pfntrace
from pfntrace.cli import main
from pfntrace.commands.common import Fail
from pfntrace.recording import Recording, RecordingWriter
from pfntrace.recording import format as fmt

from test_fuzz_recording import build, join, split
from test_recording import tiny_fs  # noqa: F401  (a fixture)
from test_report import HEADER, stream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cli(*args):
    return CliRunner().invoke(main, list(args))


def one_line(r):
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    return line


@pytest.fixture
def rec(tmp_path):
    path = build(tmp_path / "run.pft")
    return path, split(path.read_bytes())


def _write(path, blocks, renumber=True):
    path.write_bytes(join(blocks, renumber))
    return str(path)


def _offsets(blocks):
    out, off = [], len(fmt.FILE_MAGIC)
    for _, _, payload in blocks:
        out.append(off)
        off += fmt.BLOCK_HEADER_SIZE + len(payload)
    return out


def _json_edit(blocks, i, edit):
    kind, seq, payload = blocks[i]
    obj = json.loads(payload)
    text = edit(obj)
    blocks = list(blocks)
    blocks[i] = (kind, seq, (text if isinstance(text, str) else json.dumps(obj)).encode())
    return blocks


# -- 1. wrong counts, no warning ---------------------------------------------

def test_repeated_events_block_is_warned(rec, tmp_path):
    _, blocks = rec
    ev = [i for i, b in enumerate(blocks) if b[0] == fmt.BLOCK_EVENTS]
    blocks[ev[0]:ev[0]] = [blocks[ev[0]]] * 3          # four copies of the first
    p = _write(tmp_path / "dup.pft", blocks)
    off = _offsets(blocks)
    r = cli("report", "--json", p)
    assert r.exit_code == 0
    expected = [
        "EVENTS block at offset %d repeats the one at offset %d: its events are "
        "counted twice" % (off[ev[0] + k], off[ev[0]]) for k in (1, 2, 3)
    ] + ["trailer says 6 events were written, the file holds 12",
         "trailer says 4 EVENTS blocks were written, the file holds 7"]
    assert r.stderr.splitlines() == ["pfntrace: warning: %s: %s" % (p, w) for w in expected]
    doc = json.loads(r.stdout)
    assert doc["warnings"] == expected and doc["summary"]["truncated"] is False


def test_check_fails_a_recording_not_intact(tmp_path, monkeypatch):
    """No finding and nothing lost, but an EVENTS block repeated: exit 2."""
    from pfntrace.commands import check

    path = tmp_path / "ok.pft"
    w = RecordingWriter.create(path, HEADER)
    w.add_events(b"".join(stream()[:2]))           # UPDATED, CURRENT
    w.close({"exit_code": 0})
    blocks = split(path.read_bytes())
    blocks.insert(1, blocks[1])
    p = _write(path, blocks)
    monkeypatch.setattr(check, "prepare", lambda output, *a: output)
    monkeypatch.setattr(check, "run", lambda output, keep: {"exit_code": 0})
    r = cli("check", "-o", p, "--", "true")
    off = _offsets(blocks)
    why = "EVENTS block at offset %d repeats the one at offset %d: its events are " \
          "counted twice" % (off[2], off[1])
    assert r.exit_code == 2
    assert r.stderr.splitlines()[-1] == "pfntrace: check: the recording is not intact: " + why
    assert "pfntrace check: warning: " + why in r.stderr.splitlines()


def test_concatenated_removed_and_moved_blocks_are_warned(rec, tmp_path):
    path, blocks = rec
    data = path.read_bytes()
    p = tmp_path / "two.pft"
    p.write_bytes(data + data)
    r = cli("report", str(p))
    assert r.exit_code == 0 and r.stderr == (
        "pfntrace: warning: %s: another recording follows the trailer at offset %d: its "
        "%d bytes are not read\n" % (p, len(data), len(data)))

    ev = [i for i, b in enumerate(blocks) if b[0] == fmt.BLOCK_EVENTS]
    rest = [b for i, b in enumerate(blocks) if i not in ev]
    p = _write(tmp_path / "moved.pft", rest + [blocks[i] for i in ev])
    r = cli("report", p)
    assert r.exit_code == 0 and r.stderr.splitlines() == [
        "pfntrace: warning: %s: an EVENTS block follows the trailer at offset %d: "
        "1328 bytes not read" % (p, _offsets(rest)[-1] + fmt.BLOCK_HEADER_SIZE
                                 + len(rest[-1][2])),
        "pfntrace: warning: %s: trailer says 6 events were written, the file holds 0" % p,
        "pfntrace: warning: %s: trailer says 4 EVENTS blocks were written, the file "
        "holds 0" % p]

    # A LOST block removed: the trailer's own count tells.
    lost = [i for i, b in enumerate(blocks) if b[0] == fmt.BLOCK_LOST]
    p = _write(tmp_path / "nolost.pft", [b for i, b in enumerate(blocks) if i != lost[-1]])
    r = cli("report", p)
    assert r.stderr == ("pfntrace: warning: %s: trailer says 2 events were lost, the LOST "
                        "blocks say 1\n" % p)

    # Out of sequence: cut there, and said.
    blocks[ev[0]], blocks[ev[1]] = blocks[ev[1]], blocks[ev[0]]
    p = _write(tmp_path / "swap.pft", blocks, renumber=False)
    r = cli("report", p)
    assert r.exit_code == 0 and r.stderr == (
        "pfntrace: warning: %s: the recording is truncated (block out of sequence at "
        "offset %d (4, expected 2)); reporting what is there\n" % (p, _offsets(blocks)[ev[0]]))


# -- 2. a FIFO ---------------------------------------------------------------

def test_fifo_is_refused_without_blocking(tmp_path):
    p = tmp_path / "f.pft"
    os.mkfifo(p)
    assert one_line(cli("report", str(p))) == (
        "pfntrace: %s is not a regular file (a FIFO)" % p)


# -- 3. right CRCs, wrong JSON -----------------------------------------------

@pytest.mark.parametrize("block,edit,why", [
    ("HEADER", lambda o: o.__setitem__("clock", "x"),
     "has an invalid header block (clock: expected an object, got 'x')"),
    ("HEADER", lambda o: o["clock"].__setitem__("tick_ns", 10 ** 30),
     "has an invalid header block (clock.tick_ns: 1000000000000000000000000000000 is "
     "above the maximum, 1000000000)"),
    ("HEADER", lambda o: json.dumps(o).replace('"tick_ns": 4000000', '"tick_ns": Infinity'),
     "has a corrupt header block (Infinity is not a JSON value)"),
    ("HEADER", lambda o: o["plan"]["clock"].__setitem__("status", None),
     "has an invalid header block (plan.clock.status: expected a string, got None)"),
    ("META", lambda o: o.__setitem__("files", [1]),
     "has an invalid META block at offset {off} (files: expected an object, got a list)"),
    ("META", lambda o: o["procs"]["100"].__setitem__("comm", 5),
     "has an invalid META block at offset {off} (procs['100'].comm: expected a string, "
     "got 5)"),
    ("META", lambda o: json.dumps(o)[:-1] + ',"x":' + "[" * 990 + "]" * 990 + "}",
     "has an invalid META block at offset {off} (JSON nested too deep)"),
    ("META", lambda o: json.dumps(o)[:-1] + ',"x":' + "[" * 40 + "]" * 40 + "}",
     "has an invalid META block at offset {off} (nested more than 32 levels deep)"),
    ("LOST", lambda o: o.__setitem__("per_cpu", [-5]),
     "has an invalid LOST block at offset {off} (per_cpu[0]: -5 is below the minimum, 0)"),
    ("LOST", lambda o: o.__setitem__("per_cpu", ["1", "2"]),
     "has an invalid LOST block at offset {off} (per_cpu[0]: expected an integer, "
     "got '1')"),
    ("TRAILER", lambda o: json.dumps(o).replace('"mtime_ns": %d' % o["statx"]["259:3:12"][
        "mtime_ns"], '"mtime_ns": Infinity'),
     "has an invalid TRAILER block at offset {off} (Infinity is not a JSON value)"),
    ("TRAILER", lambda o: o["blind"].__setitem__("ring_full", "2"),
     "has an invalid TRAILER block at offset {off} (blind['ring_full']: expected an "
     "integer, got '2')"),
    ("TRAILER", lambda o: o["written"].__setitem__("events", True),
     "has an invalid TRAILER block at offset {off} (written.events: expected an integer, "
     "got True)"),
])
@pytest.mark.parametrize("json_out", [False, True])
def test_wrongly_typed_json_is_one_line(rec, tmp_path, block, edit, why, json_out):
    _, blocks = rec
    i = max(j for j, b in enumerate(blocks) if fmt.KIND_NAMES[b[0]] == block)
    blocks = _json_edit(blocks, i, edit)
    p = _write(tmp_path / "bad.pft", blocks)
    args = ["report", "--json", p] if json_out else ["report", p]
    assert one_line(cli(*args)) == "pfntrace: %s %s" % (p, why.format(off=_offsets(blocks)[i]))


# -- 4. memory does not follow a length field: test_fuzz_recording ------------

def test_long_events_block_is_read_in_pieces(tmp_path, monkeypatch):
    """A block longer than the read size is checked whole, then yielded in
    pieces of whole events: the same events as one read would give."""
    from pfntrace.recording import reader

    data = b"".join(stream()) * 50
    w = RecordingWriter.create(tmp_path / "big.pft", HEADER, block_size=len(data))
    w.add_events(data)
    w.close({})
    monkeypatch.setattr(reader, "READ_CHUNK", 3 * len(stream()[0]) + 7)
    with Recording.open(tmp_path / "big.pft") as rec:
        pieces = list(rec.iter_event_blocks())
        assert not rec.truncated and rec.warnings == []
    assert b"".join(pieces) == data and len(pieces) == 100
    assert {len(x) for x in pieces} == {3 * len(stream()[0])}


# -- 5. the command line -----------------------------------------------------

@pytest.mark.parametrize("args,line", [
    (["report", "--tolerance-us", "inf", "x.pft"],
     "pfntrace: report: No such option '--tolerance-us'."),
    (["lab", "run", "--size", "99999999999999G", "--", "true"],
     "pfntrace: lab: --size wants at most 64G: the guest's pmem is host memory"),
    (["record", "--duration", "nan", "--", "true"],
     "pfntrace: record: Invalid value for '--duration': must be a finite number at least "
     "0, not nan"),
    (["record", "--bogus-flag"], "pfntrace: record: No such option '--bogus-flag'."),
    (["check", "--bogus-flag"], "pfntrace: check: No such option '--bogus-flag'."),
    (["top", "--interval", "nan"],
     "pfntrace: top: Invalid value for '--interval': must be a finite number at most "
     "86400, not nan"),
    (["report", "--pid", "-1", "x.pft"],
     "pfntrace: report: Invalid value for '--pid': must be an integer at least 0, not -1"),
])
def test_bad_options_are_one_line(args, line):
    assert one_line(cli(*args)) == line


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "1e9"])
def test_lab_timeout_is_checked_before_qemu(value):
    assert one_line(cli("lab", "run", "--timeout", value, "--", "true")) == (
        "pfntrace: lab run: Invalid value for '--timeout': must be a finite number above 0 "
        "and at most 604800, not %s" % value)


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pfntrace.__file__)))
    return subprocess.run([sys.executable, "-m", "pfntrace"] + args, env=env,
                          stderr=subprocess.PIPE, text=True, timeout=60, **kw)


def test_output_to_full_disk_or_closed_pipe(rec):
    path, _ = rec
    with open("/dev/full", "w") as full:
        p = _run(["report", "--json", str(path)], stdout=full)
    assert p.returncode == 2
    assert p.stderr == "pfntrace: cannot write output: No space left on device\n"
    r, w = os.pipe()
    os.close(r)
    try:
        p = _run(["report", str(path)], stdout=w)
    finally:
        os.close(w)
    assert p.returncode == 2 and p.stderr == "pfntrace: cannot write output: Broken pipe\n"


def test_record_on_a_full_disk_keeps_what_was_written(tiny_fs):  # noqa: F811
    from pfntrace.commands.session import run

    out = str(tiny_fs / "r.pft")
    batch = b"".join(stream()) * 10

    class Recorder:
        writer = RecordingWriter.create(out, HEADER, block_size=len(batch))
        opt = SimpleNamespace(output=out)
        tracer = SimpleNamespace(close=lambda: None)

        def run(self):
            while True:
                self.writer.add_events(batch)

    rec = Recorder()
    with pytest.raises(Fail) as ei:
        run(rec)
    kept = rec.writer.events_written
    assert kept > 0 and str(ei.value) == (
        "cannot write %s: No space left on device; %s keeps the %d events written before "
        "(it reads as truncated)" % (out, out, kept))
    with Recording.open(out) as r:
        assert r.event_count == kept and r.truncated
