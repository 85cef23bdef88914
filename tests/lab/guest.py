"""Helpers for lab test bodies (they run inside the guest)."""

import contextlib
import functools
import json
import os
import socket
import signal
import subprocess
import sys
import time

import pytest

IN_GUEST = os.environ.get("PFNTRACE_IN_LAB") == "1"
FS = os.environ.get("PFNTRACE_LAB_FS", "")
KERNEL = os.environ.get("PFNTRACE_LAB_KERNEL", "")
MOUNT = os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax")
PFNTRACE = [sys.executable, "-m", "pfntrace"]
WORKLOAD = [sys.executable, "-m", "pfntrace.lab.workloads"]
# The handler each filesystem's DAX vm_ops name as ->pfn_mkwrite
# (fs/ext4/file.c ext4_dax_vm_ops, fs/xfs/xfs_file.c xfs_file_vm_ops).
PFN_MKWRITE_HANDLER = {"ext4": "ext4_dax_fault", "xfs": "xfs_filemap_pfn_mkwrite"}
# How pfntrace attaches its hooks (--attach, or PFNTRACE_ATTACH for every
# pfntrace command a test runs): the default, and the full kprobe plan that
# kernels without BPF trampolines get.  Key tests run under both and must
# count exactly the same.
ATTACH_MODES = ("auto", "kprobe")


def attach_env(mode):
    """The environment for pfntrace commands that attach with `mode`."""
    return dict(os.environ, PFNTRACE_ATTACH=mode)


def mechanisms(plan):
    """{(hook, kind): mechanism} of the function hooks a plan attached."""
    return {(h["hook"], h["kind"]): h.get("mechanism") for h in plan["hooks"]
            if h["status"] == "attach" and h["kind"] != "tracepoint"}


def auto_is_the_kprobe_plan():
    """True where --attach auto gives the very kprobe plan (a preempting
    kernel): there a test's kprobe case repeats its auto case, probe for
    probe, and is skipped saying so."""
    from pfntrace.commands.common import build_plan

    return mechanisms(build_plan("auto")) == mechanisms(build_plan("kprobe"))


SAME_PLAN = "--attach auto is the kprobe plan on this kernel (it preempts): the auto case " \
    "ran these very probes"


# Debian's lab kernels that preempt kernel code, where a BPF trampoline
# program can be skipped (pfntrace/kernel/preempt.py): 7.x boots with
# preempt=lazy (its scheduler's debugfs says "full (lazy)"); 6.1 and 6.12
# with voluntary.
PREEMPTING_KERNELS = ("newest",)


def check_mechanisms(plan, mode):
    """A plan made under --attach mode says so, hook by hook: kprobe gives
    the kprobe plan; auto puts do_wp_page on trampolines wherever the
    kernel has them and does not preempt, and the (module) handlers too:
    Debian's kernels have module BTF, and pfntrace loads those trampolines
    itself.  On a preempting kernel auto is the kprobe plan, and says why."""
    assert plan["attach"] == mode
    mech = mechanisms(plan)
    assert mech and all(mech.values()), mech
    handlers = {k: m for k, m in mech.items() if k[0] == PFN_MKWRITE_HANDLER.get(FS)}
    assert len(handlers) == 2, handlers
    preempts = KERNEL in PREEMPTING_KERNELS
    assert plan["preemption"]["preemptible"] is preempts, plan["preemption"]
    # Where pages are unmapped (write-exposure windows) is a kprobe under
    # every mode: its program must not be preempted (probeplan.py).
    from pfntrace.probeplan import UNMAP_HOOKS

    unmap = [h for h in plan["hooks"] if h["hook"] in UNMAP_HOOKS]
    assert [h["mechanism"] for h in unmap] == ["kprobe"], unmap
    if mode == "auto" and preempts:
        whys = {h["attach_why"] for h in plan["hooks"]
                if h.get("mechanism") and h["hook"] not in UNMAP_HOOKS}
        assert all(w.startswith("the kernel preempts (") for w in whys), whys
    if mode == "kprobe" or not plan["fentry"]["ok"] or preempts:
        assert all(m == kind for (_h, kind), m in mech.items()), mech
    else:
        assert mech[("do_wp_page", "kprobe")] == "fentry", mech
        assert mech[("do_wp_page", "kretprobe")] == "fexit", mech
        assert sorted(handlers.values()) == ["fentry", "fexit"], handlers


def guest_fixture(scope="function", params=None):
    """A fixture whose body runs only in the guest: on the host, where the
    lab plugin only relays the guest's outcomes, it yields None (params
    still make the same test ids on both sides)."""
    def wrap(fn):
        @pytest.fixture(scope=scope, params=params)
        @functools.wraps(fn)
        def fixture(*args, **kwargs):
            if not IN_GUEST:
                return None
            return fn(*args, **kwargs)
        return fixture
    return wrap


def wait_for(what, fn, timeout, every=0.25, proc=None):
    """fn()'s first true value, asked every `every` seconds; the test fails
    after `timeout` seconds, or as soon as proc (a Popen with stderr piped,
    the process that should bring it about) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail("exited (%s) before %s: %s"
                        % (proc.returncode, what, proc.stderr.read()[-3000:]))
        if time.monotonic() > deadline:
            pytest.fail("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(every)


def run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run(argv, **kw)


@contextlib.contextmanager
def top_beside_record(rec_path, attach="auto"):
    """top's in-kernel counters and a `pfntrace record --mount` of the DAX
    mount, both running, both attached with `attach`: yields (top's Reader,
    the mount's kernel dev); on exit the recording at rec_path is complete
    and top's probes are gone."""
    from pfntrace import tracer
    from pfntrace.aggregate import Reader
    from pfntrace.commands.common import build_plan

    st = os.stat(MOUNT)
    dev = tracer.kernel_dev(os.major(st.st_dev), os.minor(st.st_dev))
    # top's own plan (build_plan(counting=True)): what `pfntrace top` attaches.
    top = tracer.Tracer(build_plan(attach, counting=True), devs=[dev], aggregate=True)
    top.start()
    recorder = subprocess.Popen(PFNTRACE + ["record", "--mount", MOUNT, "-o", rec_path],
                                stderr=subprocess.PIPE, text=True, env=attach_env(attach))
    try:
        line = recorder.stderr.readline()
        assert "recording" in line, line + recorder.stderr.read()
        yield Reader(top, interval_ns=10**9, bpf_stats=False), dev
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        top.close()


def figures(test, **data):
    """Keep what a test measured for the notes: one JSON line per test in
    the results folder the host reads (PFNTRACE_LAB_OUT), and on stdout."""
    line = json.dumps(dict(test=test, lab=KERNEL + "/" + FS, **data))
    print(line)
    out = os.environ.get("PFNTRACE_LAB_OUT")
    if out:
        with open(os.path.join(out, "figures.jsonl"), "a") as f:
            f.write(line + "\n")


def loopback_up():
    """The lab guest brings its loopback up at boot (stage2.sh): a server
    in the guest is reachable at 127.0.0.1."""
    assert can_bind(), "the guest's loopback is down: stage2.sh brings it up"


def can_bind():
    try:
        with socket.create_server(("127.0.0.1", 0)) as s:
            with socket.create_connection(s.getsockname(), timeout=2):
                return True
    except OSError:
        return False
