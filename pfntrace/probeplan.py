"""Which probes pfntrace can attach on this kernel, and why not the others.

The plan is decided before anything is attached, printed by
`pfntrace record --plan` and stored in every recording, so a recording says
what it could and could not have seen.
"""

import os

from pfntrace.kernel import kconfig as kconfig_mod
from pfntrace.kernel import preempt
from pfntrace.kernel.offsets import OffsetError, bpf_defines

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"

# vm_ops handlers of the DAX-capable filesystems.  Most live in modules on
# distribution kernels, so absence usually means "module not loaded".
FS_HANDLERS = (
    "ext4_dax_fault", "ext4_dax_huge_fault",
    "xfs_filemap_fault", "xfs_filemap_huge_fault",
    "xfs_filemap_page_mkwrite", "xfs_filemap_pfn_mkwrite",
    "ext2_dax_fault",
    "fuse_dax_fault", "fuse_dax_huge_fault", "fuse_dax_page_mkwrite", "fuse_dax_pfn_mkwrite",
    # The page-cache ->page_mkwrite of ext4 and of most others (generic):
    # what `record --all-files` compares DAX with.
    "ext4_page_mkwrite", "filemap_page_mkwrite",
)
# Handlers that serve page-cache files only: no DAX file's vm_ops name them,
# so without --all-files (DAX files only) they would run on every page-cache
# write fault of the machine and trace nothing.
PAGE_CACHE_HANDLERS = ("ext4_page_mkwrite", "filemap_page_mkwrite")
PAGE_CACHE_SKIPPED = ("the page-cache ->page_mkwrite: no DAX file faults through it, so it is "
                      "probed only with --all-files")

DAX_TRACEPOINTS = (
    ("fs_dax", "dax_pte_fault_done"),
    ("fs_dax", "dax_pmd_fault_done"),
    ("fs_dax", "dax_writeback_one"),
    ("fs_dax", "dax_insert_pfn_mkwrite"),
)

WP_PFN_SHARED_INLINED = ("inlined into do_wp_page on this kernel: the pfn_mkwrite path is "
                         "inferred from the page (a DAX inode, a PFNMAP/MIXEDMAP vma)")
NOT_IN_KALLSYMS = "not in /proc/kallsyms (module not loaded?)"
# Where pfntrace learns what a stat showed: every stat, fstat and statx
# reaches vfs_getattr_nosec (exported: a symbol on every kernel); its
# callers vfs_getattr and vfs_statx are inlined or static on Debian's 6.1
# and 6.12, and generic_fillattr is not what xfs calls.
GETATTR_HOOK = "vfs_getattr_nosec"
GETATTR_WHY = ("in /proc/kallsyms: the mtime/ctime every stat, fstat and statx shows "
               "(for invisible writes)")
GETATTR_MISSING = NOT_IN_KALLSYMS + ": invisible writes cannot be told"
# Where a mapping's PTEs go away (munmap, exit, exec, MADV_DONTNEED,
# truncate): the end of a page's write-exposure window in that mapping.
# unmap_page_range(tlb, vma, addr, end, details) up to 7.x, which inlined it
# into __zap_vma_range(tlb, vma, start, end, details) (formerly
# unmap_single_vma): the same arguments.  The first one kallsyms has.
UNMAP_HOOKS = ("unmap_page_range", "__zap_vma_range")
UNMAP_WHY = ("in /proc/kallsyms: where munmap, exit and truncate take a mapping's pages "
             "(for write-exposure windows)")
UNMAP_MISSING = ("none of %s in /proc/kallsyms: a window is seen to close only when its "
                 "page is written back" % ", ".join(UNMAP_HOOKS))
# Its program builds its event in per-CPU scratch, safe only where it cannot
# be preempted: a kprobe, under every --attach (it runs at unmaps, not at
# faults, so its cost does not weigh on the fault path).
UNMAP_KPROBE_ONLY = "a kprobe under every --attach (its program cannot be preempted there)"

# The filesystem types whose vm_ops each handler belongs to, by name prefix
# (fuse's DAX handlers serve virtiofs).  A handler absent from kallsyms
# whose filesystem is not mounted anywhere is not applicable here, not
# missing: nothing on this machine could fault through it.  Handlers of no
# one filesystem (filemap_page_mkwrite) are always applicable.
HANDLER_FSTYPES = (("ext4_", ("ext4",)), ("xfs_", ("xfs",)), ("ext2_", ("ext2",)),
                   ("fuse_", ("fuse", "virtiofs")))


