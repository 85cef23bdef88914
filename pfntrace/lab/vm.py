"""Boot one lab guest, run one command in it, and bring its exit code back.

The guest's three serial ports carry: ttyS0 the kernel console (kept in a
log, shown on failure), ttyS1 the command's stdout, ttyS2 its stderr.  QEMU
exits 0 whatever happens inside, so the guest writes the command's exit
status into the job folder, which is shared read-write over 9p.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from pfntrace.lab import initramfs, kernels
from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

STAGE2 = os.path.join(initramfs.GUEST_DIR, "stage2.sh")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAX_MOUNT = "/mnt/dax"
# Guest RAM below the memmap pmem region, which starts at 1 GiB.
_PMEM_START = 1 << 30
_DEFAULT_TIMEOUT = 900


@dataclass
class LabConfig:
    kernel: str = "6.12"
    fs: str = "ext4"
    pmem: str = "memmap"
    size_mb: int = 512
    results: str = "."
    timeout: float = _DEFAULT_TIMEOUT
    smp: int = 2
    env: dict = field(default_factory=dict)
    # Where the guest's kernel console goes.  Empty: into the job folder,
    # which goes away after the run; a guest that died leaves a copy in
    # CACHE/lab/failed/ and names it in the error.
    console_log: str = ""
    # Seconds the guest may go without progress (no file in the results
    # folder changed, no console output) before it counts as hung; 0: only
    # the timeout.  For commands that write to results as they go.
    stall: float = 0


@dataclass
class LabResult:
    exit_code: int
    release: str
    boot_s: float       # guest uptime when stage 2 started (kernel + stage 1)
    setup_s: float      # pmem + mkfs + mount + DAX check
    command_s: float
    total_s: float      # host wall clock, QEMU start to exit


MIN_SIZE_MB = 64
MAX_SIZE_MB = 64 * 1024


def _parse_size(text):
    """'512M' / '1G' / '768' (MiB) -> MiB."""
    text = text.strip().upper()
    scale = 1
    if text.endswith("G"):
        scale, text = 1024, text[:-1]
    elif text.endswith("M"):
        text = text[:-1]
    # ASCII digits only (str.isdigit() takes '²', which int() refuses), and
    # a size QEMU can be given: it is host memory.
    if not text or not text.isascii() or not text.isdigit() or int(text) * scale < MIN_SIZE_MB:
        raise LabError("--size wants a size of at least 64M, like 512M or 1G")
    if int(text) * scale > MAX_SIZE_MB:
        raise LabError("--size wants at most %dG: the guest's pmem is host memory"
                       % (MAX_SIZE_MB // 1024))
    return int(text) * scale


def _qemu_argv(cfg, vmlinux, initrd, job, release):
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise LabError("qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)")
    # softlockup_panic: a CPU stuck in the kernel ends the guest within
    # seconds (panic=-1 and -no-reboot make a panic QEMU's exit) instead of
    # at the host's timeout.
    append = ["console=ttyS0", "panic=-1", "softlockup_panic=1", "quiet", "loglevel=3",
              "pft_stage2=" + STAGE2, "pft_job=" + job]
    machine = "pc"
    extra = []
    if cfg.pmem == "memmap":
        mem = "%dM" % (_PMEM_START // (1 << 20) + cfg.size_mb + 256)
        append.append("memmap=%dM!%dM" % (cfg.size_mb, _PMEM_START >> 20))
    else:
        machine = "pc,nvdimm=on"
        mem = "1G,slots=2,maxmem=%dM" % (1024 + cfg.size_mb + 1024)
        backing = os.path.join(lab_cache.CACHE, "lab", "nvdimm-%dM.img" % cfg.size_mb)
        # Fresh backing file per run: a stale namespace layout from an
        # interrupted run must not leak into this one.
        with open(backing, "wb") as f:
            f.truncate(cfg.size_mb << 20)
        extra += ["-object", "memory-backend-file,id=pmem0,share=on,mem-path=%s,size=%dM"
                  % (backing, cfg.size_mb),
                  "-device", "nvdimm,id=nvdimm0,memdev=pmem0"]
    argv = [
        qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        # thread=single: all vCPUs in one host thread.  With a thread per
        # vCPU, TCG lets a vCPU run code another vCPU has just rewritten
        # (the kernel's live patching of kprobes, static keys): guests died
        # of "Oops: int3" and spun forever on a removed kprobe's int3.
        "-machine", machine, "-accel", "tcg,thread=single", "-cpu", "max",
        "-smp", str(cfg.smp),
        "-m", mem, "-kernel", vmlinux, "-initrd", initrd, "-append", " ".join(append),
        "-serial", "file:" + _console_path(cfg, job),
        "-chardev", "file,id=out,path=" + os.path.join(job, "out.fifo"),
        "-serial", "chardev:out",
        "-chardev", "file,id=err,path=" + os.path.join(job, "err.fifo"),
        "-serial", "chardev:err",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", "local,path=%s,mount_tag=pftjob,security_model=none" % job,
        "-virtfs", "local,path=%s,mount_tag=pftresults,security_model=none" % cfg.results,
        # A PCI BAR of plain shared memory: mapped through sysfs it is a
        # VM_PFNMAP mapping with no ->pfn_mkwrite, the NO_NOTIFIER case.
        "-object", "memory-backend-ram,id=pftshm,size=1M",
        "-device", "ivshmem-plain,memdev=pftshm",
    ] + extra
    return argv


def guest_python():
    """The interpreter the guest runs pfntrace's Python with: this one."""
    return sys.executable


