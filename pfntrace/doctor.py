"""`pfntrace doctor`: can pfntrace record here, and if not, what to do.

Every check yields one Check; a failed check carries one line saying what is
wrong and how to fix it.  The blocking checks are the ones `pfntrace record`
cannot do without; record_blocker() runs only those.
"""

import os
import platform
from dataclasses import asdict, dataclass

import cffi

from pfntrace.kernel import kconfig as kconfig_mod
from pfntrace.kernel import preempt
from pfntrace.kernel import tracefs as tracefs_mod
from pfntrace.kernel.btf import Btf, BtfError
from pfntrace.kernel.kallsyms import Kallsyms, KallsymsError
from pfntrace.kernel.offsets import OffsetError, bpf_defines
from pfntrace.kernel.statx import statx
from pfntrace.probeplan import KPROBE_PMU, build_plan, kprobe_support

BTF_PATH = "/sys/kernel/btf/vmlinux"
MODULES_DIR = "/lib/modules"

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39

# bpf(2) is called directly: the point is to learn whether the kernel lets
# us, before bcc (which needs headers we may not have) is involved at all.
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE, _BPF_MAP_TYPE_ARRAY, _BPF_ATTR_SIZE = 0, 2, 128

DAX_FSTYPES = frozenset(("ext4", "ext2", "xfs", "fuse", "virtiofs"))
DAX_OPTIONS = frozenset(("dax", "dax=always", "dax=inode"))

LAB_HINT = "run inside `pfntrace lab`"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = False

    def as_dict(self):
        return asdict(self)


# -- privileges -------------------------------------------------------------