def handler_fstypes(name):
    """The filesystem types a handler serves, or () when it is generic."""
    for prefix, types in HANDLER_FSTYPES:
        if name.startswith(prefix):
            return types
    return ()


def mounted_fstypes(mountinfo):
    """The set of filesystem types in mountinfo text ("fuse.sshfs" counts as
    fuse)."""
    found = set()
    for line in mountinfo.splitlines():
        _left, sep, right = line.partition(" - ")
        if sep and right.split():
            found.add(right.split()[0].split(".")[0])
    return found


def _running_fstypes():
    try:
        with open("/proc/self/mountinfo") as f:
            return mounted_fstypes(f.read())
    except OSError:
        return None     # unknown: every absent handler stays missing


def kprobe_support(config=None, pmu_dir=KPROBE_PMU):
    """(available, reason): kprobes need both the config option and the
    perf PMU bcc attaches through."""
    if config is not None and not config.enabled("CONFIG_KPROBES"):
        return False, "CONFIG_KPROBES is not set"
    if not os.path.isdir(pmu_dir):
        return False, "no %s" % pmu_dir
    return True, "CONFIG_KPROBES=y and %s exists" % pmu_dir


def _running_config():
    try:
        return kconfig_mod.load()
    except kconfig_mod.KconfigError:
        # Without a config the PMU directory alone decides.
        return None


def _hook(name, kind, status, why, **extra):
    return dict({"hook": name, "kind": kind, "status": status, "why": why}, **extra)


def _absent_handler(name, fstypes):
    """(status, why) of a handler that is not in kallsyms."""
    types = handler_fstypes(name)
    if fstypes is not None and types and not set(types) & fstypes:
        return "n/a", "no %s filesystem is mounted (its module is not loaded)" % "/".join(types)
    return "missing", NOT_IN_KALLSYMS


def _function_hooks(kallsyms, fstypes=None):
    """(name, kind, status, why) for the kprobe hooks, kprobes assumed.
    fstypes: the mounted filesystem types, None when unknown."""
    hooks = []
    if "do_wp_page" in kallsyms:
        hooks.append(("do_wp_page", "kprobe", "attach", "in /proc/kallsyms"))
        hooks.append(("do_wp_page", "kretprobe", "attach", "in /proc/kallsyms"))
    else:
        hooks.append(("do_wp_page", "kprobe", "missing", NOT_IN_KALLSYMS))
        hooks.append(("do_wp_page", "kretprobe", "missing", NOT_IN_KALLSYMS))
    if "wp_pfn_shared" in kallsyms:
        hooks.append(("wp_pfn_shared", "kprobe", "attach", "in /proc/kallsyms"))
    elif "do_wp_page" in kallsyms:
        hooks.append(("wp_pfn_shared", "kprobe", "inlined", WP_PFN_SHARED_INLINED))
    else:
        hooks.append(("wp_pfn_shared", "kprobe", "missing", NOT_IN_KALLSYMS))
    present = "file_update_time" in kallsyms
    hooks.append(("file_update_time", "kprobe", "attach" if present else "missing",
                  "in /proc/kallsyms" if present else NOT_IN_KALLSYMS))
    present = GETATTR_HOOK in kallsyms
    for kind in ("kprobe", "kretprobe"):
        hooks.append((GETATTR_HOOK, kind, "attach" if present else "missing",
                      GETATTR_WHY if present else GETATTR_MISSING))
    unmap = [name for name in UNMAP_HOOKS if name in kallsyms]
    hooks.append((unmap[0], "kprobe", "attach", UNMAP_WHY) if unmap else
                 (UNMAP_HOOKS[0], "kprobe", "missing", UNMAP_MISSING))
    # Handlers are probed on entry (to know they ran inside do_wp_page) and
    # on return (their vm_fault_t, and the timestamps after the fact).
    for name in FS_HANDLERS:
        module = kallsyms.module(name)
        if name in kallsyms:
            why = "in /proc/kallsyms" + (" [%s]" % module if module else "")
            hooks.append((name, "kprobe", "attach", why))
            hooks.append((name, "kretprobe", "attach", why))
        else:
            status, why = _absent_handler(name, fstypes)
            hooks.append((name, "kprobe", status, why))
            hooks.append((name, "kretprobe", status, why))
    return hooks


# Where the timekeeper's data lives: tk_core until it became an array of
# timekeepers (timekeeper_data, the core one first).
CLOCK_SYMBOLS = ("tk_core", "timekeeper_data")


