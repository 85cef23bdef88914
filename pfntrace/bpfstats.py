"""What pfntrace's own BPF programs cost per run (`top`, `record --bpf-stats`).

While run-time statistics are on, the kernel counts each BPF program's runs
and the time spent in it, and shows both in the program fd's fdinfo
(run_time_ns, run_cnt).  They are turned on with the bpf(2) command
BPF_ENABLE_STATS, which holds them on for as long as the fd it returns is
open: two pfntrace commands at once never turn them off under each other,
and a killed one leaves nothing behind.  Where that command is not known here,
the sysctl kernel.bpf_stats_enabled is set, and put back at close().
"""

import ctypes
import os

SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# bpf(2) by architecture; BPF_ENABLE_STATS (5.8+) with BPF_STATS_RUN_TIME.
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


def _enable_stats_fd():
    """An fd that keeps run-time statistics on while open, or None."""
    nr = BPF_SYSCALL.get(os.uname().machine)
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)   # union bpf_attr: enable_stats.type first
    ctypes.c_uint32.from_buffer(attr).value = BPF_STATS_RUN_TIME
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_long(BPF_ENABLE_STATS), attr,
                      ctypes.c_long(ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


class BpfStats:
    """Run-time statistics on for one tracer's programs until close()."""

    def __init__(self, tracer):
        self.tracer = tracer
        self._fd = None
        self._sysctl_old = None
        self.enabled = self._enable()

    def _enable(self):
        self._fd = _enable_stats_fd()
        if self._fd is not None:
            return True
        try:
            with open(SYSCTL) as f:
                old = f.read().strip()
            if old != "1":
                with open(SYSCTL, "w") as f:
                    f.write("1")
                self._sysctl_old = old
            return True
        except OSError:
            return False

    def run_times(self):
        """{program: (run_time_ns, run_cnt)} (fdinfo_run_times)."""
        return fdinfo_run_times(self.tracer.programs()) if self.enabled else {}

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._sysctl_old is not None:
            try:
                with open(SYSCTL, "w") as f:
                    f.write(self._sysctl_old)
            except OSError:
                pass
            self._sysctl_old = None
        self.enabled = False


def _fdinfo_numbers(programs, keys, proc):
    """{name: {key: int}} of the fdinfo fields `keys` of BPF programs
    ({name: fd}) that have any of them; unreadable ones are left out."""
    out = {}
    for name, fd in programs.items():
        found = {}
        try:
            with open(os.path.join(proc, str(fd))) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in keys:
                        found[key] = int(value)
        except (OSError, ValueError):
            continue
        if found:
            out[name] = found
    return out


def fdinfo_skipped(programs, proc="/proc/self/fdinfo"):
    """{name: runs the kernel skipped} of BPF programs ({name: fd}): their
    fdinfo's recursion_misses, counted whether or not statistics are on (a
    trampoline program's run while another task's run of it is preempted
    on the same CPU, pfntrace/kernel/preempt.py; a kprobe program's while
    another BPF program runs on the CPU).  Programs whose kernel does not
    say are left out."""
    return {name: f["recursion_misses"] for name, f in
            _fdinfo_numbers(programs, ("recursion_misses",), proc).items()}


def fdinfo_run_times(programs, proc="/proc/self/fdinfo"):
    """{name: (run_time_ns, run_cnt)} of BPF programs ({name: fd}), from
    their fdinfo; {} when the kernel does not count (statistics off)."""
    return {name: (f["run_time_ns"], f.get("run_cnt", 0)) for name, f in
            _fdinfo_numbers(programs, ("run_time_ns", "run_cnt"), proc).items()
            if "run_time_ns" in f}


def probe_costs(progs):
    """[(program, runs, ns per run)] of the programs that ran, the costliest
    (in total) first: where the BPF side's time goes."""
    ran = [(name, cnt, ns / cnt) for name, (ns, cnt) in progs.items() if cnt]
    return sorted(ran, key=lambda r: -r[1] * r[2])


def probe_cost_line(progs):
    """One line: what each BPF program cost per run, costliest first, or
    None if none ran."""
    costs = probe_costs(progs)
    if not costs:
        return None
    return "pfntrace: BPF run time per probe run: " + ", ".join(
        "%s %.1f µs x %d" % (name, ns / 1000, runs) for name, runs, ns in costs)