def capabilities(status_text):
    """The effective capability mask from /proc/<pid>/status text."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapEff line in the process status")


def check_privileges(status_text, euid):
    caps = capabilities(status_text)

    def has(cap):
        return bool(caps >> cap & 1)

    detail = "euid %d, CAP_BPF %s, CAP_PERFMON %s, CAP_SYS_ADMIN %s" % (
        euid, *("yes" if has(c) else "no" for c in (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)))
    # Mounting tracefs and kprobes through bcc need root in practice; the
    # capabilities alone only cover loading and attaching.
    ok = euid == 0
    return Check("privileges", ok, detail,
                 "" if ok else "pfntrace record needs root: run it with sudo", True)


# -- bpf(2) -----------------------------------------------------------------

_ffi = cffi.FFI()
_ffi.cdef("long syscall(long number, ...); int close(int fd);")
_libc = _ffi.dlopen(None)


def check_bpf_syscall(machine=None):
    machine = machine or platform.machine()
    number = _BPF_SYSCALL.get(machine)
    if number is None:
        return Check("bpf syscall", False, "unknown bpf(2) number on %s" % machine,
                     "pfntrace supports x86_64 and aarch64 only", True)
    attr = _ffi.new("uint32_t[]", _BPF_ATTR_SIZE // 4)
    attr[0:4] = [_BPF_MAP_TYPE_ARRAY, 4, 4, 1]  # map_type, key, value size, max_entries
    fd = _libc.syscall(_ffi.cast("long", number), _ffi.cast("long", _BPF_MAP_CREATE),
                       attr, _ffi.cast("long", _BPF_ATTR_SIZE))
    if fd < 0:
        err = os.strerror(_ffi.errno)
        return Check("bpf syscall", False, "BPF_MAP_CREATE failed: %s" % err,
                     "the bpf() syscall is refused (%s): run as root, and check "
                     "kernel.unprivileged_bpf_disabled and any seccomp filter" % err, True)
    _libc.close(fd)
    return Check("bpf syscall", True, "BPF_MAP_CREATE of an array map works", "", True)


# -- kernel features --------------------------------------------------------

def load_config():
    try:
        return kconfig_mod.load()
    except kconfig_mod.KconfigError:
        return None


def check_kernel(release, config):
    if config is None:
        return Check("kernel", False, "%s, no config found" % release,
                     "no /proc/config.gz, /boot/config-%s or /lib/modules/%s/config: kprobe "
                     "support is judged by sysfs alone" % (release, release))
    return Check("kernel", True, "%s, config from %s" % (release, config.source))


def check_kprobes(config, pmu_dir=KPROBE_PMU):
    ok, why = kprobe_support(config, pmu_dir)
    fix = "" if ok else ("kprobes are not available on this kernel (%s): %s, or on a "
                         "kernel with kprobes" % (why, LAB_HINT))
    return Check("kprobes", ok, why, fix, True)


FENTRY_OPTIONAL = "optional: without it, --attach auto uses kprobes"


def check_fentry(config):
    # Optional: fentry/fexit are the cheaper hooks (--attach auto), and
    # without them pfntrace attaches the kprobe plan.
    if config is None:
        return Check("fentry", False, "unknown (no kernel config)", FENTRY_OPTIONAL)
    tracer = config.enabled("CONFIG_FUNCTION_TRACER")
    btf = config.enabled("CONFIG_DEBUG_INFO_BTF")
    detail = "CONFIG_FUNCTION_TRACER %s, CONFIG_DEBUG_INFO_BTF %s" % (
        "y" if tracer else "not set", "y" if btf else "not set")
    return Check("fentry", tracer and btf, detail,
                 "" if tracer and btf else FENTRY_OPTIONAL)


def check_btf(path=BTF_PATH):
    try:
        btf = Btf.load(path)
        defines = bpf_defines(btf)
    except (BtfError, OffsetError) as e:
        return Check("BTF", False, str(e),
                     "pfntrace takes struct offsets from the kernel's BTF: use a kernel "
                     "built with CONFIG_DEBUG_INFO_BTF=y, or %s" % LAB_HINT, True)
    return Check("BTF", True, "%s: %d types, vm_area_struct.vm_file at %d"
                 % (path, btf.type_count, defines["VMA_VM_FILE"]), "", True)


def check_headers(release, modules_dir=MODULES_DIR):
    include = os.path.join(modules_dir, release, "build", "include")
    if os.path.isdir(include):
        return Check("kernel headers", True, include, "", True)
    return Check("kernel headers", False, "no %s" % include,
                 "bcc needs the kernel headers (%s is missing): install linux-headers-%s, "
                 "or %s" % (include, release, LAB_HINT), True)


def check_bcc(importer=__import__):
    try:
        bcc = importer("bcc")
    except ImportError as e:
        return Check("bcc", False, "import bcc: %s" % e,
                     "bcc is not importable: install Debian's python3-bpfcc and run "
                     "pfntrace with /usr/bin/python3", True)
    where = getattr(bcc, "__file__", "?")
    if not hasattr(bcc, "BPF"):
        # PyPI's "bcc" is an unrelated project with the same import name.
        return Check("bcc", False, "%s has no bcc.BPF" % where,
                     "the 'bcc' at %s is PyPI's unrelated package shadowing Debian's "
                     "python3-bpfcc: pip uninstall bcc" % where, True)
    return Check("bcc", True, where, "", True)


def check_tracefs():
    try:
        found = tracefs_mod.ensure_mounted()
    except (tracefs_mod.TracefsError, OSError) as e:
        return Check("tracefs", False, str(e),
                     "tracefs is not mounted: mount -t tracefs nodev %s" % tracefs_mod.TRACING,
                     True), None
    return Check("tracefs", True, found.root, "", True), found


def check_ftrace_functions(tracefs):
    # Informational: bcc cross-checks kprobe targets against this list when
    # it can read it; our 6.18 machines answer EPERM.
    if tracefs is None:
        return Check("ftrace functions", False, "tracefs is not mounted", "")
    try:
        count = len(tracefs.available_functions())
    except OSError as e:
        return Check("ftrace functions", False,
                     "available_filter_functions unreadable: %s" % e.strerror,
                     "not needed: kprobe targets are checked against /proc/kallsyms")
    return Check("ftrace functions", True, "%d traceable functions" % count)


# -- probe plan -------------------------------------------------------------

def hook_checks(plan):
    """One check per probed function (its kprobe and kretprobe together) and
    per tracepoint; without kprobes, one check for all functions."""
    function_hooks = [h for h in plan["hooks"] if h["kind"] != "tracepoint"]
    checks = []
    if not plan["kprobes"]:
        present = sorted({h["hook"] for h in function_hooks if h["in_kallsyms"]})
        checks.append(Check("function hooks", False,
                            "none attachable: kprobes are not available (%s); in kallsyms: %s"
                            % (plan["kprobes_why"], ", ".join(present) or "none"),
                            LAB_HINT))
    else:
        by_name = {}
        for hook in function_hooks:
            by_name.setdefault(hook["hook"], []).append(hook)
        for name, hooks in by_name.items():
            first = hooks[0]
            kinds = "+".join(h["kind"] for h in hooks)
            # "n/a": the handler of a filesystem not mounted here.
            ok = first["status"] in ("attach", "inlined", "n/a")
            fix = "" if ok else ("load the filesystem's module "
                                 "(modprobe ext4 / xfs / ext2 / virtiofs)")
            checks.append(Check("%s %s" % (kinds, name), ok,
                                "%s: %s" % (first["status"], first["why"]), fix))
    for hook in plan["hooks"]:
        if hook["kind"] == "tracepoint":
            ok = hook["status"] == "attach"
            checks.append(Check("tracepoint %s" % hook["hook"], ok, hook["why"],
                                "" if ok else "needs a kernel with CONFIG_FS_DAX and tracefs"))
    return checks


# -- field layouts and the kernel's clock -------------------------------------

def layout_checks(plan, btf, kallsyms):
    """What the BPF program reads and where, on this kernel: the fault path's
    fields, the inode's timestamps (and whether they are multigrain), and
    the kernel's timestamp clock.  These move between kernels."""
    offsets = plan.get("offsets")
    if not offsets:
        return [Check("field layout", False, plan.get("offsets_error", "no offsets"),
                      "needs the kernel's BTF (/sys/kernel/btf/vmlinux)", True)]
    o = offsets
    checks = [Check("field layout", True,
                    "vm_area_struct vm_ops %d vm_file %d; vm_operations_struct fault %d "
                    "pfn_mkwrite %d; file.f_inode %d; inode i_flags %d i_ino %d"
                    % (o["VMA_VM_OPS"], o["VMA_VM_FILE"], o["VMOPS_FAULT"],
                       o["VMOPS_PFN_MKWRITE"], o["FILE_F_INODE"], o["INODE_I_FLAGS"],
                       o["INODE_I_INO"]))]
    if btf is not None and btf.has_member("inode", "i_mtime_sec"):
        names = "i_mtime_sec/_nsec, i_ctime_sec/_nsec"
    else:
        names = "timespec64 mtime/ctime"
    multigrain = "mg_floor" in kallsyms
    checks.append(Check("timestamps", True, "%s at %d/%d, %d/%d; %s" % (
        names, o["INODE_MTIME_SEC"], o["INODE_MTIME_NSEC"], o["INODE_CTIME_SEC"],
        o["INODE_CTIME_NSEC"],
        "multigrain (6.13+): bit 31 of the ctime nsec is I_CTIME_QUERIED" if multigrain
        else "coarse only (no multigrain floor mg_floor)")))
    clock = plan.get("clock") or {}
    if clock.get("status") == "read":
        detail = "%s (%s), xtime_sec at +%d; %s" % (
            clock["symbol"], "struct tk_data" if btf is not None and btf.has_struct("tk_data")
            else "seqcount + struct timekeeper", o["TKC_XTIME_SEC"], clock["why"])
        checks.append(Check("kernel clock", True, detail))
    else:
        checks.append(Check("kernel clock", False, clock.get("why", "not planned"),
                            "without it a fault that moved no timestamp is UNDECIDED"))
    return checks