def _write_job(job, cfg, command, release, stdout_tty, stderr_tty, kroot=""):
    cols, rows = shutil.get_terminal_size((100, 40))
    env = {
        "PFT_FS": cfg.fs, "PFT_PMEM": cfg.pmem, "PFT_MOUNT": DAX_MOUNT,
        "PFT_RESULTS": cfg.results, "PFT_CWD": os.getcwd(), "PFT_ARGV0": command[0],
        # pfntrace's own Python in the guest (the DAX check) is the one the
        # host side runs with: the venv and its packages, at the same path.
        "PFT_PYTHON": guest_python(),
        "PFT_COLS": str(cols), "PFT_ROWS": str(rows),
        "PFT_STDOUT_TTY": "1" if stdout_tty else "0",
        "PFT_STDERR_TTY": "1" if stderr_tty else "0",
        # A kernel fetched into the cache (not installed): stage 2 puts its
        # modules and headers at /lib/modules/RELEASE and /usr/src.
        "PFT_KROOT": kroot, "PFT_RELEASE": release,
    }
    exported = {
        "HOME": "/root", "TERM": os.environ.get("TERM", "dumb"),
        # Bytecode is written (to the root's tmpfs overlay): each Python
        # process after the first then skips compiling pfntrace's ~60
        # modules, a second of every command under TCG.
        "PYTHONPATH": CHECKOUT,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PFNTRACE_IN_LAB": "1", "PFNTRACE_LAB_KERNEL": cfg.kernel,
        "PFNTRACE_LAB_RELEASE": release, "PFNTRACE_LAB_FS": cfg.fs,
        "PFNTRACE_LAB_PMEM": cfg.pmem, "PFNTRACE_DAX_MOUNT": DAX_MOUNT,
        "PFNTRACE_DAX_DEVICE": "/dev/pmem0",
        # The host's cache (prebuilt modules, fetched kernels), seen read-only.
        "PFNTRACE_CACHE": lab_cache.CACHE,
    }
    exported.update(cfg.env)
    with open(os.path.join(job, "job.env"), "w") as f:
        for k, v in env.items():
            f.write("%s=%s\n" % (k, shlex.quote(v)))
        for k, v in exported.items():
            f.write("export %s=%s\n" % (k, shlex.quote(str(v))))
    with open(os.path.join(job, "command.sh"), "w") as f:
        f.write("exec %s\n" % " ".join(shlex.quote(a) for a in command))


def _isatty(stream):
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _relay(path, sink):
    """Copy a FIFO QEMU writes the guest's serial output into, to sink."""
    with open(path, "rb", buffering=0) as src:
        while True:
            chunk = src.read(65536)
            if not chunk:
                return
            sink.write(chunk)
            sink.flush()


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _console_path(cfg, job):
    return cfg.console_log or os.path.join(job, "console.log")


def _strip_time(line):
    # "[   12.345678] text" -> "text"
    line = line.strip()
    if line.startswith("[") and "]" in line:
        line = line[line.index("]") + 1:].strip()
    return line


