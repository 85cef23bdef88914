"""How each hook is attached: fentry/fexit where the kernel and bcc 0.26
allow, kprobes elsewhere (--attach auto|kprobe|fentry)."""

import json
import os
import tempfile

import pytest

from pfntrace import tracer
from pfntrace.kernel.btf import Btf
from pfntrace.kernel.kallsyms import Kallsyms
from pfntrace.kernel.offsets import OffsetError
from pfntrace.probeplan import (HANDLER_TRAMPOLINE, TOP_SHORTCUT, apply_attach, apply_counting,
                                 apply_scope, build_plan, fall_back_to_kprobes, fentry_plan,
                                 trampoline_handlers, UNMAP_KPROBE_ONLY)
from pfntrace.views import plan as plan_view

from test_btf import BtfBuilder

# A Debian-like kernel: the fault path in vmlinux, the filesystems' handlers
# in their modules, BPF trampolines present.
KALLSYMS = """\
ffffffff815e2f50 t do_wp_page
ffffffff816e54e0 T file_update_time
ffffffff81700000 T vfs_getattr_nosec
ffffffff81300000 T unmap_page_range
ffffffff81200000 T bpf_trampoline_link_prog
ffffffffc0a00000 t ext4_dax_fault\t[ext4]
ffffffffc0a00100 t ext4_dax_huge_fault\t[ext4]
ffffffffc0b00000 t xfs_filemap_pfn_mkwrite\t[xfs]
"""


class FakeBtf:
    def __init__(self, funcs):
        self.funcs = set(funcs)

    def has_func(self, name):
        return name in self.funcs

    def func_id(self, name):
        return 1000 + sorted(self.funcs).index(name) if name in self.funcs else None

    def member_offset(self, struct, member):    # offsets: not what these tests are about
        raise OffsetError("no structs in a fake BTF")


VMLINUX_FUNCS = ("do_wp_page", "file_update_time", "vfs_getattr_nosec")
# ext4's module BTF has its handlers; xfs's module has no BTF at all
# (a kernel built without CONFIG_DEBUG_INFO_BTF_MODULES).
MODULE_FUNCS = {"ext4": ("ext4_dax_fault", "ext4_dax_huge_fault")}


def btf_dir(funcs, modules, folder):
    """A /sys/kernel/btf in folder: each module's split BTF with its
    functions; returns vmlinux's Btf, with funcs."""
    base = BtfBuilder()
    for name in funcs:
        base.func(name)
    vmlinux = Btf(base.build())
    for module, names in modules.items():
        split = BtfBuilder(base=base)
        for name in names:
            split.func(name)
        with open(os.path.join(folder, module), "wb") as f:
            f.write(split.build())
    return vmlinux


def plan(kallsyms_text=KALLSYMS, funcs=VMLINUX_FUNCS, btf=True, modules=MODULE_FUNCS):
    ks = Kallsyms(kallsyms_text)
    p = build_plan(ks, FakeBtf(funcs) if btf else None, None, kprobes=(True, "ok"),
                   release="6.12.117+deb12-amd64", fstypes={"ext4", "xfs"})
    with tempfile.TemporaryDirectory(prefix="pfntrace-btf-") as folder:
        vmlinux = btf_dir(funcs, modules, folder)
        p["fentry"] = fentry_plan(ks, vmlinux if btf else None, machine="x86_64",
                                  btf_dir=folder)
    return p


def mech(p, name, kind):
    h = [h for h in p["hooks"] if h["hook"] == name and h["kind"] == kind][0]
    return h.get("mechanism"), h.get("attach_why")


