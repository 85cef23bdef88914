"""Hostile recordings: a seeded fuzz of `pfntrace report --json`.

The mutation classes of the lab campaign (issue 11): truncation at every
offset, bit flips, random overwrites, block edits (repeated, removed, moved,
swapped blocks, two recordings end to end), JSON values of the wrong type
in blocks whose CRCs are right, and special files.  Every run must end in
a report or one line on stderr (exit 0 or 2), never a traceback or a hang,
with bounded memory; and a mutation that changes any count must say so (a
warning) or be refused (an error).
"""

import json
import os
import random
import resource
import signal
import socket
import struct
import time

import pytest
from click.testing import CliRunner

from pfntrace.cli import main
from pfntrace.recording import RecordingWriter
from pfntrace.recording import format as fmt

from test_report import HEADER, META, NS, T0, stream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SEED = 11
PER_CLASS = 600           # random cases per class; truncation covers every offset
CASE_LIMIT_S = 10         # a case running longer is a hang
MEMORY_GROWTH_MB = 150    # peak RSS growth over the whole campaign


def build(path):
    """A recording shaped like the recorder's: META, several EVENTS blocks,
    LOST blocks that change, a trailer with blind counts and statx."""
    w = RecordingWriter.create(path, HEADER, block_size=2 * len(stream()[0]))
    w.add_meta(META)
    evs = stream()
    w.set_lost([0, 1])
    w.add_events(b"".join(evs[:3]))
    w.flush()
    w.set_lost([0, 2])
    w.add_events(b"".join(evs[3:]))
    w.close({
        "duration_ns": 6 * NS, "exit_code": 0, "events": len(evs), "lost": 2,
        "blind": {"ring_full": 2, "unfinished": 0},
        "statx": {"259:3:12": {"path": "/mnt/dax/f", "exists": True,
                               "mtime_ns": T0 + NS, "ctime_ns": T0 + NS, "size": 4096,
                               "dax": True},
                  "259:3:13": {"path": "/mnt/dax/g", "exists": False}}})
    return path


# -- blocks ------------------------------------------------------------------

def split(data):
    """[(kind, seq, payload)] of a well-formed recording."""
    out, off = [], len(fmt.FILE_MAGIC)
    while off < len(data):
        bh = fmt.unpack_block_header(data[off:off + fmt.BLOCK_HEADER_SIZE])
        start = off + fmt.BLOCK_HEADER_SIZE
        out.append((bh.kind, bh.seq, data[start:start + bh.length]))
        off = start + bh.length
    return out


def join(blocks, renumber=True):
    out = bytearray(fmt.FILE_MAGIC)
    for i, (kind, seq, payload) in enumerate(blocks):
        out += fmt.pack_block_header(kind, i if renumber else seq, payload) + payload
    return bytes(out)


# -- mutations: each returns the new bytes, or None to skip ------------------

def truncations(data):
    """Every offset near a block boundary (where the framing decides), every
    fifth one inside payloads."""
    edges, off = [0], len(fmt.FILE_MAGIC)
    for _, _, payload in split(data):
        edges.append(off)
        off += fmt.BLOCK_HEADER_SIZE + len(payload)
    near = {n for e in edges for n in range(e - 8, e + fmt.BLOCK_HEADER_SIZE + 8)}
    return [("truncate at %d" % n, data[:n]) for n in range(len(data))
            if n in near or n % 5 == 0]


def bit_flip(data, rng):
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def overwrite(data, rng):
    buf = bytearray(data)
    n = rng.randint(1, 64)
    i = rng.randrange(len(buf))
    buf[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
    return bytes(buf[:len(data)])


def block_edit(data, rng):
    blocks = split(data)
    op = rng.choice(["dup", "dup4", "dup_keep_seq", "remove", "remove_keep_seq", "swap",
                     "after_trailer", "concat", "junk"])
    i = rng.randrange(len(blocks))
    if op == "dup":
        blocks.insert(i, blocks[i])
    elif op == "dup4":
        ev = [j for j, b in enumerate(blocks) if b[0] == fmt.BLOCK_EVENTS]
        i = rng.choice(ev)
        blocks[i:i] = [blocks[i]] * 3
    elif op == "dup_keep_seq":
        blocks.insert(i, blocks[i])
        return join(blocks, renumber=False)
    elif op == "remove":
        del blocks[i]
    elif op == "remove_keep_seq":
        del blocks[i]
        return join(blocks, renumber=False)
    elif op == "swap":
        j = rng.randrange(len(blocks))
        blocks[i], blocks[j] = blocks[j], blocks[i]
        return join(blocks, renumber=False)
    elif op == "after_trailer":
        if blocks[i][0] == fmt.BLOCK_TRAILER:
            return None
        blocks.append(blocks.pop(i))
    elif op == "concat":
        return data + data
    else:
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 100)))
    return join(blocks)