def clock_plan(kallsyms, offsets):
    """How the BPF side reads the kernel's timestamp clock (what
    current_time() stamps with), or why it cannot: without it a write fault
    that moved no timestamp is UNDECIDED rather than CURRENT."""
    if not offsets or not offsets.get("TKC_LAYOUT"):
        return {"status": "missing", "why": "the timekeeper's layout is not in the kernel's BTF"}
    if getattr(kallsyms, "addresses_hidden", False):
        return {"status": "missing", "why": "/proc/kallsyms hides addresses (not root?)"}
    for name in CLOCK_SYMBOLS:
        addr = kallsyms.address(name)
        if addr:
            floor = kallsyms.address("mg_floor") or 0
            return {"status": "read", "symbol": name, "tk_base": addr, "mg_floor": floor,
                    "why": "%s in /proc/kallsyms%s" % (
                        name, ", multigrain floor mg_floor" if floor else "")}
    return {"status": "missing", "why": "none of %s in /proc/kallsyms" % ", ".join(CLOCK_SYMBOLS)}


def build_plan(kallsyms, btf, tracefs, kprobes=None, release=None, fstypes=False):
    """The probe plan as a JSON-serialisable dict.

    kprobes is (available, reason), detected when None; tracefs may be None
    (not mounted) and btf None (no BTF), which the plan then reports.
    fstypes: the mounted filesystem types (read from /proc/self/mountinfo
    when False; None: unknown, so no handler is "n/a").
    """
    config = _running_config()
    if kprobes is None:
        kprobes = kprobe_support(config)
    if fstypes is False:
        fstypes = _running_fstypes()
    kprobes_ok, kprobes_why = kprobes
    hooks = []
    for name, kind, status, why in _function_hooks(kallsyms, fstypes):
        if not kprobes_ok:
            status, why = "missing", "kprobes are not available (%s)" % kprobes_why
        # Kept even when kprobes are off: it tells what a kprobe-capable
        # build of the same kernel could attach.
        hooks.append(_hook(name, kind, status, why, in_kallsyms=name in kallsyms,
                           module=kallsyms.module(name)))
    for group, event in DAX_TRACEPOINTS:
        name = "%s:%s" % (group, event)
        if tracefs is None:
            hooks.append(_hook(name, "tracepoint", "missing", "tracefs is not mounted"))
        elif tracefs.has_event(group, event):
            hooks.append(_hook(name, "tracepoint", "attach",
                               "%s/events/%s/%s exists" % (tracefs.root, group, event)))
        else:
            hooks.append(_hook(name, "tracepoint", "missing",
                               "no %s/events/%s/%s (CONFIG_FS_DAX off?)"
                               % (tracefs.root, group, event)))
    plan = {
        "kernel": release or os.uname().release,
        "kprobes": kprobes_ok,
        "kprobes_why": kprobes_why,
        "tracefs": tracefs.root if tracefs else None,
        "hooks": hooks,
    }
    # The offsets the BPF program is compiled with belong in the recording:
    # a wrong offset is the first suspect when values look odd.
    if btf is None:
        plan["offsets_error"] = "no kernel BTF"
    else:
        try:
            plan["offsets"] = bpf_defines(btf)
        except OffsetError as e:
            plan["offsets_error"] = str(e)
    plan["clock"] = clock_plan(kallsyms, plan.get("offsets"))
    plan["fentry"] = fentry_plan(kallsyms, btf)
    plan["preemption"] = preempt.preemption(config=config)
    return plan


# ---- How each hook is attached ----------------------------------------------
# A kprobe is an int3 and a trip through the kprobe handler; a kretprobe adds
# a return trampoline and an instance taken from a per-probe pool.  fentry/
# fexit is a BPF trampoline called from the function's ftrace nop, with no
# instance pool to run dry.  On do_wp_page alone, issue 16's boot measured
# kprobe+kretprobe at 7.8 us a fault, fentry+fexit at 2.2 us (TCG); for
# pfntrace's whole hook set bench_storm finds no steady winner under TCG
# (bench/issue16-storm.md: floor vs floor-kprobe 2.04x/1.82x, then
# 1.37x/1.56x on 6.12/ext4).  auto keeps fentry where bcc allows it.