def test_auto_uses_trampolines_wherever_btf_has_the_function():
    """vmlinux's hooks go on bcc's KFUNC_PROBEs; a module's handler goes on
    a trampoline pfntrace loads itself when the module's BTF has it (ext4
    here), and stays a kprobe when it has no BTF (xfs here)."""
    p = apply_attach(plan(), "auto")
    assert p["attach"] == "auto"
    assert mech(p, "do_wp_page", "kprobe") == ("fentry", "BPF trampoline")
    assert mech(p, "do_wp_page", "kretprobe") == ("fexit", "BPF trampoline")
    assert mech(p, "file_update_time", "kprobe")[0] == "fentry"
    # The stat probe (invisible writes) is in vmlinux too.
    assert mech(p, "vfs_getattr_nosec", "kprobe") == ("fentry", "BPF trampoline")
    assert mech(p, "vfs_getattr_nosec", "kretprobe") == ("fexit", "BPF trampoline")
    assert mech(p, "ext4_dax_fault", "kprobe") == ("fentry", HANDLER_TRAMPOLINE)
    assert mech(p, "ext4_dax_huge_fault", "kretprobe") == ("fexit", HANDLER_TRAMPOLINE)
    m, why = mech(p, "xfs_filemap_pfn_mkwrite", "kretprobe")
    assert m == "kretprobe" and why == "in module [xfs], whose BTF (/sys/kernel/btf/xfs) " \
                                       "does not have it"
    # Hooks the plan does not attach get no mechanism.
    assert mech(p, "fuse_dax_fault", "kprobe") == (None, None)
    # The ids are the functions' in the split BTF: after vmlinux's 6 types
    # (3 functions and their prototypes), each handler after its prototype.
    assert p["fentry"]["handlers"] == {
        "ext4_dax_fault": {"module": "ext4", "btf_id": 8},
        "ext4_dax_huge_fault": {"module": "ext4", "btf_id": 10}}
    assert trampoline_handlers(p) == [
        ("ext4_dax_fault", "fentry", {"module": "ext4", "btf_id": 8}),
        ("ext4_dax_fault", "fexit", {"module": "ext4", "btf_id": 8}),
        ("ext4_dax_huge_fault", "fentry", {"module": "ext4", "btf_id": 10}),
        ("ext4_dax_huge_fault", "fexit", {"module": "ext4", "btf_id": 10})]
    assert tracer.fentry_flags(p) == ["-DPFT_FENTRY_DO_WP_PAGE",
                                      "-DPFT_FENTRY_FILE_UPDATE_TIME",
                                      "-DPFT_FENTRY_VFS_GETATTR_NOSEC",
                                      "-DPFT_FENTRY_HANDLERS",
                                      # xfs's handler, without BTF, stays a kprobe
                                      "-DPFT_KPROBE_HANDLERS"]
    json.dumps(p)


def test_kprobe_mode_is_the_whole_kprobe_plan():
    p = apply_attach(plan(), "kprobe")
    for h in p["hooks"]:
        if h["status"] == "attach" and h["kind"] != "tracepoint":
            assert h["mechanism"] == h["kind"] and h["attach_why"] == "--attach kprobe"
    assert tracer.fentry_flags(p) == ["-DPFT_KPROBE_HANDLERS"]


def test_reapplying_a_mode_replaces_the_last():
    p = apply_attach(plan(), "auto")
    apply_attach(p, "kprobe")
    assert mech(p, "do_wp_page", "kprobe")[0] == "kprobe"
    apply_attach(p, "auto")
    assert mech(p, "do_wp_page", "kprobe")[0] == "fentry"


def test_fentry_mode_fails_in_one_line_on_a_module_function_without_btf():
    with pytest.raises(ValueError) as e:
        apply_attach(plan(), "fentry")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("--attach fentry: xfs_filemap_pfn_mkwrite cannot be fentry: in module [xfs], "
                   "whose BTF (/sys/kernel/btf/xfs) does not have it")


def test_fentry_mode_without_module_handlers_attaches_everything_by_trampoline():
    only_vmlinux = "".join(line + "\n" for line in KALLSYMS.splitlines() if "[" not in line)
    p = apply_attach(plan(only_vmlinux), "fentry")
    attached = [h for h in p["hooks"] if h["status"] == "attach"]
    assert {h.get("mechanism") for h in attached if h["kind"] != "tracepoint"
            and h["hook"] != "unmap_page_range"} == {"fentry", "fexit"}
    # ... but where pages are unmapped, which is a kprobe under every mode.
    assert mech(p, "unmap_page_range", "kprobe") == ("kprobe", UNMAP_KPROBE_ONLY)
    # No handler on a kprobe: their kprobe programs are not compiled.
    assert "-DPFT_KPROBE_HANDLERS" not in tracer.fentry_flags(p)