DEEP = "__990 levels deep__"   # spliced in as text: json.dumps would recurse
# Strings a file or process may really be named: markup, non-UTF-8 bytes
# (os.fsdecode's surrogates), control characters.
NAMES = ["[/]", ":smile:", "\udcff", "\n\r\t", "", "a" * 5000]


def _wrong(rng, value):
    """A value of another JSON type than value, or a count made negative or
    too large for 64 bits."""
    choices = ["x", -5, 2 ** 70, 1.5, float("inf"), float("nan"), None, True, [], {},
               [1], {"a": 1}]
    choices = [c for c in choices if type(c) is not type(value)
               or (type(c) is int and value >= 0)]
    if rng.random() < 0.05:
        return DEEP
    if isinstance(value, str) and rng.random() < 0.5:
        return rng.choice(NAMES)
    return rng.choice(choices)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield from _paths(v, prefix + (i,))


def json_change(data, rng):
    blocks = split(data)
    json_kinds = (fmt.BLOCK_HEADER, fmt.BLOCK_META, fmt.BLOCK_LOST, fmt.BLOCK_TRAILER)
    i = rng.choice([j for j, b in enumerate(blocks) if b[0] in json_kinds])
    kind, seq, payload = blocks[i]
    obj = json.loads(payload)
    path = rng.choice([p for p in _paths(obj) if p])
    node = obj
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = _wrong(rng, node[path[-1]])
    text = json.dumps(obj).replace(json.dumps(DEEP), "[" * 990 + "]" * 990)
    blocks[i] = (kind, seq, text.encode())
    return join(blocks)


def renamings(data):
    """Every string in every JSON block (and every key of the name maps)
    replaced by each of NAMES in turn: values a recording may really hold,
    which every output must show as text."""
    blocks = split(data)
    out = []
    for i, (kind, seq, payload) in enumerate(blocks):
        if kind == fmt.BLOCK_EVENTS:
            continue
        obj = json.loads(payload)
        for path in _paths(obj):
            node = obj
            for k in path[:-1]:
                node = node[k]
            if not path or not isinstance(node[path[-1]], str):
                continue
            for name in NAMES:
                old = node[path[-1]]
                node[path[-1]] = name
                edited = list(blocks)
                edited[i] = (kind, seq, json.dumps(obj).encode())
                node[path[-1]] = old
                out.append(("%s %s = %r" % (fmt.KIND_NAMES[kind], path, name[:20]),
                            join(edited)))
    return out


# -- running -----------------------------------------------------------------

class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


# The other outputs, one per case in turn: they render what JSON only quotes.
OTHER_MODES = [["--events"], [], ["--csv", "events"], ["--csv", "files"],
               ["--csv", "processes"], ["--csv", "summary"], ["--json", "--events"]]
CSV_MODES = [m for m in OTHER_MODES if "--csv" in m]


def run_report(path, mode=("--json",)):
    runner = CliRunner()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_LIMIT_S)
    try:
        return runner.invoke(main, ["report"] + list(mode) + [str(path)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def counts(doc):
    s = doc["summary"]
    return (s["events"], s["write_faults"], s["lost"], tuple(sorted(s["verdicts"].items())),
            tuple(sorted(s["event_counts"].items())), len(doc["files"]),
            len(doc["processes"]))


def _clean(what, r):
    """No traceback; an error is exit 2 and one line on stderr."""
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        "%s: %r" % (what, r.exception))
    assert r.exit_code in (0, 2), (what, r.exit_code, r.stderr)
    if r.exit_code == 2:
        lines = r.stderr.splitlines()
        assert r.stdout == "" and len(lines) == 1 and lines[0].startswith("pfntrace: "), (
            what, r.stderr)
        return False
    return True


def judge(what, path, baseline, others=()):
    for mode in others:
        _clean("%s %s" % (what, mode), run_report(path, mode))
    r = run_report(path)
    if not _clean(what, r):
        return "error"
    doc = json.loads(r.stdout)
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("pfntrace: warning: ")]
    assert len(warned) == len(r.stderr.splitlines()) == len(doc["warnings"]), (what, r.stderr)
    if counts(doc) != baseline:
        assert doc["warnings"], "%s: counts changed without a warning" % what
    return "warned" if doc["warnings"] else "same"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = build(tmp_path_factory.mktemp("fuzz") / "base.pft")
    r = run_report(path)
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)
    assert doc["warnings"] == [] and doc["summary"]["write_faults"] == 4
    return path.read_bytes(), counts(doc)


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("mutation", [None, bit_flip, overwrite, block_edit, json_change,
                                      renamings],
                         ids=["truncate", "bit_flip", "overwrite", "block_edit", "json_change",
                              "names"])