ATTACH_MODES = ("auto", "kprobe", "fentry")
# The plan's role of a hook -> the trampoline that does the same.
FENTRY_OF = {"kprobe": "fentry", "kretprobe": "fexit"}
# The hooks pfntrace.bpf.c has fentry/fexit shims for (PFT_FENTRY_<NAME>),
# which bcc attaches as it loads them.
FENTRY_HOOKS = ("do_wp_page", "wp_pfn_shared", "file_update_time", GETATTR_HOOK)
FENTRY_ARCHES = ("x86_64",)
BTF_DIR = "/sys/kernel/btf"
# The vm_ops handlers share two programs (handler_fentry, handler_fexit)
# that pfntrace loads itself, once per handler, against the function's BTF
# id: bcc 0.26 attaches fentry only in vmlinux (pfntrace/kernel/trampoline.py).
HANDLER_TRAMPOLINE = "BPF trampoline, loaded by pfntrace (bcc 0.26 has no module fentry)"
# What top's handler programs on trampolines leave out (pfntrace.bpf.c's
# handler_uncounted()); kprobes have no typed vm_fault to load it from.
TOP_SHORTCUT = ("top: a call with FAULT_FLAG_MKWRITE at no PMD/PUD size (inside do_wp_page, "
                "which is judged) stops at one load, never a write fault of its own")
MODULE_NO_BTF = "in module [%s], whose BTF (%s/%s) does not have it"


def handler_btf_ids(kallsyms, btf, btf_dir=BTF_DIR):
    """{handler: {"module", "btf_id"}} of the FS_HANDLERS in kallsyms whose
    BTF (their module's split BTF, or vmlinux's) has the function: what a
    trampoline program is loaded against."""
    from pfntrace.kernel.btf import Btf, BtfError

    found, modules = {}, {}
    for name in FS_HANDLERS:
        if name not in kallsyms:
            continue
        module = kallsyms.module(name)
        if module and module not in modules:
            try:
                modules[module] = Btf.load(os.path.join(btf_dir, module), base=btf)
            except BtfError:
                modules[module] = None  # no module BTF (CONFIG_DEBUG_INFO_BTF_MODULES off)
        source = modules[module] if module else btf
        btf_id = source.func_id(name) if source is not None else None
        if btf_id:
            found[name] = {"module": module, "btf_id": btf_id}
    return found


def fentry_plan(kallsyms, btf, machine=None, btf_dir=BTF_DIR):
    """Whether this kernel can run fentry/fexit programs at all: BTF for the
    programs' attach points, and BPF trampolines (what bcc itself checks:
    bpf_trampoline_link_prog in kallsyms, x86_64 only); and the BTF ids of
    the handlers there."""
    machine = machine or os.uname().machine
    if machine not in FENTRY_ARCHES:
        return {"ok": False, "why": "no BPF trampolines for %s in bcc 0.26" % machine}
    if btf is None:
        return {"ok": False, "why": "no kernel BTF (/sys/kernel/btf/vmlinux)"}
    if "bpf_trampoline_link_prog" not in kallsyms:
        return {"ok": False, "why": "no BPF trampolines (bpf_trampoline_link_prog is not in "
                                    "/proc/kallsyms)"}
    return {"ok": True, "why": "kernel BTF and BPF trampolines", "btf_funcs": sorted(
        name for name in FENTRY_HOOKS if btf.has_func(name)),
        "handlers": handler_btf_ids(kallsyms, btf, btf_dir)}


def _fentry_refusal(plan, hook):
    """Why this hook cannot be an fentry/fexit here, or None when it can."""
    fentry = plan.get("fentry") or {"ok": False, "why": "no fentry facts in the plan"}
    name = hook["hook"]
    if not fentry["ok"]:
        return fentry["why"]
    if name in fentry.get("handlers", {}):
        return None
    if hook.get("module"):
        return MODULE_NO_BTF % (hook["module"], BTF_DIR, hook["module"])
    if name not in FENTRY_HOOKS:
        return "pfntrace has no fentry program for it"
    if name not in fentry.get("btf_funcs", ()):
        return "not a function in the kernel's BTF"
    return None


# auto on a kernel that preempts kernel code: kprobes, never skipped that way
# (pfntrace/kernel/preempt.py).  --attach fentry still gets trampolines, and
# the programs' skipped runs are then counted (the trailer's bpf_skipped).
PREEMPTED_TRAMPOLINES = ("the kernel preempts (%s): a BPF trampoline program is skipped while "
                         "another task's run of it is preempted on the same CPU; kprobe "
                         "programs run with preemption off")


def _preempted_refusal(plan):
    """Why auto leaves trampolines out on this kernel, or None.  Only where
    kprobes can take their place (else trampolines are all there is)."""
    facts = plan.get("preemption")
    if not facts or facts["preemptible"] is False or not plan.get("kprobes", True):
        return None
    return PREEMPTED_TRAMPOLINES % (facts["model"] or "mode unknown: " + facts["why"])


