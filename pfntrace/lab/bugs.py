"""Real pfn_mkwrite bugs on demand: build, load and unload the pftbug module.

pftbug (bugmod/pftbug.c) gives the mappings of ONE file on a DAX mount a
module-owned copy of the filesystem's vm_ops, unchanged (``control``) or with
a real bug class in ->pfn_mkwrite (see BUG_MODES).  The faults then really
take the buggy path, so the lab can check that pfntrace (and the stat
oracle, pfntrace.lab.oracle) sees the bug the tool exists for.

The module is built per kernel release into CACHE/bugmod/<release>/ (outside
the checkout) and reused while it is newer than its sources.  Building in a
TCG guest is slow, so the host prebuilds::

    python -m pfntrace.lab.bugs build [RELEASE...]   # default: the installed lab kernels

and the guest, which sees the host's root read-only, finds that .ko at the
same path (HOME is /root on both sides).  Without it the guest builds its
own into its tmpfs overlay.

In a guest (as root)::

    with bugs.loaded("/mnt/dax/f", "noop_pfn_mkwrite") as bug:
        result = oracle.run_in_child("generic-080", "/mnt/dax/f")
    bug.final["calls"]     # counters read just before rmmod

Unload only after the file's mappings are gone: the copy of vm_ops lives in
module memory (the module's exit puts the original back into any vma that
still has the copy, as a safety net, and unload() reports it as an error).
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from pfntrace.lab import kernels, oracle
from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

MODULE = "pftbug"
# pftbug under other names (bugmod/Kbuild): one traced run can hold several
# buggy files, each with its own module loaded until the tracer is done.
COPIES = tuple("%s_%d" % (MODULE, n) for n in range(1, 5))
MODULES = (MODULE,) + COPIES
SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bugmod")
SOURCES = ("pftbug.c", "Kbuild")

# control first: the healthy copy; then the bug classes.
BUG_MODES = ("control", "no_pfn_mkwrite", "noop_pfn_mkwrite", "stale_update")
BUGGY_MODES = BUG_MODES[1:]
# What the stat oracle must say under each mode.
EXPECTED_VERDICT = {mode: (oracle.MOVED if mode == "control" else oracle.STALE)
                    for mode in BUG_MODES}
# Modes whose replacement ->pfn_mkwrite is module code that counts its calls.
COUNTED_MODES = ("noop_pfn_mkwrite", "stale_update")

# Integer counters in /sys/module/<module>/parameters (see pftbug.c).
COUNTERS = ("swaps", "faults", "write_faults", "calls", "stamped", "foreign", "mapped",
            "missed")
STRINGS = ("path", "mode", "orig_pfn_mkwrite")


# --- paths and the up-to-date check (pure) -----------------------------------

def build_dir(release, cache=None):
    """Where the module for one kernel release is built: outside the checkout."""
    if not release or "/" in release or release.startswith("."):
        raise LabError("bad kernel release %r" % release)
    return os.path.join(cache or lab_cache.CACHE, "bugmod", release)


def ko_path(release, cache=None, module=MODULE):
    return os.path.join(build_dir(release, cache), module + ".ko")


def source_paths(source_dir=None):
    return [os.path.join(source_dir or SOURCE_DIR, name) for name in SOURCES]


def kbuild_dir(release):
    """The kernel's build folder: an installed kernel's, or the headers of a
    kernel fetched into the cache (pfntrace.lab.newest)."""
    root = kernels.fetched_root(release)
    if root:
        return os.path.join(root, "usr", "src", "linux-headers-" + release)
    return "/lib/modules/%s/build" % release


# gcc options a newer kernel's configuration (made with a newer gcc) asks
# for that this system's gcc spells differently: {option prefix: replacement}.
# -fmin-function-alignment is gcc 14's; the kernel's own Makefile uses
# -falign-functions with the same value when the compiler lacks it.
_GCC_COMPAT = {"-fmin-function-alignment=": "-falign-functions="}

_CC_COMPAT = """#!/bin/sh
# gcc for a kernel configured with a newer gcc: rewrite the options this
# gcc does not know (written by pfntrace.lab.bugs).
for a; do
	shift
	case "$a" in
