"""Write-protect fault storm: untraced vs `pfntrace record` vs `pfntrace top`.

Run inside the lab (root, a DAX mount at /mnt/dax):

    pfntrace lab run --kernel 6.12 --fs ext4 -- .venv/bin/python bench/bench_storm.py \
        [--pages 384] [--rounds 400] [--runs 3]

Compiles bench/storm.c with gcc into a temporary folder, then alternates
runs (untraced, record, top; --runs times each) so drift hits every mode
alike, and prints medians and the traced/untraced slowdowns, both for the
whole storm (msync included) and for its write passes alone (the faults
without the writeback cost).  Figures only; nothing is asserted.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PFNTRACE = [sys.executable, "-m", "pfntrace"]
sys.path.insert(0, REPO)  # this checkout's pfntrace, whichever is installed
LINE = re.compile(r"(\w+)=([0-9.]+)")
LOST = re.compile(r"pfntrace: (\d+) events, (\d+) lost")
ATTACH_TIMEOUT = 180


def compile_storm(tmp):
    from pfntrace.lab.workloads import build_storm

    return build_storm(tmp)


def parse(out):
    m = dict(LINE.findall(out))
    if "faults" not in m:
        raise SystemExit("storm printed no figures:\n" + out)
    return {k: float(v) for k, v in m.items()}


def untraced(storm):
    return parse(subprocess.run(storm, capture_output=True, text=True, check=True).stdout), {}


def record(storm, tmp):
    out = os.path.join(tmp, "storm.pft")
    p = subprocess.run(PFNTRACE + ["record", "-o", out, "--"] + storm,
                       capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit("record failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    m = LOST.search(p.stderr)
    extra = {"events": int(m.group(1)), "lost": int(m.group(2))} if m else {}
    os.unlink(out)
    return parse(p.stdout), extra


def top(storm, tmp, mount, bpf_stats=True):
    snap = os.path.join(tmp, "top.txt")
    argv = PFNTRACE + ["top", "--mount", mount, "--interval", "1"]
    if not bpf_stats:
        argv.append("--no-bpf-stats")
    with open(snap, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while True:   # attached once the first snapshot is printed
            with open(snap) as f:
                if "write faults" in f.read():
                    break
            if proc.poll() is not None:
                raise SystemExit("top exited: %s" % proc.stderr.read()[-2000:])
            if time.monotonic() > deadline:
                raise SystemExit("top did not attach in time")
            time.sleep(0.2)
        res = parse(subprocess.run(storm, capture_output=True, text=True, check=True).stdout)
        time.sleep(1.2)    # one more snapshot with the storm's total
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    with open(snap) as f:
        text = f.read()
    totals = re.findall(r"write faults \S+  total (\d+)", text)
    return res, {"top_total": int(totals[-1]) if totals else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mount", default=os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax"))
    ap.add_argument("--pages", type=int, default=384, help="file pages (keep < 512: PTEs)")
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="untraced,record,top",
                    help="comma list of untraced, record, top, top-nostats")
    args = ap.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        exe = compile_storm(tmp)
        target = os.path.join(args.mount, "storm.dat")
        storm = [exe, target, str(args.pages), str(args.rounds)]
        results = {m: [] for m in modes}
        for i in range(args.runs):
            for mode in modes:
                if mode == "untraced":
                    r = untraced(storm)
                elif mode == "record":
                    r = record(storm, tmp)
                elif mode == "top":
                    r = top(storm, tmp, args.mount)
                elif mode == "top-nostats":
                    r = top(storm, tmp, args.mount, bpf_stats=False)
                else:
                    raise SystemExit("unknown mode %s" % mode)
                results[mode].append(r)
                print("run %d %-12s %8.0f faults/s  writes alone %8.0f faults/s  %s"
                      % (i + 1, mode, r[0]["faults_per_s"], r[0]["write_faults_per_s"],
                         " ".join("%s=%s" % kv for kv in r[1].items())), flush=True)
        os.unlink(target)

    uname = os.uname()
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", args.mount],
                        capture_output=True, text=True).stdout.strip()
    print("\nkernel %s, %s on %s, %d pages x %d rounds = %d write-protect faults, "
          "median of %d" % (uname.release, fs or "?", args.mount, args.pages, args.rounds,
                            args.pages * args.rounds, args.runs))
    med = {m: (statistics.median(r[0]["faults_per_s"] for r in rs),
               statistics.median(r[0]["write_faults_per_s"] for r in rs))
           for m, rs in results.items()}
    base = med.get("untraced")
    for m, (whole, writes) in med.items():
        line = "%-12s %9.0f faults/s  writes alone %9.0f faults/s" % (m, whole, writes)
        if base and m != "untraced":
            line += "   slowdown %.3fx (writes alone %.3fx)" % (base[0] / whole, base[1] / writes)
        print(line)
    if "record" in results:
        lost = [r[1].get("lost") for r in results["record"]]
        events = [r[1].get("events") for r in results["record"]]
        print("record: lost events per run %s (events %s)" % (lost, events))
    if "top" in results:
        print("top: final total per run %s (expected %d each, plus warm-up faults)"
              % ([r[1].get("top_total") for r in results["top"]], args.pages * args.rounds))


if __name__ == "__main__":
    main()
