"""Doctor checks and the probe plan, over captured /proc and /sys text."""

import json
import os

import pytest

from pfntrace import doctor
from pfntrace.kernel.kallsyms import Kallsyms
from pfntrace.kernel.kconfig import Kconfig, KconfigError, load as load_kconfig
from pfntrace.kernel.tracefs import Tracefs, find as find_tracefs
from pfntrace.probeplan import (WP_PFN_SHARED_INLINED, build_plan, handler_fstypes, kprobe_support,
                                mounted_fstypes)

DATA = os.path.join(os.path.dirname(__file__), "data")


def data(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def config(name):
    return Kconfig(data(name), source=name)


class FakeTracefs(Tracefs):
    def __init__(self, events):
        super().__init__("/sys/kernel/tracing")
        self.events = events

    def has_event(self, group, name):
        return "%s:%s" % (group, name) in self.events


def hooks_by(plan, name, kind):
    return [h for h in plan["hooks"] if h["hook"] == name and h["kind"] == kind][0]


# -- kconfig ----------------------------------------------------------------

def test_kconfig_values():
    assert config("config-6.1.txt").get("CONFIG_KPROBES") == "y"
    c618 = config("config-6.18.txt")
    assert c618.get("CONFIG_KPROBES") is None
    assert not c618.enabled("CONFIG_KPROBES")
    assert c618.enabled("CONFIG_DEBUG_INFO_BTF")
    assert Kconfig('CONFIG_LOCALVERSION="-fc"\n').get("CONFIG_LOCALVERSION") == "-fc"


def test_kconfig_errors(tmp_path):
    with pytest.raises(KconfigError, match="not a kernel config line"):
        Kconfig("CONFIG_X=y\nhello\n")
    with pytest.raises(KconfigError, match="no kernel config found"):
        load_kconfig([str(tmp_path / "config.gz"), str(tmp_path / "config")])


# -- probe plan -------------------------------------------------------------

def plan_618(**kw):
    kallsyms = Kallsyms(data("kallsyms-6.18.txt"))
    tracefs = FakeTracefs({"fs_dax:dax_pte_fault_done", "fs_dax:dax_writeback_one"})
    kw.setdefault("fstypes", None)      # not this machine's mounts
    return build_plan(kallsyms, None, tracefs, release="6.18.44", **kw)


def test_plan_with_kprobes():
    plan = plan_618(kprobes=(True, "ok"))
    assert plan["kprobes"] is True and plan["kernel"] == "6.18.44"
    assert hooks_by(plan, "do_wp_page", "kprobe")["status"] == "attach"
    assert hooks_by(plan, "do_wp_page", "kretprobe")["status"] == "attach"
    wp_pfn = hooks_by(plan, "wp_pfn_shared", "kprobe")
    assert (wp_pfn["status"], wp_pfn["why"]) == ("inlined", WP_PFN_SHARED_INLINED)
    assert hooks_by(plan, "file_update_time", "kprobe")["status"] == "attach"
    assert hooks_by(plan, "xfs_filemap_pfn_mkwrite", "kprobe")["status"] == "attach"
    fuse = hooks_by(plan, "fuse_dax_pfn_mkwrite", "kprobe")
    assert fuse["status"] == "missing" and "module not loaded" in fuse["why"]
    assert hooks_by(plan, "fs_dax:dax_pte_fault_done", "tracepoint")["status"] == "attach"
    assert hooks_by(plan, "fs_dax:dax_pmd_fault_done", "tracepoint")["status"] == "missing"
    assert plan["offsets_error"] == "no kernel BTF"
    json.dumps(plan)


def test_plan_handlers_of_unmounted_filesystems_are_not_applicable():
    assert mounted_fstypes(data("mountinfo-dax.txt")) == \
        {"ext2", "ext4", "proc", "tmpfs", "virtiofs", "xfs"}
    plan = plan_618(kprobes=(True, "ok"), fstypes={"ext4", "proc"})
    fuse = [h for h in plan["hooks"] if h["hook"].startswith("fuse_")]
    assert fuse and all(h["status"] == "n/a" for h in fuse)
    assert "no fuse/virtiofs filesystem is mounted" in fuse[0]["why"]
    # A handler whose filesystem is mounted but which is absent stays missing
    # (virtiofs runs on fuse's DAX handlers).
    plan = plan_618(kprobes=(True, "ok"), fstypes={"virtiofs"})
    assert hooks_by(plan, "fuse_dax_pfn_mkwrite", "kprobe")["status"] == "missing"
    # Present handlers are attached whatever is mounted; generic ones never n/a.
    assert hooks_by(plan, "xfs_filemap_pfn_mkwrite", "kprobe")["status"] == "attach"
    assert handler_fstypes("filemap_page_mkwrite") == ()
    assert mounted_fstypes("36 35 0:40 / /mnt rw - fuse.sshfs host:/ rw\n") == {"fuse"}


def test_plan_without_kprobes_marks_every_kprobe_missing():
    plan = plan_618(kprobes=kprobe_support(config("config-6.18.txt")))
    assert plan["kprobes"] is False
    for hook in plan["hooks"]:
        if hook["kind"] != "tracepoint":
            assert hook["status"] == "missing"
            assert "CONFIG_KPROBES is not set" in hook["why"]
    assert hooks_by(plan, "do_wp_page", "kprobe")["in_kallsyms"] is True
    assert hooks_by(plan, "fs_dax:dax_pte_fault_done", "tracepoint")["status"] == "attach"


def test_plan_without_tracefs():
    plan = build_plan(Kallsyms(data("kallsyms-6.18.txt")), None, None,
                      kprobes=(True, "ok"), release="x")
    assert hooks_by(plan, "fs_dax:dax_writeback_one", "tracepoint")["why"] == \
        "tracefs is not mounted"


def test_kprobe_support(tmp_path):
    assert kprobe_support(config("config-6.18.txt"), str(tmp_path)) == \
        (False, "CONFIG_KPROBES is not set")
    assert kprobe_support(config("config-6.1.txt"), str(tmp_path / "kprobe"))[0] is False
    assert kprobe_support(config("config-6.1.txt"), str(tmp_path))[0] is True


# -- doctor checks ----------------------------------------------------------

def test_privileges():
    assert doctor.check_privileges(data("status-root.txt"), 0).ok
    user = doctor.check_privileges(data("status-user.txt"), 1000)
    assert not user.ok and user.blocking and "sudo" in user.fix
    caps = doctor.check_privileges(data("status-bpf-caps.txt"), 1000)
    assert "CAP_BPF yes, CAP_PERFMON yes, CAP_SYS_ADMIN no" in caps.detail


def test_kprobes_check_fix_line(tmp_path):
    check = doctor.check_kprobes(config("config-6.18.txt"), str(tmp_path))
    assert not check.ok and check.blocking
    assert check.fix == ("kprobes are not available on this kernel (CONFIG_KPROBES is not "
                         "set): run inside `pfntrace lab`, or on a kernel with kprobes")


def test_headers_check(tmp_path):
    missing = doctor.check_headers("6.18.44", str(tmp_path))
    assert not missing.ok and "linux-headers-6.18.44" in missing.fix
    (tmp_path / "6.1.0" / "build" / "include").mkdir(parents=True)
    assert doctor.check_headers("6.1.0", str(tmp_path)).ok


def test_bcc_check_detects_pypi_shadow():
    class PypiBcc:
        __file__ = "/usr/local/lib/python3.11/site-packages/bcc/__init__.py"

    class RealBcc(PypiBcc):
        BPF = object

    def importer(module):
        raise ImportError("No module named 'bcc'")

    assert "pip uninstall bcc" in doctor.check_bcc(lambda name: PypiBcc).fix
    assert doctor.check_bcc(lambda name: RealBcc).ok
    assert "python3-bpfcc" in doctor.check_bcc(importer).fix


def test_dax_mounts_from_mountinfo():
    assert doctor.dax_mounts(data("mountinfo-dax.txt")) == [
        ("/mnt/pmem-ext4", "ext4", "dax=always"),
        ("/mnt/pmem xfs", "xfs", "dax=inode"),
        ("/mnt/old-ext2", "ext2", "dax"),
        ("/mnt/virtiofs", "virtiofs", "dax=always"),
    ]


def test_no_dax_mount_is_reported_with_a_fix():
    checks = doctor.check_dax(data("mountinfo-dax.txt").splitlines()[0])
    assert len(checks) == 1 and not checks[0].ok and "pfntrace lab" in checks[0].fix


def test_dax_mount_check_uses_statx(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    check = doctor.check_dax_mount(str(tmp_path), "ext4", "dax=always")
    # tmp is not DAX here: statx says so, and the check explains why.
    assert not check.ok and "statx reports no DAX" in check.fix
    assert "f not DAX" in check.detail or "f DAX unknown" in check.detail


def test_hook_checks_collapse_without_kprobes():
    plan = plan_618(kprobes=(False, "CONFIG_KPROBES is not set"))
    checks = doctor.hook_checks(plan)
    assert checks[0].name == "function hooks" and "do_wp_page" in checks[0].detail
    assert [c.name for c in checks[1:]] == [
        "tracepoint fs_dax:dax_pte_fault_done", "tracepoint fs_dax:dax_pmd_fault_done",
        "tracepoint fs_dax:dax_writeback_one", "tracepoint fs_dax:dax_insert_pfn_mkwrite"]


def test_hook_checks_with_kprobes_pair_entry_and_return():
    checks = {c.name: c for c in doctor.hook_checks(plan_618(kprobes=(True, "ok")))}
    assert checks["kprobe+kretprobe do_wp_page"].ok
    assert checks["kprobe wp_pfn_shared"].ok  # inlined is fine
    assert not checks["kprobe+kretprobe fuse_dax_fault"].ok


def test_find_tracefs_from_mountinfo():
    line = "50 23 0:12 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw\n"
    assert find_tracefs(line).root == "/sys/kernel/tracing"
    assert find_tracefs(data("mountinfo-dax.txt")) is None


def test_plan_view_groups_by_meaning(capsys):
    from pfntrace.commands.record import print_plan
    from pfntrace.views import plan as plan_view

    plan = plan_618(kprobes=(True, "ok"), fstypes={"ext4", "xfs"})
    groups = {status: rows for status, _t, _s, rows in plan_view.grouped(plan["hooks"])}
    assert list(groups) == ["attach", "inlined", "n/a", "missing"]
    names = {status: [r[0] for r in rows] for status, rows in groups.items()}
    assert "do_wp_page" in names["attach"] and names["inlined"] == ["wp_pfn_shared"]
    assert set(names["n/a"]) >= {"fuse_dax_fault", "fuse_dax_pfn_mkwrite"}
    assert not set(names["n/a"]) & set(names["missing"])
    # One line per function: its kprobe and kretprobe together.
    assert ("do_wp_page", "kprobe+kretprobe", "in /proc/kallsyms") in groups["attach"]
    plan["clock"] = {"status": "read", "why": "tk_core in /proc/kallsyms"}
    print_plan(plan)
    out = capsys.readouterr().out
    assert "not applicable here (%d)" % len(names["n/a"]) in out
    assert "missing (%d)" % len(names["missing"]) in out and "kernel clock" in out
