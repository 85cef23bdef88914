#!/usr/bin/python3
"""Benchmark: correlate a large synthetic recording and render its JSON.

    /usr/bin/python3 bench/bench_report.py [--events 10000000] [--keep-faults]

Builds a recording in a temporary directory (184 bytes an event: ~1.8 GB for
10M), then times pfntrace.correlate.analyse() plus export.to_json() and
prints events/s.  The stream is the 6.12 ext4 pattern, one write fault =
WP (retried under the per-VMA lock) + HANDLER (ext4_dax_fault as
pfn_mkwrite) + WP (handler ran) + fs_dax pte fault, over 8 files and 4
processes, with a re-protect every 64 faults and a mix of UPDATED, CURRENT
and MISSED verdicts.  Goal (not asserted): <= 10 s for 10M events.
"""

import argparse
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pfntrace import correlate, layout  # noqa: E402
from pfntrace.recording import Recording, RecordingWriter  # noqa: E402
from pfntrace.views import export  # noqa: E402

C = layout.const
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
DEV = (259 << 20) | 3
BLOCK_FAULTS = 1024          # write faults per template block
BLOCK_SPAN_NS = NS           # each block is one second later than the previous


def template_block():
    """~4 events per fault; returns (bytes, events)."""
    out = []
    wp = C("PFT_EV_WP")
    handler = C("PFT_EV_HANDLER")
    roles = C("PFT_ROLE_FAULT") | C("PFT_ROLE_PAGE_MKWRITE") | C("PFT_ROLE_PFN_MKWRITE")
    vmf = C("PFT_VM_SHARED") | C("PFT_VM_MIXEDMAP")
    has = C("PFT_F_HAS_PFN_MKWRITE") | C("PFT_F_INODE_DAX") | C("PFT_F_FILE")
    for i in range(BLOCK_FAULTS):
        ts = i * (BLOCK_SPAN_NS // BLOCK_FAULTS)
        ino = 100 + i % 8
        pid = 1000 + i % 4
        pgoff = i % 512
        wall = T0 + ts
        kind = i % 16
        if kind == 0:                      # MISSED: stale by 3 s
            before = after = wall - 3 * NS
        elif kind < 6:                     # CURRENT: same tick
            before = after = wall - 1000
        else:                              # UPDATED
            before, after = wall - 2 * NS, wall - 1000
        (s0, n0), (s1, n1) = divmod(before, NS), divmod(after, NS)
        common = dict(dev=DEV, ino=ino, pid=pid, tid=pid, comm="bench%d" % (i % 4),
                      pgoff=pgoff, vm_flags=vmf, mtime_sec=[s0, s1], mtime_nsec=[n0, n1],
                      ctime_sec=[s0, s1], ctime_nsec=[n0, n1], ops_pfn_mkwrite=0xffffffffc0000000,
                      clock_ns=[wall - 1000, wall - 1000], time_gran=1)
        out.append(layout.encode(type=wp, ts_ns=ts, ret=C("PFT_VM_FAULT_RETRY"),
                                 flags=has, duration_ns=300, **common))
        out.append(layout.encode(type=handler, ts_ns=ts + 100, roles=roles,
                                 flags=has | C("PFT_F_IN_WP"), fault_flags=3,
                                 ret=C("PFT_VM_FAULT_NOPAGE"), duration_ns=1500 + 37 * kind,
                                 ftu_calls=int(kind >= 6), **common))
        out.append(layout.encode(type=wp, ts_ns=ts + 50, ret=C("PFT_VM_FAULT_NOPAGE"),
                                 flags=has | C("PFT_F_HANDLER_RAN"), duration_ns=2500,
                                 **common))
        out.append(layout.encode(type=C("PFT_EV_DAX_FAULT"), ts_ns=ts + 120,
                                 fault_flags=3, duration_ns=900, **common))
        if i % 64 == 63:
            out.append(layout.encode(type=C("PFT_EV_DAX_WRITEBACK"), ts_ns=ts + 200,
                                     arg=64, **common))
    return b"".join(out), len(out)


def build(path, n_events):
    tmpl, per_block = template_block()
    size = layout.EVENT_SIZE
    off_ts = layout.ffi.offsetof("struct pft_event", "ts_ns")
    off_ms = layout.ffi.offsetof("struct pft_event", "mtime_sec")
    off_cs = layout.ffi.offsetof("struct pft_event", "ctime_sec")
    off_clk = layout.ffi.offsetof("struct pft_event", "clock_ns")
    q = struct.Struct("=Q")
    qq = struct.Struct("=qq")
    base = [(q.unpack_from(tmpl, i * size)[0], qq.unpack_from(tmpl, i * size + off_ms),
             qq.unpack_from(tmpl, i * size + off_cs), qq.unpack_from(tmpl, i * size + off_clk))
            for i in range(per_block)]
    header = {"kernel": "bench", "command": ["bench"],
              "plan": {"huge_fault_arg_is_order": True, "hooks": []},
              "clock": {"realtime_minus_monotonic_ns": T0, "tick_ns": 4_000_000}}
    w = RecordingWriter.create(path, header)
    w.add_meta({"files": {"259:3:%d" % (100 + i): {"path": "/mnt/dax/f%d" % i}
                          for i in range(8)},
                "clock_samples": [[0, T0]]})
    written = 0
    block = 0
    buf = bytearray(tmpl)
    while written < n_events:
        shift_ns = block * BLOCK_SPAN_NS
        for i, (ts, (m0, m1), (c0, c1), (k0, k1)) in enumerate(base):
            p = i * size
            q.pack_into(buf, p + off_ts, ts + shift_ns)
            qq.pack_into(buf, p + off_ms, m0 + block, m1 + block)
            qq.pack_into(buf, p + off_cs, c0 + block, c1 + block)
            if k0:   # timestamps move by whole seconds per block: so does the clock
                qq.pack_into(buf, p + off_clk, k0 + block * NS, k1 + block * NS)
        n = min(per_block, n_events - written)
        w.add_events(bytes(buf[:n * size]))
        written += n
        block += 1
    w.close({"duration_ns": block * BLOCK_SPAN_NS, "exit_code": 0})
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--keep-faults", action="store_true",
                    help="keep every write fault (as report --events does)")
    ap.add_argument("--dir", default=None, help="where to build the recording")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "bench.pft")
        t = time.perf_counter()
        n = build(path, args.events)
        print("built %d events (%.2f GB) in %.1f s" % (
            n, os.path.getsize(path) / 1e9, time.perf_counter() - t))
        t0 = time.perf_counter()
        with Recording.open(path) as rec:
            an = correlate.analyse(rec, keep_faults=args.keep_faults)
        t1 = time.perf_counter()
        doc = export.to_json(an)
        t2 = time.perf_counter()
        s = an.summary()
        print("write faults %d, verdicts %s, findings %d, JSON %d bytes" % (
            s["write_faults"], s["verdicts"], len(an._problem_rows), len(doc)))
        total = t2 - t0
        print("analyse %.2f s, JSON %.2f s, total %.2f s: %.2f M events/s" % (
            t1 - t0, t2 - t1, total, n / total / 1e6))


if __name__ == "__main__":
    main()
