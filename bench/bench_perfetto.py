#!/usr/bin/python3
"""Benchmark: write the Perfetto timeline of a large synthetic recording.

    .venv/bin/python bench/bench_perfetto.py [--events 10000000] [--profile]

Builds the recording bench_report.py builds (the 6.12 ext4 pattern, ~4
events per write fault, 8 files, 4 processes, UPDATED/CURRENT/MISSED), then
times `pfntrace report --perfetto` in a child process, as a user runs it,
and prints events/s, the CPU time and the peak RSS (ru_maxrss) of it and
the formatting process it forks.  Goal (not
asserted): >= 1M events/s from 10M events, with the peak RSS of 1M.
--profile runs the same in this process under cProfile instead.
"""

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_report import build  # noqa: E402


def run_child(rec, out):
    """(wall seconds, CPU seconds, peak RSS in bytes) of `pfntrace report
    --perfetto`: on a loaded machine the CPU time is the steadier figure."""
    argv = [sys.executable, "-m", "pfntrace", "report", "--perfetto", out, rec]
    t = time.perf_counter()
    pid = subprocess.Popen(argv, cwd=os.path.join(HERE, "..")).pid
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("pfntrace report --perfetto failed (%s)" % status)
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def profile(rec, out):
    from pfntrace import correlate
    from pfntrace.recording import Recording
    from pfntrace.views import perfetto

    prof = cProfile.Profile()
    with Recording.open(rec) as r, open(out, "w") as f:
        prof.enable()
        an, batches = correlate.stream_batches(r)
        perfetto.write(f, an, batches)
        prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None, help="where to build the recording and the trace")
    ap.add_argument("--profile", action="store_true", help="cProfile, in this process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        rec = os.path.join(d, "bench.pft")
        out = os.path.join(d, "bench.json")
        t = time.perf_counter()
        n = build(rec, args.events)
        print("built %d events (%.2f GB) in %.1f s" % (
            n, os.path.getsize(rec) / 1e9, time.perf_counter() - t), flush=True)
        if args.profile:
            profile(rec, out)
            return
        seconds, cpu, rss = run_child(rec, out)
        print("perfetto: %d events in %.2f s (%.2f M events/s), CPU %.2f s (%.2f M events/s "
              "of CPU); trace %.2f GB; peak RSS %.0f MB" % (
                  n, seconds, n / seconds / 1e6, cpu, n / cpu / 1e6,
                  os.path.getsize(out) / 1e9, rss / 2**20))


if __name__ == "__main__":
    main()