def test_fuzz_report(tmp_path, original, mutation):
    data, baseline = original
    rng = random.Random("%s-%s" % (SEED, getattr(mutation, "__name__", "truncate")))
    path = tmp_path / "m.pft"
    if mutation is None:
        cases = truncations(data)
    elif mutation is renamings:
        cases = renamings(data)
    else:
        cases = []
        for n in range(PER_CLASS):
            new = mutation(data, rng)
            if new is not None:
                cases.append(("%s #%d" % (mutation.__name__, n), new))
    peak = _peak_mb()
    started = time.monotonic()
    outcome = {}
    for n, (what, new) in enumerate(cases):
        path.write_bytes(new)
        t = time.monotonic()
        others = [OTHER_MODES[n % len(OTHER_MODES)]] if mutation is not None else []
        if mutation is renamings:
            # Every name through the rich text (all its tables) and a CSV table.
            others = [["--events"], CSV_MODES[n % len(CSV_MODES)]]
        kind = judge(what, path, baseline, others)
        assert time.monotonic() - t < CASE_LIMIT_S, what
        outcome[kind] = outcome.get(kind, 0) + 1
    assert _peak_mb() - peak < MEMORY_GROWTH_MB
    assert time.monotonic() - started < 60, "a fuzz class took over a minute"
    # The mutations must reach the reader's checks, not all be shrugged off
    # (a new name is no damage).
    if mutation not in (bit_flip, renamings):
        assert outcome.get("error", 0) + outcome.get("warned", 0) > len(cases) // 4, outcome


def test_fuzz_special_files(tmp_path, original):
    data, baseline = original
    fifo = tmp_path / "f.pft"
    os.mkfifo(fifo)
    link = tmp_path / "l.pft"
    link.symlink_to(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.pft"))
    try:
        for p in (fifo, link, tmp_path / "s.pft", tmp_path, "/dev/null", "/dev/zero",
                  tmp_path / "missing.pft"):
            assert judge(str(p), p, baseline) == "error"
    finally:
        sock.close()


def test_events_length_does_not_drive_memory(tmp_path, original):
    """An EVENTS block that says it is 256 MiB long (a sparse file makes it
    fit; the lab's case was 2 GB, which read in one call came back short
    and was called 'file shrank'): read in bounded pieces, its CRC found
    wrong, memory a small fraction of the length."""
    import tracemalloc

    from pfntrace import layout
    from pfntrace.recording import Recording

    data, _ = original
    blocks = split(data)
    head = join(blocks[:1])
    length = (256 << 20) // layout.EVENT_SIZE * layout.EVENT_SIZE
    bh = fmt.pack_block_header(fmt.BLOCK_EVENTS, 1, b"")
    bh = bh[:8] + struct.pack("<I", length) + bh[12:24]
    bh += struct.pack("<I4x", fmt.crc32(bh))
    path = tmp_path / "big.pft"
    with open(path, "wb") as f:
        f.write(head + bh)
        f.truncate(len(head) + len(bh) + length)
    tracemalloc.start()
    try:
        with Recording.open(path) as rec:
            assert rec.verify() is False
            reason = rec.truncation_reason
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert reason == ("corrupt EVENTS block at offset %d (CRC mismatch): events from "
                      "there on ignored" % len(head))
    r = run_report(path)
    assert r.exit_code == 0 and json.loads(r.stdout)["summary"]["events"] == 0
    assert r.stderr == ("pfntrace: warning: %s: the recording is truncated (%s); reporting "
                        "what is there\n" % (path, reason))