# -- DAX mounts -------------------------------------------------------------

def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape")


def dax_mounts(mountinfo):
    """[(mount point, fs type, dax option)] for DAX-capable filesystems
    mounted with a dax option."""
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        mount_point, mount_opts = left.split()[4], left.split()[5]
        fstype, _source, super_opts = (right.split() + ["", ""])[:3]
        if fstype.split(".")[0] not in DAX_FSTYPES:
            continue
        options = set(mount_opts.split(",")) | set(super_opts.split(","))
        dax = sorted(options & DAX_OPTIONS)
        if dax:
            found.append((_unescape(mount_point), fstype, dax[0]))
    return found


def _first_regular_file(directory):
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    return entry.path
    except OSError:
        pass
    return None


def _dax_word(dax):
    return {True: "DAX", False: "not DAX", None: "DAX unknown"}[dax]


def device_dax(major, minor):
    """Whether the block device under a mount can do DAX (its queue/dax);
    None when it is not a block device (virtiofs)."""
    try:
        with open("/sys/dev/block/%d:%d/queue/dax" % (major, minor)) as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def check_dax_mount(mount_point, fstype, option):
    parts = []
    try:
        root = statx(mount_point)
        root_dax = root["dax"]
        parts.append("root %s" % _dax_word(root_dax))
    except OSError as e:
        return Check("DAX mount %s" % mount_point, False, "statx: %s" % e.strerror,
                     "cannot statx %s" % mount_point)
    # Directories are never S_DAX on xfs: an empty mount proves nothing by
    # statx, but the device says whether its files can be.
    dev_dax = device_dax(root["dev_major"], root["dev_minor"])
    if dev_dax is not None:
        parts.append("device %s" % ("DAX" if dev_dax else "not DAX"))
    sample = _first_regular_file(mount_point)
    file_dax = None
    if sample:
        try:
            file_dax = statx(sample)["dax"]
            parts.append("%s %s" % (os.path.basename(sample), _dax_word(file_dax)))
        except OSError as e:
            parts.append("%s: %s" % (os.path.basename(sample), e.strerror))
    # A file sample, when there is one, is the proof; without one the
    # device decides (dax=always on a DAX-capable device).
    ok = bool(file_dax) if sample and file_dax is not None else bool(root_dax or dev_dax)
    detail = "%s %s: %s" % (fstype, option, ", ".join(parts))
    fix = "" if ok else ("mounted with %s but statx reports no DAX: the device cannot do "
                         "DAX (needs pmem/virtio-pmem), or files lack FS_XFLAG_DAX "
                         "under dax=inode" % option)
    return Check("DAX mount %s" % mount_point, ok, detail, fix)