def apply_attach(plan, mode="auto"):
    """Give every function hook the plan attaches its mechanism: fentry/fexit
    where the kernel and bcc allow (auto, fentry), kprobe/kretprobe elsewhere
    or everywhere (kprobe), with the reason in "attach_why".  Raises
    ValueError, one line, when mode is fentry and a hook cannot be one."""
    if mode not in ATTACH_MODES:
        raise ValueError("--attach must be one of %s" % ", ".join(ATTACH_MODES))
    plan["attach"] = mode
    for hook in plan["hooks"]:
        if hook["kind"] not in FENTRY_OF:
            continue
        hook.pop("mechanism", None)
        hook.pop("attach_why", None)
        if hook["status"] != "attach":
            continue
        if hook["hook"] in UNMAP_HOOKS and mode != "kprobe":
            hook["mechanism"], hook["attach_why"] = hook["kind"], UNMAP_KPROBE_ONLY
            continue
        refusal = None if mode == "kprobe" else _fentry_refusal(plan, hook)
        if mode == "auto" and refusal is None:
            refusal = _preempted_refusal(plan)
        if mode == "kprobe":
            hook["mechanism"], hook["attach_why"] = hook["kind"], "--attach kprobe"
        elif refusal is None:
            hook["mechanism"] = FENTRY_OF[hook["kind"]]
            hook["attach_why"] = ("BPF trampoline" if hook["hook"] in FENTRY_HOOKS
                                  else HANDLER_TRAMPOLINE)
            if plan.get("counting") and hook["hook"] not in FENTRY_HOOKS:
                hook["attach_why"] += "; " + TOP_SHORTCUT
        elif mode == "fentry":
            raise ValueError("--attach fentry: %s cannot be %s: %s"
                             % (hook["hook"], FENTRY_OF[hook["kind"]], refusal))
        else:
            hook["mechanism"], hook["attach_why"] = hook["kind"], refusal
    return plan


def apply_scope(plan, all_files=False):
    """Leave out the page-cache handlers unless page-cache files are traced
    (--all-files): "n/a", with why.  Before apply_attach (which gives only
    attached hooks a mechanism)."""
    plan["all_files"] = bool(all_files)
    if not all_files:
        for hook in plan["hooks"]:
            if hook["hook"] in PAGE_CACHE_HANDLERS and hook["status"] == "attach":
                hook["status"], hook["why"] = "n/a", PAGE_CACHE_SKIPPED
    return plan


# Hooks `top` leaves out: what they see is in none of its counts.
TOP_LEAVES_OUT = {
    "file_update_time": "left out by top: a fault's verdict comes from its timestamps, and how "
                        "often file_update_time ran is kept only by record",
}
TOP_LEAVES_OUT.update(dict.fromkeys(
    UNMAP_HOOKS, "left out by top: write-exposure windows are followed by record"))


def apply_counting(plan):
    """top: the hooks whose data its in-kernel counts never use are "n/a",
    with why (the kprobe plan still has do_wp_page and every handler).
    Before apply_attach, which then says what top's handler programs leave
    out (TOP_SHORTCUT)."""
    plan["counting"] = True
    for hook in plan["hooks"]:
        why = TOP_LEAVES_OUT.get(hook["hook"])
        if why and hook["status"] == "attach":
            hook["status"], hook["why"] = "n/a", why
    return plan


def fall_back_to_kprobes(plan, why):
    """fentry/fexit refused at load time (auto): the same hooks as kprobes."""
    for hook in plan["hooks"]:
        if hook.get("mechanism") in FENTRY_OF.values():
            hook["mechanism"] = hook["kind"]
            hook["attach_why"] = "fentry failed: %s" % why
    return plan


def fentry_hooks(plan):
    """The names of the functions the plan attaches with fentry/fexit."""
    return sorted({h["hook"] for h in plan["hooks"]
                   if h.get("mechanism") in FENTRY_OF.values()})


def trampoline_handlers(plan):
    """[(hook, mechanism, {"module", "btf_id"})] of the handlers the plan
    puts on trampolines pfntrace loads itself (not bcc's KFUNC_PROBEs)."""
    ids = (plan.get("fentry") or {}).get("handlers") or {}
    return [(h["hook"], h["mechanism"], ids[h["hook"]]) for h in plan["hooks"]
            if h.get("mechanism") in FENTRY_OF.values() and h["hook"] not in FENTRY_HOOKS
            and h["hook"] in ids]
