"""correlate's block path (feed_block: most events tallied at C speed, the
rest through feed) against feed() of every event, the reference: on random
event streams of every type and deciding bit, and on the 6.12 DAX pattern
the benchmarks use.  Everything an Analysis says must be the same."""

import json
import random
import sys
from pathlib import Path

import pytest

from pfntrace import correlate, layout
from pfntrace.recording import Recording, RecordingWriter
from pfntrace.views import export

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_report import build  # noqa: E402

C = layout.const
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
HEADER = {"kernel": "test", "command": ["t"], "plan": {"huge_fault_arg_is_order": True},
          "clock": {"realtime_minus_monotonic_ns": T0, "tick_ns": 4_000_000}}
TYPES = [C("PFT_EV_WP"), C("PFT_EV_HANDLER"), C("PFT_EV_DAX_FAULT"),
         C("PFT_EV_DAX_WRITEBACK"), C("PFT_EV_DAX_MKWRITE"), C("PFT_EV_GETATTR"),
         0, 7, 14, 15, 16, 255]
WIDE_TYPES = [256, 0x10001]     # a block with one of these goes to feed() whole
# Every bit classify(), judge() and the tallies look at, and a few they don't.
FLAG_BITS = [C("PFT_F_FILE"), C("PFT_F_INODE_DAX"), C("PFT_F_PFN_PATH"), C("PFT_F_IN_WP"),
             C("PFT_F_PMD"), C("PFT_F_HANDLER_RAN"), C("PFT_F_HANDLER_FOLDED"),
             C("PFT_F_CLOSE_UNMAP"), C("PFT_F_CLOSE_FOREIGN"), 1 << 30]
# A recording that carries write-exposure windows' closes (PFT_EV_CLOSE).
EXPOSURE_HEADER = dict(HEADER, plan=dict(HEADER["plan"], hooks=[
    {"hook": "unmap_page_range", "kind": "kprobe", "status": "attach", "why": ""}]))
RET_BITS = [C("PFT_VM_FAULT_RETRY"), C("PFT_VM_FAULT_FALLBACK"), C("PFT_VM_FAULT_NOPAGE"),
            0x1, 1 << 20]
ROLE_BITS = [C("PFT_ROLE_FAULT"), C("PFT_ROLE_HUGE_FAULT"), C("PFT_ROLE_PAGE_MKWRITE"),
             C("PFT_ROLE_PFN_MKWRITE")]
FF_BITS = [C("PFT_FAULT_FLAG_WRITE"), C("PFT_FAULT_FLAG_MKWRITE"), 1 << 8]
VM_BITS = [C("PFT_VM_SHARED"), C("PFT_VM_PFNMAP"), C("PFT_VM_MIXEDMAP")]


def bits(rng, choices, p=0.5):
    v = 0
    for b in choices:
        if rng.random() < p:
            v |= b
    return v


def random_event(rng, ts, common_types, wide=False):
    typ = rng.choice((TYPES + WIDE_TYPES if wide else TYPES) if rng.random() < 0.3
                     else common_types)
    s0 = 1_700_000_000 + rng.randrange(3)
    s1 = s0 + rng.choice((0, 0, 1))
    return layout.encode(
        type=typ, ts_ns=ts, duration_ns=rng.randrange(1, 5000),
        dev=rng.choice(((259 << 20) | 3, (8 << 20) | 1)), ino=rng.choice((12, 13, 14, 99)),
        pgoff=rng.randrange(8), pid=rng.choice((100, 101)), tid=rng.choice((100, 101, 102)),
        comm=rng.choice(("writer", "cp")), flags=bits(rng, FLAG_BITS),
        ret=bits(rng, RET_BITS, 0.3), roles=bits(rng, ROLE_BITS),
        fault_flags=bits(rng, FF_BITS), vm_flags=bits(rng, VM_BITS, 0.7),
        arg=rng.choice((0, 1, 9, 18, 64)), ftu_calls=rng.randrange(2),
        ops_pfn_mkwrite=rng.choice((0, 0xffffffffc0a01230)), ops_page_mkwrite=0xffffffffc0a01240,
        handler=0xffffffffc0a01230, time_gran=1,
        mtime_sec=[s0, s1], mtime_nsec=[rng.randrange(NS), rng.randrange(NS)],
        ctime_sec=[s0, s1], ctime_nsec=[rng.randrange(2 * NS) % (1 << 32), rng.randrange(NS)],
        clock_ns=[s0 * NS, s1 * NS + NS])


