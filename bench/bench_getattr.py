"""What watching getattr costs a stat-heavy workload: pfntrace's probes with
and without the one on vfs_getattr_nosec (invisible writes).

Run inside the lab (root, a DAX mount at /mnt/dax):

    pfntrace lab run --kernel 6.12 --fs ext4 -- .venv/bin/python bench/bench_getattr.py \
        [--stats 20000] [--runs 3]

Loads pfntrace's BPF program the way `record` does (events into the ring
buffer; the buffer holds every event of a run, so no consumer is needed),
once without and once with the getattr probe, and times os.stat() of one
file in a loop: a DAX file (every stat is an event) and a file outside the
DAX mount (filtered at the probe's entry: what every other stat on the
machine pays).  Modes alternate within each run so drift hits them alike;
prints medians and the ratios.  Figures only; nothing is asserted.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pfntrace import tracer  # noqa: E402
from pfntrace.commands.common import build_plan  # noqa: E402
from pfntrace.probeplan import GETATTR_HOOK  # noqa: E402

MODES = ("untraced", "probes", "probes+getattr")


# In a child: pfntrace's own stats are never observations (self_tgid).
LOOP = """
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
stat = os.stat
for _ in range(n // 10):
    stat(path)
t0 = time.perf_counter_ns()
for _ in range(n):
    stat(path)
print(n * 1e9 / (time.perf_counter_ns() - t0))
"""


def stat_rate(path, n):
    """stat(2) calls per second, n of them (after n/10 to warm up)."""
    p = subprocess.run([sys.executable, "-c", LOOP, path, str(n)], capture_output=True,
                       text=True, check=True)
    return float(p.stdout)


def load(dev, getattr_probe):
    plan = build_plan()
    if not getattr_probe:
        for h in plan["hooks"]:
            if h["hook"] == GETATTR_HOOK:
                h["status"] = "off"
    elif not any(h["hook"] == GETATTR_HOOK and h["status"] == "attach" for h in plan["hooks"]):
        raise SystemExit("%s cannot be probed here" % GETATTR_HOOK)
    t = tracer.Tracer(plan, devs=[dev])
    t.start()
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mount", default=os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax"))
    ap.add_argument("--stats", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.stats <= 0 or args.runs <= 0:
        raise SystemExit("bench_getattr: --stats and --runs must be positive")
    dax = os.path.join(args.mount, "getattr-bench")
    with open(dax, "wb") as f:
        f.write(b"\0" * 4096)
    st = os.stat(args.mount)
    dev = tracer.kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
    results = {(m, w): [] for m in MODES for w in ("dax", "other")}
    events = []
    with tempfile.NamedTemporaryFile() as other:
        targets = {"dax": dax, "other": other.name}
        for i in range(args.runs):
            for mode in MODES:
                t = None if mode == "untraced" else load(dev, mode == "probes+getattr")
                try:
                    for where, path in targets.items():
                        results[(mode, where)].append(stat_rate(path, args.stats))
                    if t is not None and mode == "probes+getattr":
                        events.append(len(t.poll(0)) // tracer.layout.EVENT_SIZE)
                        lost = sum(t.lost())
                        if lost:
                            print("run %d: %d events lost" % (i + 1, lost))
                finally:
                    if t is not None:
                        t.close()
                print("run %d %-15s %s" % (i + 1, mode, "  ".join(
                    "%s %8.0f stats/s" % (w, results[(mode, w)][-1]) for w in targets)),
                    flush=True)
    os.unlink(dax)
    print("\nkernel %s, %d stats per measurement, median of %d"
          % (os.uname().release, args.stats, args.runs))
    med = {k: statistics.median(v) for k, v in results.items()}
    for where in ("dax", "other"):
        base = med[("untraced", where)]
        print("%-5s untraced %8.0f/s  probes %8.0f/s  probes+getattr %8.0f/s   "
              "getattr probe costs %.3fx (vs probes), %.3fx (vs untraced)" % (
                  where, base, med[("probes", where)], med[("probes+getattr", where)],
                  med[("probes", where)] / med[("probes+getattr", where)],
                  base / med[("probes+getattr", where)]))
    print("getattr events per run (DAX stats, warm-up included): %s" % events)


if __name__ == "__main__":
    main()
