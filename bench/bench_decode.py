"""Decode speed: build a synthetic recording, time open + iterating all rows.

    /usr/bin/python3 bench/bench_decode.py [EVENTS]     (default 1,000,000)

Prints figures only; nothing is asserted.
"""

import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfntrace import decode, layout  # noqa: E402
from pfntrace.recording import Recording, RecordingWriter  # noqa: E402


def build(path, count):
    rng = random.Random(1)
    # A few hundred distinct events, repeated: building is not what we time.
    pool = [
        layout.encode(ts_ns=i * 1000, duration_ns=rng.randint(100, 90000),
                      ino=rng.randint(12, 5000), pgoff=rng.randint(0, 1 << 20),
                      address=0x7f0000000000 + i * 4096, type=rng.randint(1, 5),
                      pid=1000 + i % 7, tid=1000 + i % 11, dev=(259 << 20) | 1,
                      mtime_sec=[1700000000, 1700000001], ctime_nsec=[5, 6],
                      comm=rng.choice(["fio", "dd", "postgres", "kworker/0:1"]))
        for i in range(512)
    ]
    chunk = b"".join(pool)
    w = RecordingWriter.create(path, {"bench": True})
    left = count
    while left:
        n = min(left, len(pool))
        w.add_events(chunk[:n * layout.EVENT_SIZE])
        left -= n
    w.add_meta({"procs": {"1000": {"comm": "fio"}}})
    w.close({"exit_code": 0})


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pft")
        t = time.perf_counter()
        build(path, count)
        t_build = time.perf_counter() - t
        size = os.path.getsize(path)
        print("built %d events (%.1f MiB) in %.2fs" % (count, size / 2**20, t_build))

        t0 = time.perf_counter()
        rec = Recording.open(path)
        t1 = time.perf_counter()
        ts = decode.ROW_INDEX["ts_ns"]
        n = 0
        total = 0
        for row in rec.iter_rows():
            n += 1
            total += row[ts]
        t2 = time.perf_counter()
        assert n == count == rec.event_count, (n, count, rec.event_count)
        rows_rate = n / (t2 - t0)
        print("open: %.3fs, %d blocks, meta seen: %s"
              % (t1 - t0, rec.event_blocks, bool(rec.meta)))
        print("iter_rows (open + every row, one field read): %.2fs = %.2fM events/s"
              % (t2 - t0, rows_rate / 1e6))

        t0 = time.perf_counter()
        blocks = 0
        for payload in rec.iter_event_blocks():
            blocks += 1
        t1 = time.perf_counter()
        print("raw block read + CRC: %.2fs = %.0f MiB/s"
              % (t1 - t0, size / 2**20 / (t1 - t0)))

        limit = min(count, 200_000)
        t0 = time.perf_counter()
        m = 0
        for _ in rec.iter_events():
            m += 1
            if m == limit:
                break
        t1 = time.perf_counter()
        print("iter_events (dicts), first %d: %.2fs = %.2fM events/s"
              % (m, t1 - t0, m / (t1 - t0) / 1e6))
        rec.close()


if __name__ == "__main__":
    main()
