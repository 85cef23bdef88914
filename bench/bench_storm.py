"""Write-protect fault storm: pfntrace's modes against untraced and the floor.

Run inside the lab (root, a DAX mount at /mnt/dax):

    pfntrace lab run --kernel 6.12 --fs ext4 -- .venv/bin/python bench/bench_storm.py \
        [--pages 384] [--rounds 100] [--runs 3] [--modes untraced,minimal,floor,top,record]

Compiles bench/storm.c with gcc into a temporary folder, then alternates
runs of every mode (--runs times each) in this one boot, so drift hits every
mode alike, and prints medians of the write passes alone (the faults without
the msync writeback cost) as ratios against `untraced` and against `floor`.

Modes:
  untraced        the storm alone
  minimal         one kprobe on do_wp_page, counting (the cheapest useful hook)
  floor           pfntrace's own function hooks (the plan's, attached the way
                  `--attach auto` attaches them) with empty programs that only count
  floor-kprobe    the same hooks, all kprobes/kretprobes (`--attach kprobe`)
  floor-top, floor-top-kprobe   the same for top's hooks (it leaves some out):
                  top's modes are compared with these when they are run
  top, record     `pfntrace top` / `pfntrace record` as a user runs them
                  (default attach, no BPF run-time statistics)
  top-kprobe, record-kprobe   the same with `--attach kprobe`
  top-stats, record-stats     with `--bpf-stats`: each BPF program's own run
                  time per run (the statistics cost two clock reads a run)
  record-every    record --every-event: each retried do_wp_page attempt and
                  fs_dax tracepoint an event, as before they were counted in
                  the kernel
  top-quiet       top refreshing once a minute: its user-space side idle while
                  the storm runs (attaching takes a minute longer)

Figures only; nothing is asserted.
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
sys.path.insert(0, REPO)  # this checkout's pfntrace, whichever is installed
PFNTRACE = [sys.executable, "-m", "pfntrace"]
LINE = re.compile(r"(\w+)=([0-9.]+)")
LOST = re.compile(r"pfntrace: (\d+) events, (\d+) lost")
PROBE_COSTS = re.compile(r"pfntrace: BPF run time per probe run: (.*)")
ATTACH_TIMEOUT = 180

# Empty programs: each only counts its runs in a per-CPU slot, so the floor
# is the cost of the hooks themselves (a kprobe's int3 or a trampoline),
# not of what pfntrace does in them.
COUNT_SRC = r"""
BPF_PERCPU_ARRAY(runs, u64, 1);
static __always_inline int count(void)
{
	u32 zero = 0;
	u64 *n = runs.lookup(&zero);
	if (n)
		*n += 1;
	return 0;
}
int count_kprobe(struct pt_regs *ctx) { return count(); }
int count_tracing(u64 *ctx) { return count(); }
"""
# bcc 0.26 names fentry/fexit programs after the function and attaches
# them when it loads the source.
FENTRY_SRC = "KFUNC_PROBE(%s) { return count(); }\n"
FEXIT_SRC = "KRETFUNC_PROBE(%s) { return count(); }\n"


def compile_storm(tmp):
    from pfntrace.lab.workloads import build_storm

    return build_storm(tmp)


def parse(out):
    m = dict(LINE.findall(out))
    if "faults" not in m:
        raise SystemExit("storm printed no figures:\n" + out)
    return {k: float(v) for k, v in m.items()}


def run_storm(storm):
    return parse(subprocess.run(storm, capture_output=True, text=True, check=True).stdout)


def untraced(storm):
    return run_storm(storm), {}


class Hooks:
    """Counting programs on a list of (function, mechanism) hooks, and on
    the handlers the plan puts on trampolines pfntrace loads itself
    ((function, mechanism, {"module", "btf_id"}): probeplan.trampoline_handlers)."""

    def __init__(self, hooks, trampolines=()):
        from bcc import BPF

        from pfntrace.kernel.trampoline import Trampolines

        src = COUNT_SRC
        kprobes = []
        for name, mech in hooks:
            if mech == "fentry":
                src += FENTRY_SRC % name
            elif mech == "fexit":
                src += FEXIT_SRC % name
            else:
                kprobes.append((name, mech))
        self.bpf = BPF(text=src.encode(), cflags=["-w"])
        self.trampolines = Trampolines()
        for name, mech, where in trampolines:
            self.trampolines.attach(self.bpf.dump_func(b"count_tracing"), "count_tracing", mech,
                                    name, where["btf_id"], where["module"])
        for name, mech in kprobes:
            if mech == "kprobe":
                self.bpf.attach_kprobe(event=name.encode(), fn_name=b"count_kprobe")
            else:
                self.bpf.attach_kretprobe(event=name.encode(), fn_name=b"count_kprobe",
                                          maxactive=64)
        self.hooks = hooks

    def runs(self):
        return sum(int(v) for v in self.bpf["runs"][0])

    def close(self):
        self.trampolines.close()
        self.bpf.cleanup()


def plan_hooks(attach, counting=False):
    """The function hooks pfntrace would attach here (top's with counting)
    as (function, mechanism): those bcc attaches, and apart from them the
    handlers on trampolines pfntrace loads itself (trampoline_handlers)."""
    from pfntrace.commands.common import build_plan
    from pfntrace.probeplan import apply_attach, trampoline_handlers

    plan = build_plan(counting=counting)
    try:
        apply_attach(plan, attach)
    except ValueError as e:
        raise SystemExit("floor: %s" % e)
    trampolines = trampoline_handlers(plan)
    on_trampolines = {(name, mech) for name, mech, _ in trampolines}
    hooks = [(h["hook"], h.get("mechanism") or h["kind"]) for h in plan["hooks"]
             if h["status"] == "attach" and h["kind"] != "tracepoint"]
    return [hk for hk in hooks if hk not in on_trampolines], trampolines


def hooked(storm, hooks, trampolines=()):
    h = Hooks(hooks, trampolines)
    try:
        res = run_storm(storm)
        runs = h.runs()
    finally:
        h.close()
    return res, {"programs_run": runs}


def record(storm, tmp, attach=None, every_event=False, bpf_stats=False):
    out = os.path.join(tmp, "storm.pft")
    argv = PFNTRACE + ["record", "-o", out] + (["--bpf-stats"] if bpf_stats else []) + \
        (["--attach", attach] if attach else []) + (["--every-event"] if every_event else [])
    p = subprocess.run(argv + ["--"] + storm, capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit("record failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    m = LOST.search(p.stderr)
    extra = {"events": int(m.group(1)), "lost": int(m.group(2))} if m else {}
    costs = PROBE_COSTS.search(p.stderr)
    if costs:
        extra["probes"] = costs.group(1)
    from pfntrace.recording import Recording

    with Recording.open(out) as rec:   # in every recording's trailer, --bpf-stats or not
        extra["recorder_cpu_s"] = rec.trailer["recorder_cpu_ns"] / 1e9
    os.unlink(out)
    return parse(p.stdout), extra


def top(storm, tmp, mount, bpf_stats=False, attach=None, interval=1):
    snap = os.path.join(tmp, "top.txt")
    argv = PFNTRACE + ["top", "--mount", mount, "--interval", str(interval)]
    if attach:
        argv += ["--attach", attach]
    if bpf_stats:
        argv.append("--bpf-stats")
    with open(snap, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + ATTACH_TIMEOUT + interval
        while True:   # attached once the first snapshot is printed
            with open(snap) as f:
                if "write faults" in f.read():
                    break
            if proc.poll() is not None:
                raise SystemExit("top exited: %s" % proc.stderr.read()[-2000:])
            if time.monotonic() > deadline:
                raise SystemExit("top did not attach in time")
            time.sleep(0.2)
        res = run_storm(storm)
        time.sleep(1.2)    # one more snapshot with the storm's total
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    with open(snap) as f:
        text = f.read()
    totals = re.findall(r"write faults \S+  total (\d+)", text)
    lost = re.findall(r"  lost (\d+)", text)
    extra = {"top_total": int(totals[-1]) if totals else None,
             "lost": int(lost[-1]) if lost else None}
    costs = PROBE_COSTS.search(proc.stderr.read())
    if costs:       # top's last line with --bpf-stats: per program, costliest first
        extra["probes"] = costs.group(1)
    return res, extra


def runner(mode, storm, tmp, mount):
    if mode == "untraced":
        return lambda: untraced(storm)
    if mode == "minimal":
        return lambda: hooked(storm, [("do_wp_page", "kprobe")])
    if mode in ("floor", "floor-kprobe", "floor-top", "floor-top-kprobe"):
        hooks, trampolines = plan_hooks("kprobe" if mode.endswith("-kprobe") else "auto",
                                        counting=mode.startswith("floor-top"))
        print("%s hooks: %s" % (mode, ", ".join(
            ["%s %s" % (m, n) for n, m in hooks]
            + ["%s %s (trampoline)" % (m, n) for n, m, _ in trampolines])), flush=True)
        return lambda: hooked(storm, hooks, trampolines)
    if mode in ("record", "record-kprobe"):
        return lambda: record(storm, tmp, "kprobe" if mode.endswith("-kprobe") else None)
    if mode == "record-stats":
        return lambda: record(storm, tmp, bpf_stats=True)
    if mode == "record-every":
        return lambda: record(storm, tmp, every_event=True)
    if mode in ("top", "top-kprobe"):
        return lambda: top(storm, tmp, mount,
                           attach="kprobe" if mode.endswith("-kprobe") else None)
    if mode == "top-stats":
        return lambda: top(storm, tmp, mount, bpf_stats=True)
    if mode == "top-quiet":
        return lambda: top(storm, tmp, mount, interval=60)
    raise SystemExit("unknown mode %s" % mode)


def floor_of(mode, measured):
    """The floor a mode is compared with: its own hook set's where measured."""
    suffix = "-kprobe" if mode.endswith("-kprobe") else ""
    if mode.startswith("top") and "floor-top" + suffix in measured:
        return "floor-top" + suffix
    return "floor" + suffix


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mount", default=os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax"))
    ap.add_argument("--pages", type=int, default=384, help="file pages (keep < 512: PTEs)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="untraced,minimal,floor,top,record",
                    help="comma list (see the docstring)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        exe = compile_storm(tmp)
        target = os.path.join(args.mount, "storm.dat")
        storm = [exe, target, str(args.pages), str(args.rounds)]
        runners = {m: runner(m, storm, tmp, args.mount) for m in modes}
        results = {m: [] for m in modes}
        for i in range(args.runs):
            for mode in modes:
                r = runners[mode]()
                results[mode].append(r)
                print("run %d %-14s %8.0f faults/s  writes alone %8.0f faults/s  %s"
                      % (i + 1, mode, r[0]["faults_per_s"], r[0]["write_faults_per_s"],
                         " ".join("%s=%s" % kv for kv in r[1].items())), flush=True)
        os.unlink(target)

    uname = os.uname()
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", args.mount],
                        capture_output=True, text=True).stdout.strip()
    print("\nkernel %s, %s on %s, %d pages x %d rounds = %d write-protect faults, "
          "median of %d, write passes only" % (uname.release, fs or "?", args.mount, args.pages,
                                               args.rounds, args.pages * args.rounds, args.runs))
    med = {m: statistics.median(r[0]["write_faults_per_s"] for r in rs)
           for m, rs in results.items()}
    base = med.get("untraced")
    print("| mode | faults/s | vs untraced | vs floor | added per fault | added / floor's added "
          "| lost |")
    print("|---|---|---|---|---|---|---|")
    for m, rate in med.items():
        floor = med.get(floor_of(m, med))
        vs_base = "%.2fx" % (base / rate) if base else "-"
        added = "%.1f µs" % ((1 / rate - 1 / base) * 1e6) if base and m != "untraced" else "-"
        vs_floor = added_vs_floor = "-"
        if floor and m not in ("untraced", "minimal") and not m.startswith("floor"):
            vs_floor = "%.2fx" % (floor / rate)
            fl_added = 1 / floor - 1 / base if base else 0
            if fl_added > 0:
                added_vs_floor = "%.2fx" % ((1 / rate - 1 / base) / fl_added)
        lost = [r[1].get("lost") for r in results[m] if "lost" in r[1]]
        print("| %s | %.0f | %s | %s | %s | %s | %s |"
              % (m, rate, vs_base, vs_floor, added, added_vs_floor, lost if lost else "-"))
    for m, rs in results.items():
        probes = [r[1]["probes"] for r in rs if "probes" in r[1]]
        if probes:  # the last run's: the programs' own time, hooks not included
            print("%s, BPF run time per probe run (last run): %s" % (m, probes[-1]))
        cpu = [r[1]["recorder_cpu_s"] for r in rs if "recorder_cpu_s" in r[1]]
        if cpu:     # the recorder's own CPU time: draining, writing, naming
            print("%s, recorder CPU time (median): %.2f s, %.1f µs per write-protect fault"
                  % (m, statistics.median(cpu),
                     statistics.median(cpu) * 1e6 / (args.pages * args.rounds)))
    print("floor: floor-kprobe for the -kprobe modes; floor-top(-kprobe) for top's when run")


if __name__ == "__main__":
    main()