def random_recording(path, seed, blocks=6, per_block=1500, header=HEADER):
    rng = random.Random(seed)
    common = [C("PFT_EV_WP"), C("PFT_EV_HANDLER"), C("PFT_EV_DAX_FAULT")]
    w = RecordingWriter.create(path, header)
    w.add_meta({"files": {"259:3:12": {"path": "/mnt/dax/f"}}, "procs": {}})
    ts = 0
    for b in range(blocks):
        events = []
        for _ in range(per_block):
            ts += rng.randrange(0, 2000)
            events.append(random_event(rng, ts, common, wide=b == 2))
        w.add_events(b"".join(events))
    w.close({"duration_ns": ts, "exit_code": 0})
    return path


def everything(an):
    """All an Analysis says, comparable: the JSON report with every fault,
    and every counter of every file, process and the engine."""
    files = [{k: getattr(f, k) for k in correlate.FileStats.__slots__} for f in an.files]
    procs = [(p.pid, p.comm, p.write_faults, p.reads, list(p.kinds), list(p.verdicts),
              sorted(p.files), p.invisible) for p in an.processes]
    return (export.to_json(an, events=True), files, procs, an.counts, list(an.latency),
            an.events, an.first_ts, an.last_ts)


def analyse(path, per_event, monkeypatch, **selection):
    with monkeypatch.context() as m:
        if per_event:   # the reference: every event decoded and through feed()
            m.setattr(correlate._Engine, "feed_block",
                      lambda self, payload: self.feed(correlate._rows(payload)))
        with Recording.open(path) as rec:
            an = correlate.analyse(rec, keep_faults=True,
                                   selection=correlate.Selection(**selection))
    return everything(an)


@pytest.mark.parametrize("seed", range(12))
def test_random_streams(tmp_path, monkeypatch, seed):
    path = random_recording(tmp_path / "r.pft", seed)
    block = analyse(path, False, monkeypatch)
    assert block == analyse(path, True, monkeypatch)
    assert block[-3] == 6 * 1500


@pytest.mark.parametrize("seed", range(4))
def test_random_streams_with_exposure_windows(tmp_path, monkeypatch, seed):
    """Closes and getattrs in stream order through both paths: the same
    windows, exposed stats and histograms (the JSON's exposure)."""
    path = random_recording(tmp_path / "r.pft", 50 + seed, header=EXPOSURE_HEADER)
    block = analyse(path, False, monkeypatch)
    assert block == analyse(path, True, monkeypatch)
    doc = json.loads(block[0])
    assert doc["exposure"]["windows"] > 100 and doc["exposure"]["exposed_observations"] > 10
    assert doc["exposure"]["closed"]["writeback"] and doc["exposure"]["closed"]["unmap"]


@pytest.mark.parametrize("selection", [dict(file="/mnt/dax/f"), dict(verdict="MISSED")])
def test_random_streams_with_a_selection(tmp_path, monkeypatch, selection):
    path = random_recording(tmp_path / "r.pft", 99)
    assert analyse(path, False, monkeypatch, **selection) == \
        analyse(path, True, monkeypatch, **selection)


def test_the_dax_pattern_of_the_benchmarks(tmp_path, monkeypatch):
    path = tmp_path / "b.pft"
    build(str(path), 20_000)
    block = analyse(path, False, monkeypatch)
    assert block == analyse(path, True, monkeypatch)
    files = block[1]
    # Three in four events only counted: retried do_wp_page, handler inside
    # it, fs_dax tracepoint; and every re-protect's pages.
    assert sum(f["handler_calls"] for f in files) == sum(f["retries"] for f in files) > 4000
    assert sum(f["reprotect_pages"] for f in files) == 64 * sum(f["reprotects"] for f in files)


def test_random_blocks_are_mostly_tallied():
    """The random streams above do go through the tallies: most blocks have
    lane codes, and a third of their events or more are only counted."""
    rng = random.Random(1)
    common = [C("PFT_EV_WP"), C("PFT_EV_HANDLER"), C("PFT_EV_DAX_FAULT")]
    payload = b"".join(random_event(rng, i, common) for i in range(1500))
    codes = correlate._lane_codes(payload)
    assert codes is not None
    assert codes.translate(correlate._JUDGED).count(0) > 500


def test_a_block_whose_types_do_not_fit_a_byte_goes_to_feed(tmp_path, monkeypatch):
    calls = []
    real = correlate._Engine.feed

    def feed(self, rows):
        rows = list(rows)
        calls.append(len(rows))
        return real(self, rows)

    rng = random.Random(5)
    w = RecordingWriter.create(tmp_path / "w.pft", HEADER)
    w.add_meta({})
    w.add_events(b"".join(random_event(rng, i, [0x10001]) for i in range(50)))
    w.close({"duration_ns": 50, "exit_code": 0})
    monkeypatch.setattr(correlate._Engine, "feed", feed)
    with Recording.open(tmp_path / "w.pft") as rec:
        an = correlate.analyse(rec)
    assert calls == [50] and an.events == 50