%s	*) set -- "$@" "$a" ;;
	esac
done
exec gcc "$@"
"""


def _fetched_make_args(release, kdir, out):
    """make arguments for a kernel fetched into the cache, whose headers were
    made for another system: its Makefile names /usr/src paths (use the
    cache's), its CC is a gcc this system lacks (use gcc, through a wrapper
    that rewrites newer options), and module BTF wants a newer pahole (built
    without it: nothing here needs the module's BTF)."""
    common = None
    try:
        with open(os.path.join(kdir, "Makefile")) as f:
            for line in f:
                m = re.match(r"\s*include\s+(\S+)", line)
                if m:
                    common = m.group(1)
    except OSError:
        pass
    root = kernels.fetched_root(release)
    args = ["-C", kdir]
    if common and common.startswith("/"):
        args += ["-f", os.path.join(root, common.lstrip("/")), "KBUILD_OUTPUT=" + kdir]
    cc = os.path.join(out, "cc-compat")
    with open(cc, "w") as f:
        f.write(_CC_COMPAT % "".join('\t%s*) set -- "$@" "%s${a#%s}" ;;\n' % (old, new, old)
                                     for old, new in _GCC_COMPAT.items()))
    os.chmod(cc, 0o755)
    return args + ["CC=" + cc, "CONFIG_DEBUG_INFO_BTF_MODULES="]


def is_current(ko, sources):
    """True when ko exists and is newer than every source file."""
    try:
        built = os.stat(ko).st_mtime_ns
    except FileNotFoundError:
        return False
    return all(built > os.stat(s).st_mtime_ns for s in sources)


def headers_package(release):
    return "linux-headers-" + release


# --- building ----------------------------------------------------------------

def _check_toolchain(release):
    kdir = kbuild_dir(release)
    if not os.path.exists(os.path.join(kdir, "Makefile")):
        raise LabError("cannot build %s for %s: no kernel headers at %s (apt-get install -y %s)"
                       % (MODULE, release, kdir, headers_package(release)))
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise LabError("cannot build %s for %s: %s is not installed "
                           "(apt-get install -y gcc make)" % (MODULE, release, tool))


def _first_error(log):
    lines = [l.strip() for l in log.splitlines() if l.strip()]
    for pattern in (r"\berror\b", r"not found|No such file", r"\*\*\*"):
        for l in lines:
            if re.search(pattern, l):
                return l
    return lines[-1] if lines else "no output"


def _kos(release, cache):
    """The .ko of every module a build makes (pftbug and its copies)."""
    return [ko_path(release, cache, m) for m in MODULES]


def _all_current(kos, sources):
    return all(is_current(ko, sources) for ko in kos)


def build(release, cache=None, force=False):
    """Build pftbug.ko and its copies for a kernel release (unless builds
    newer than the sources are there); return pftbug.ko's path.  LabError,
    one line, on failure."""
    sources = source_paths()
    ko = ko_path(release, cache)
    kos = _kos(release, cache)
    if not force and _all_current(kos, sources):
        return ko
    _check_toolchain(release)
    out = build_dir(release, cache)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per folder at a time
        if not force and _all_current(kos, sources):
            return ko
        for src in sources:
            shutil.copyfile(src, os.path.join(out, os.path.basename(src)))
        for old in kos:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
        kdir = kbuild_dir(release)
        if kernels.fetched_root(release):
            argv = ["make"] + _fetched_make_args(release, kdir, out) + ["M=" + out, "modules"]
        else:
            argv = ["make", "-C", kdir, "M=" + out, "modules"]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", check=False)
        log = os.path.join(out, "build.log")
        with open(log, "w") as f:
            f.write(proc.stdout)
        if proc.returncode != 0 or not all(os.path.exists(k) for k in kos):
            raise LabError("building %s for %s failed: %s (log: %s)"
                           % (MODULE, release, _first_error(proc.stdout), log))
    return ko


def module_for(release=None, cache=None, module=MODULE):
    """The module's .ko for release (default: the running kernel): a
    prebuilt one when it is current (the host's, in a guest), else built
    here."""
    release = release or os.uname().release
    build(release, cache)
    return ko_path(release, cache, module)


def lab_releases():
    """Releases of the installed lab kernels (pfntrace.lab.kernels)."""
    found = []
    for alias in kernels.aliases():
        k = kernels.describe(alias)
        if k.release:
            found.append(k.release)
    return found


def prebuild(releases=None, cache=None):
    """Build for each release (default: the installed lab kernels) on the
    host, so guests reuse the .ko.  Returns {release: ko path or LabError}."""
    done = {}
    for release in releases or lab_releases():
        try:
            done[release] = build(release, cache)
        except LabError as e:
            done[release] = e
    return done


# --- loading -----------------------------------------------------------------

def sysfs(module=MODULE):
    return "/sys/module/" + module


def is_loaded(module=MODULE):
    return os.path.isdir(sysfs(module))


def loaded_modules():
    """pftbug and those of its copies that are loaded now."""
    return [m for m in MODULES if is_loaded(m)]


def _kernel_says(module):
    """The module's last line in the kernel log, for an error message."""
    proc = subprocess.run(["dmesg"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, errors="replace", check=False)
    lines = [l for l in proc.stdout.splitlines() if module + ": " in l]
    return re.sub(r"^\[[^]]*\]\s*", "", lines[-1]) if lines else ""


def load(path, mode, ko=None, module=MODULE):
    """insmod pftbug (or the copy named module) for one file (which must
    exist) in one mode."""
    if mode not in BUG_MODES:
        raise LabError("unknown bug mode %r (choose from %s)" % (mode, ", ".join(BUG_MODES)))
    if any(c.isspace() for c in path):
        raise LabError("pftbug path= cannot carry whitespace: %r" % path)
    if module not in MODULES:
        raise LabError("unknown module %r (choose from %s)" % (module, ", ".join(MODULES)))
    if is_loaded(module):
        raise LabError("%s is already loaded (rmmod %s)" % (module, module))
    ko = ko or module_for(module=module)
    proc = subprocess.run(["insmod", ko, "path=" + path, "mode=" + mode],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", check=False)
    if proc.returncode != 0:
        why = (_kernel_says(module) or proc.stdout.strip().splitlines()[-1:]
               or "no reason given")
        raise LabError("insmod %s path=%s mode=%s failed: %s" % (module, path, mode, why))


def counters(module=MODULE):
    """The module's counters and settings, from /sys/module/<module>/parameters."""
    if not is_loaded(module):
        raise LabError("%s is not loaded" % module)
    got = {}
    for name in COUNTERS + STRINGS:
        with open(os.path.join(sysfs(module), "parameters", name)) as f:
            value = f.read().strip()
        got[name] = int(value) if name in COUNTERS else value
    return got


# How long rmmod is retried while the module is in use.  Seen once on 7.3
# (test_top_and_report_count_the_same, "Module pftbug is in use"), not
# again in the runs after.  The likely holder: registering a kprobe on a
# module's text holds a reference to it until armed (kernel/kprobes.c,
# check_kprobe_address_safe()), and a `pfntrace record` probes the module's
# handler as soon as a fault shows it (a late handler), which under TCG can
# be the moment of the rmmod.  A probe that stays attached holds nothing
# (measured on 6.12 and 7.3: bcc kprobe and kretprobe on the module's
# ->pfn_mkwrite, refcnt 0, rmmod succeeds).
UNLOAD_BUSY_S = 20.0


def unload(module=MODULE):
    """rmmod pftbug (or the copy named module); returns the counters read
    just before.  LabError when
    the file was still mapped (the module gave the vmas their vm_ops back),
    or when the module stayed in use for UNLOAD_BUSY_S."""
    deadline = time.monotonic() + UNLOAD_BUSY_S
    while True:
        final = counters(module)
        proc = subprocess.run(["rmmod", module], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              check=False)
        if proc.returncode == 0:
            break
        if "in use" not in proc.stdout or time.monotonic() > deadline:
            raise LabError("rmmod %s failed: %s (refcnt %s)" % (
                module, proc.stdout.strip(), _refcnt(module)))
        time.sleep(0.2)
    if final["mapped"]:
        raise LabError("%s was unloaded while %s was still mapped (%d vma(s)): unmap first"
                       % (module, final["path"], final["mapped"]))
    return final


def _refcnt(module):
    try:
        with open(os.path.join(sysfs(module), "refcnt")) as f:
            return f.read().strip()
    except OSError:
        return "unreadable"


@dataclass
class Loaded:
    path: str
    mode: str
    final: dict = field(default_factory=dict)   # counters at unload

    def counters(self):
        return counters()


@contextlib.contextmanager
def loaded(path, mode, ko=None):
    """Load pftbug for path in mode; unload on exit (after the body has
    unmapped the file).  The Loaded object keeps the final counters."""
    load(path, mode, ko)
    state = Loaded(path, mode)
    try:
        yield state
    except BaseException:
        # Unload anyway, but let the body's error be the one reported.
        with contextlib.suppress(LabError):
            state.final = unload()
        raise
    state.final = unload()


# --- one workload under one mode: the hook for pfntrace's own checks ---------

@dataclass
class BugRun:
    mode: str
    workload: str
    path: str
    pages: int
    oracle: dict              # the stat oracle's result (pfntrace.lab.oracle)
    counters: dict            # the module's counters at unload
    wrapped: object = None    # CompletedProcess of the wrapper, when wrap was given

    @property
    def expected(self):
        return EXPECTED_VERDICT[self.mode]


def run_under(mode, workload, path, pages=None, wrap=None, ko=None, around=None):
    """Fill path, load pftbug on it in mode, run the oracle workload, unload.

    wrap: an argv prefix (e.g. ["pfntrace", "check", "--"]) to run the
    workload as `wrap + python -m pfntrace.lab.oracle ...`; its
    CompletedProcess comes back in BugRun.wrapped.  Without it the workload
    runs in a forked child.  around: a context manager entered around the
    workload only (e.g. a tracefs instance)."""
    pages = pages or oracle.default_pages(workload)
    oracle.fill(path, pages)   # pftbug resolves path at load: it must exist
    wrapped = None
    with loaded(path, mode, ko) as bug:
        with (around or contextlib.nullcontext()):
            if wrap:
                out = path + ".oracle.json"
                wrapped = subprocess.run(list(wrap) + oracle.command(workload, path, pages, out),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, errors="replace", check=False)
                try:
                    with open(out) as f:
                        result = json.load(f)
                except (OSError, ValueError):
                    raise LabError("the wrapped oracle left no result (exit %d): %s"
                                   % (wrapped.returncode, wrapped.stderr.strip()[-500:]))
            else:
                result = oracle.run_in_child(workload, path, pages)
    return BugRun(mode, workload, path, pages, result, bug.final, wrapped)


# --- command line ------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("build", "path"):
        sys.stderr.write("usage: python -m pfntrace.lab.bugs build [RELEASE...]\n"
                         "       python -m pfntrace.lab.bugs path RELEASE\n")
        return 2
    if argv[0] == "path":
        print(ko_path(argv[1] if len(argv) > 1 else os.uname().release))
        return 0
    releases = argv[1:] or lab_releases()
    if not releases:
        sys.stderr.write("no lab kernel installed: nothing to build\n")
        return 1
    status = 0
    for release, got in prebuild(releases).items():
        if isinstance(got, LabError):
            sys.stderr.write("%s\n" % got)
            status = 1
        else:
            print(got)
    return status


if __name__ == "__main__":
    sys.exit(main())