def check_dax(mountinfo):
    mounts = dax_mounts(mountinfo)
    if not mounts:
        return [Check("DAX mounts", False, "no ext4/xfs/ext2/virtiofs mount with a dax option",
                      "mount a DAX filesystem (mount -o dax on a pmem device), or %s"
                      % LAB_HINT)]
    return [check_dax_mount(*mount) for mount in mounts]


# -- putting it together ----------------------------------------------------

def _read(path):
    with open(path) as f:
        return f.read()


def _blocking_checks(release, config):
    """The checks `pfntrace record` cannot do without, cheapest first; the
    tracefs check also hands back the mounted tracefs."""
    yield check_privileges(_read("/proc/self/status"), os.geteuid()), None
    yield check_bpf_syscall(), None
    yield check_kprobes(config), None
    yield check_btf(), None
    yield check_headers(release), None
    yield check_bcc(), None
    yield check_tracefs()


def check_preemption(config):
    """Informational: how the kernel preempts, and so how --attach auto
    attaches (pfntrace/kernel/preempt.py)."""
    facts = preempt.preemption(config=config)
    if facts["preemptible"] is False:
        effect = "BPF trampoline programs are not preempted midway: auto uses them"
    else:
        effect = ("a BPF trampoline program can be skipped while another task's run of it "
                  "is preempted: auto uses kprobes (--attach fentry counts skipped runs)")
    return Check("preemption", True, "%s (%s); %s" % (facts["model"] or "unknown",
                                                      facts["why"], effect))


def run_checks():
    """(every check, blocking ones first; the probe plan or None)."""
    release = os.uname().release
    config = load_config()
    plan = None
    checks = [check_kernel(release, config)]
    tracefs = None
    for check, found in _blocking_checks(release, config):
        checks.append(check)
        tracefs = found or tracefs
    checks.append(check_fentry(config))
    checks.append(check_preemption(config))
    checks.append(check_ftrace_functions(tracefs))
    try:
        btf = Btf.load(BTF_PATH)
    except BtfError:
        btf = None
    try:
        kallsyms = Kallsyms.load()
    except KallsymsError as e:
        checks.append(Check("kallsyms", False, str(e), "run as root to read /proc/kallsyms"))
    else:
        if kallsyms.addresses_hidden:
            checks.append(Check("kallsyms", False, "addresses are hidden (zeros)",
                                "run as root: handler addresses cannot be resolved otherwise"))
        plan = build_plan(kallsyms, btf, tracefs,
                          kprobes=kprobe_support(config), release=release)
        checks.extend(hook_checks(plan))
        checks.extend(layout_checks(plan, btf, kallsyms))
    checks.extend(check_dax(_read("/proc/self/mountinfo")))
    return checks, plan


def record_blocker():
    """Why `pfntrace record` cannot run here, as one line; None if it can."""
    release = os.uname().release
    config = load_config()
    for check, _ in _blocking_checks(release, config):
        if not check.ok:
            return check.fix
    return None