def console_reason(text):
    """One line saying why a guest died, from its console log."""
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    for l in lines:
        if "Kernel panic" in l:
            return l[l.index("Kernel panic"):]
    for l in reversed(lines):
        if l.startswith("pfntrace-lab:"):
            return l[len("pfntrace-lab:"):].strip()
    return _strip_time(lines[-1]) if lines else "no console output"


# First lines of a kernel's report of its own failure.
_OOPS_START = ("BUG:", "Oops:", "general protection fault", "WARNING:", "Kernel panic",
               "kernel BUG at", "watchdog:", "rcu: INFO:", "INFO: task", "Unable to handle")


def console_excerpt(text, limit=60):
    """The kernel's oops/panic reports from a console log (up to limit lines),
    or its last lines when there is none."""
    lines = (text or "").splitlines()
    out, take = [], 0
    for l in lines:
        body = _strip_time(l)
        if any(body.startswith(p) or p in body[:60] for p in _OOPS_START):
            take = 40
        if take:
            out.append(l.rstrip())
            take -= 1
        if len(out) >= limit:
            break
    return "\n".join(out or [l.rstrip() for l in lines[-15:]])


def _console_reason(cfg, job):
    return console_reason(_read(_console_path(cfg, job), ""))


class LabGuestLost(LabError):
    """The guest died or hung before the command finished.  console: path of
    its kernel console log (kept), reason: one line."""

    def __init__(self, message, console=None, reason=""):
        super().__init__(message)
        self.console = console
        self.reason = reason


def _keep_console(cfg, job):
    """Path of the console log that outlives this run."""
    if cfg.console_log:
        return cfg.console_log
    src = os.path.join(job, "console.log")
    keep = os.path.join(lab_cache.CACHE, "lab", "failed")
    try:
        os.makedirs(keep, exist_ok=True)
        old = sorted(os.listdir(keep))
        for name in old[:-19]:      # the last 20 failed boots
            os.unlink(os.path.join(keep, name))
        dst = os.path.join(keep, "%s-%s-console.log" % (time.strftime("%Y%m%d-%H%M%S"),
                                                        os.path.basename(job)))
        shutil.copyfile(src, dst)
        return dst
    except OSError:
        return None


def run(cfg, command, stdout=None, stderr=None, log=None):
    """Boot cfg.kernel, run command (argv list) inside; return a LabResult.

    Raises LabError (one line) when the guest could not run the command.
    """
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    if not command:
        raise LabError("no command given: pfntrace lab run [OPTIONS] -- COMMAND...")
    if cfg.fs not in ("ext4", "xfs"):
        raise LabError("unknown --fs %r (ext4 or xfs)" % cfg.fs)
    if cfg.pmem not in ("memmap", "nvdimm"):
        raise LabError("unknown --pmem %r (memmap or nvdimm)" % cfg.pmem)
    cfg.results = os.path.abspath(cfg.results)
    if not os.path.isdir(cfg.results):
        raise LabError("results folder %s does not exist" % cfg.results)
    if " " in STAGE2:
        raise LabError("the checkout path %s has a space: the kernel command line cannot "
                       "carry it" % CHECKOUT)
    kernel = kernels.resolve(cfg.kernel)
    vmlinux = kernels.vmlinux(kernel)
    initrd = initramfs.build(kernel.release, kernel.root)
    os.makedirs(os.path.join(lab_cache.CACHE, "runs"), exist_ok=True)
    job = tempfile.mkdtemp(prefix="job-", dir=os.path.join(lab_cache.CACHE, "runs"))
    try:
        return _boot(cfg, command, kernel, vmlinux, initrd, job, stdout, stderr, log)
    finally:
        if os.environ.get("PFNTRACE_LAB_KEEP") != "1":
            shutil.rmtree(job, ignore_errors=True)