def test_no_trampolines_or_btf_means_kprobes_and_says_why():
    no_tramp = KALLSYMS.replace("bpf_trampoline_link_prog", "something_else")
    p = apply_attach(plan(no_tramp), "auto")
    m, why = mech(p, "do_wp_page", "kprobe")
    assert m == "kprobe" and "bpf_trampoline_link_prog" in why
    assert plan_view.attach_row(p)[2].startswith("kprobes: no fentry here (no BPF trampolines")
    p = apply_attach(plan(btf=False), "auto")
    assert "no kernel BTF" in mech(p, "do_wp_page", "kprobe")[1]
    # A function inlined out of BTF (no FUNC record) stays a kprobe.
    p = apply_attach(plan(funcs=("do_wp_page",)), "auto")
    m, why = mech(p, "file_update_time", "kprobe")
    assert m == "kprobe" and why == "not a function in the kernel's BTF"
    with pytest.raises(ValueError, match="no BPF trampolines"):
        apply_attach(plan(no_tramp), "fentry")
    assert fentry_plan(Kallsyms(KALLSYMS), FakeBtf(()), machine="aarch64")["ok"] is False


def test_refused_trampolines_fall_back_to_kprobes():
    p = apply_attach(plan(), "auto")
    fall_back_to_kprobes(p, "Failed to attach BPF to entry kernel func")
    m, why = mech(p, "do_wp_page", "kretprobe")
    assert m == "kretprobe" and why.startswith("fentry failed: Failed to attach")
    assert tracer.fentry_flags(p) == ["-DPFT_KPROBE_HANDLERS"]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="one of auto, kprobe, fentry"):
        apply_attach(plan(), "uprobe")


def test_plan_table_shows_the_mechanism_and_why():
    p = apply_attach(plan(), "auto")
    rows = {r[0]: r for _s, _t, _st, rs in plan_view.grouped(p["hooks"]) for r in rs}
    assert rows["do_wp_page"][1] == "fentry+fexit"
    assert rows["do_wp_page"][2] == "in /proc/kallsyms; fentry: BPF trampoline"
    assert rows["ext4_dax_fault"][1] == "fentry+fexit"
    assert rows["ext4_dax_fault"][2].endswith("fentry: " + HANDLER_TRAMPOLINE)
    assert rows["xfs_filemap_pfn_mkwrite"][1] == "kprobe+kretprobe"
    assert "kprobe: in module [xfs], whose BTF" in rows["xfs_filemap_pfn_mkwrite"][2]
    assert plan_view.attach_row(p) == (
        "attach", "auto", "fentry/fexit where possible (kernel BTF and BPF trampolines), "
        "kprobes elsewhere")
    assert plan_view.attach_row(apply_attach(p, "kprobe"))[1:] == (
        "kprobe", "kprobes and kretprobes only (--attach kprobe)")


def test_cli_rejects_a_bad_attach_mode():
    from click.testing import CliRunner

    from pfntrace.cli import main

    for cmd in ("record", "top", "check"):
        r = CliRunner().invoke(main, [cmd, "--attach", "bogus", "--", "true"])
        assert r.exit_code == 2 and "'bogus' is not one of" in r.output, (cmd, r.output)


def test_the_trailer_names_the_mechanism_each_attached_hook_got():
    p = apply_attach(plan(), "auto")
    tr = tracer.Tracer(p)
    tr.attached = [("kprobe", "do_wp_page"), ("kretprobe", "do_wp_page"),
                   ("kprobe", "ext4_dax_fault"), ("kprobe", "xfs_filemap_pfn_mkwrite"),
                   ("kprobe", "late_handler")]
    assert tr.mechanisms() == ["fentry do_wp_page", "fexit do_wp_page",
                               "fentry ext4_dax_fault", "kprobe xfs_filemap_pfn_mkwrite",
                               "kprobe late_handler"]
    fall_back_to_kprobes(p, "refused")
    assert tr.mechanisms()[:2] == ["kprobe do_wp_page", "kretprobe do_wp_page"]