def _boot(cfg, command, kernel, vmlinux, initrd, job, stdout, stderr, log):
    _write_job(job, cfg, command, kernel.release, _isatty(stdout), _isatty(stderr),
               kernel.root)
    for name in ("out.fifo", "err.fifo"):
        os.mkfifo(os.path.join(job, name))
    argv = _qemu_argv(cfg, vmlinux, initrd, job, kernel.release)
    relays = [threading.Thread(target=_relay, args=(os.path.join(job, n), s), daemon=True)
              for n, s in (("out.fifo", stdout), ("err.fifo", stderr))]
    for t in relays:
        t.start()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        qemu_out = _wait(proc, cfg, job, start)
    except _Stalled as e:
        _kill(proc)
        raise LabGuestLost(_hang_reason(cfg, job, e), console=_keep_console(cfg, job),
                           reason="hung (%s): %s" % (e, _console_reason(cfg, job)))
    except BaseException:
        _kill(proc)
        raise
    total = time.monotonic() - start
    _unblock(job)
    for t in relays:
        t.join(timeout=5)
    code = _read(os.path.join(job, "exit"))
    status = _read(os.path.join(job, "status"))
    if proc.returncode != 0:
        raise LabError("qemu failed (exit %d): %s" % (
            proc.returncode, (qemu_out or b"").decode(errors="replace").strip().splitlines()[-1:]))
    if code is None:
        console = _keep_console(cfg, job)
        reason = _console_reason(cfg, job)
        raise LabGuestLost("the %s guest stopped before the command finished: %s%s"
                           % (cfg.kernel, reason,
                              " (console log: %s)" % console if console else ""),
                           console=console, reason=reason)
    if status:
        if int(code) == 127:
            raise LabCommandNotFound(status)
        raise LabError(status)

    def t(name):
        v = _read(os.path.join(job, name))
        return float(v) if v else 0.0

    return LabResult(
        exit_code=int(code), release=kernel.release, boot_s=t("t_userspace"),
        setup_s=t("t_mounted") - t("t_userspace"), command_s=t("t_end") - t("t_mounted"),
        total_s=total,
    )


class _Stalled(Exception):
    def __init__(self, message, seconds):
        super().__init__(message)
        self.seconds = seconds


def _progress_mark(cfg, job):
    """Something that changes whenever the guest makes progress: the console
    log's size, and the newest mtime in the job folder (boot and set-up
    stages) and in the results folder (the command's own)."""
    try:
        console = os.path.getsize(_console_path(cfg, job))
    except OSError:
        console = 0
    return (console,) + tuple(_newest_mtime(d) for d in (job, cfg.results))


def _newest_mtime(folder):
    try:
        with os.scandir(folder) as it:
            return max((e.stat().st_mtime_ns for e in it if e.is_file()), default=0)
    except OSError:
        return 0


def _wait(proc, cfg, job, start):
    """QEMU's output once it exits; _Stalled at the timeout, or after
    cfg.stall seconds without progress."""
    if not cfg.stall:
        try:
            return proc.communicate(timeout=cfg.timeout)[0]
        except subprocess.TimeoutExpired:
            raise _Stalled("no exit within %d s" % cfg.timeout, cfg.timeout) from None
    mark, since = _progress_mark(cfg, job), time.monotonic()
    while True:
        try:
            return proc.communicate(timeout=min(5.0, cfg.stall))[0]
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - start >= cfg.timeout:
            raise _Stalled("no exit within %d s" % cfg.timeout, cfg.timeout)
        new = _progress_mark(cfg, job)
        if new != mark:
            mark, since = new, now
        elif now - since >= cfg.stall:
            raise _Stalled("no progress for %d s" % cfg.stall, now - start)


def _hang_reason(cfg, job, stalled):
    where = "%s guest" % cfg.kernel
    if os.path.exists(os.path.join(job, "t_mounted")):
        if stalled.seconds < cfg.timeout:
            return "the command made no progress for %d s in the %s; killed" % (
                cfg.stall, where)
        return "the command did not finish within %d s in the %s; killed" % (cfg.timeout, where)
    if os.path.exists(os.path.join(job, "t_userspace")):
        return "the %s hung setting up the DAX mount (%d s); console: %s" % (
            where, stalled.seconds, _console_reason(cfg, job))
    return "the %s did not reach userspace within %d s; console: %s" % (
        where, stalled.seconds, _console_reason(cfg, job))


def _unblock(job):
    # A relay still waiting in open() means QEMU never opened its end (it
    # failed early): open the writing side ourselves so the reader sees EOF.
    for name in ("out.fifo", "err.fifo"):
        try:
            os.close(os.open(os.path.join(job, name), os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


class LabCommandNotFound(LabError):
    exit_code = 127


def _die_with_parent():
    """In the child before exec: QEMU gets SIGKILL when this process dies,
    even by a signal that leaves no time to clean up (SIGTERM, SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill(proc):
    """End QEMU and anything it started: no stray guest may outlive a run."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