def test_page_cache_handlers_only_with_all_files():
    """ext4_page_mkwrite and filemap_page_mkwrite serve no DAX file: without
    --all-files they are left out ("n/a", with why), not attached; with it,
    they are attached like any handler."""
    ks = KALLSYMS + ("ffffffffc0a00200 t ext4_page_mkwrite\t[ext4]\n"
                     "ffffffff81300000 T filemap_page_mkwrite\n")
    for all_files in (False, True):
        p = apply_attach(apply_scope(plan(ks), all_files), "auto")
        assert p["all_files"] is all_files
        for name in ("ext4_page_mkwrite", "filemap_page_mkwrite"):
            for kind in ("kprobe", "kretprobe"):
                h = [h for h in p["hooks"] if h["hook"] == name and h["kind"] == kind][0]
                if all_files:
                    assert h["status"] == "attach" and h["mechanism"] == kind, h
                else:
                    assert h["status"] == "n/a" and "only with --all-files" in h["why"], h
                    assert "mechanism" not in h
        # The DAX handlers stay, whatever the scope.
        assert mech(p, "ext4_dax_fault", "kprobe")[0] == "fentry"
        assert mech(p, "xfs_filemap_pfn_mkwrite", "kprobe")[0] == "kprobe"


def test_top_leaves_out_what_only_record_uses():
    """top's counts never use how often file_update_time ran, nor where
    pages are unmapped (write-exposure windows are record's): its plan has
    those hooks "n/a" with why, compiled out of the fentry flags; every
    other hook is as record's plan has it, with --attach kprobe too."""
    record_only = ("file_update_time", "unmap_page_range")
    for attach in ("auto", "kprobe"):
        record = apply_attach(apply_scope(plan()), attach)
        top = apply_attach(apply_counting(apply_scope(plan())), attach)
        left_out = [h for h in top["hooks"] if h["hook"] in record_only]
        assert len(left_out) == 2 and all(
            h["status"] == "n/a" and "left out by top" in h["why"] and "mechanism" not in h
            for h in left_out), left_out
        assert all(h["status"] == "attach" for h in record["hooks"]
                   if h["hook"] in record_only)
        # ... and says where its handler programs stop early: on trampolines only.
        for h in top["hooks"]:
            if h.get("attach_why", "").startswith(HANDLER_TRAMPOLINE):
                assert h["attach_why"] == HANDLER_TRAMPOLINE + "; " + TOP_SHORTCUT
                h["attach_why"] = HANDLER_TRAMPOLINE
            else:
                assert TOP_SHORTCUT not in h.get("attach_why", "")
        rest = [h for h in top["hooks"] if h["hook"] not in record_only]
        assert rest == [h for h in record["hooks"] if h["hook"] not in record_only]
        assert mech(top, "do_wp_page", "kretprobe")[0] in ("fexit", "kretprobe")
        assert mech(top, "ext4_dax_fault", "kretprobe")[0] == \
            ("kretprobe" if attach == "kprobe" else "fexit")
        assert "-DPFT_FENTRY_FILE_UPDATE_TIME" not in tracer.fentry_flags(top)


def test_unmaps_are_probed_where_the_kernel_has_them():
    """unmap_page_range up to 7.x; on 7.x it is inlined into __zap_vma_range
    (same arguments); with neither, the hook is missing and says so."""
    newer = KALLSYMS.replace("T unmap_page_range", "t __zap_vma_range")
    for text, name, status in ((KALLSYMS, "unmap_page_range", "attach"),
                               (newer, "__zap_vma_range", "attach"),
                               (KALLSYMS.replace("T unmap_page_range", "T other"),
                                "unmap_page_range", "missing")):
        p = apply_attach(plan(text), "auto")
        (hook,) = [h for h in p["hooks"] if h["hook"] in ("unmap_page_range", "__zap_vma_range")]
        assert (hook["hook"], hook["status"]) == (name, status)
        if status == "missing":
            assert "__zap_vma_range" in hook["why"] and "written back" in hook["why"]
        else:
            assert hook["mechanism"] == "kprobe"
