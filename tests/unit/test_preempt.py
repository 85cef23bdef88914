"""pfntrace/kernel/preempt.py: the kernel's preemption mode, and `auto`
leaving BPF trampolines out where it preempts (a trampoline program is
skipped while another task's run of it is preempted on the same CPU)."""

import pytest

from pfntrace.kernel.kconfig import Kconfig
from pfntrace.kernel.preempt import preemption
from pfntrace.probeplan import apply_attach

DEBIAN_73 = "#1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1 (2026-11-15)"


def _debugfs(tmp_path, text):
    p = tmp_path / "preempt"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,model,preemptible", [
    ("full (lazy) \n", "lazy", True),
    ("none (voluntary) full lazy\n", "voluntary", False),
    ("none voluntary (full) lazy\n", "full", True),
    ("(none) voluntary full\n", "none", False),
])
def test_the_scheduler_says_the_mode_in_force(tmp_path, text, model, preemptible):
    got = preemption(_debugfs(tmp_path, text), version=DEBIAN_73, cmdline="")
    assert (got["model"], got["preemptible"]) == (model, preemptible)
    assert "says " + model in got["why"]


def test_without_debugfs_a_dynamic_kernel_goes_by_preempt_then_its_config(tmp_path):
    missing = str(tmp_path / "none")
    lazy = Kconfig("CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_LAZY=y\n", source="cfg")
    voluntary = Kconfig("CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_VOLUNTARY=y\n")
    got = preemption(missing, version=DEBIAN_73, cmdline="root=/dev/vda preempt=full quiet",
                     config=voluntary)
    assert (got["model"], got["preemptible"]) == ("full", True)
    got = preemption(missing, version=DEBIAN_73, cmdline="root=/dev/vda", config=lazy)
    assert (got["model"], got["preemptible"]) == ("lazy", True) and "cfg" in got["why"]
    got = preemption(missing, version=DEBIAN_73, cmdline="", config=voluntary)
    assert got["preemptible"] is False
    got = preemption(missing, version=DEBIAN_73, cmdline="", config=None)
    assert got["model"] is None and got["preemptible"] is None


@pytest.mark.parametrize("version,preemptible", [
    ("#1 SMP PREEMPT_RT Debian", True), ("#1 SMP PREEMPT_LAZY", True),
    ("#1 SMP PREEMPT Tue", True), ("#1 SMP Debian 6.1.0", False)])
def test_without_debugfs_a_static_kernel_goes_by_uname(tmp_path, version, preemptible):
    got = preemption(str(tmp_path / "none"), version=version, cmdline="")
    assert got["preemptible"] is preemptible, got


def _plan(preemption_facts, kprobes=True):
    hooks = [{"hook": "do_wp_page", "kind": k, "status": "attach", "why": "in /proc/kallsyms"}
             for k in ("kprobe", "kretprobe")]
    return {"kprobes": kprobes, "hooks": hooks, "preemption": preemption_facts,
            "fentry": {"ok": True, "why": "x", "btf_funcs": ["do_wp_page"], "handlers": {}}}


def _mechs(plan):
    return [(h["mechanism"], h["attach_why"]) for h in plan["hooks"]]


def test_auto_takes_kprobes_where_the_kernel_preempts_and_fentry_is_still_fentry():
    lazy = {"model": "lazy", "preemptible": True, "why": "debugfs says lazy"}
    got = _mechs(apply_attach(_plan(lazy), "auto"))
    assert [m for m, _ in got] == ["kprobe", "kretprobe"]
    assert all(why.startswith("the kernel preempts (lazy): ") for _, why in got)
    # Asked for by name: trampolines, whose skipped runs are counted.
    assert [m for m, _ in _mechs(apply_attach(_plan(lazy), "fentry"))] == ["fentry", "fexit"]
    # Unknown mode: kprobes too (a count that can be trusted first).
    unknown = {"model": None, "preemptible": None, "why": "nothing says"}
    assert _mechs(apply_attach(_plan(unknown), "auto"))[0][0] == "kprobe"
    voluntary = {"model": "voluntary", "preemptible": False, "why": "debugfs"}
    assert _mechs(apply_attach(_plan(voluntary), "auto")) == [
        ("fentry", "BPF trampoline"), ("fexit", "BPF trampoline")]


def test_without_kprobes_a_preempting_kernel_still_gets_trampolines():
    lazy = {"model": "lazy", "preemptible": True, "why": "debugfs says lazy"}
    assert [m for m, _ in _mechs(apply_attach(_plan(lazy, kprobes=False), "auto"))] == [
        "fentry", "fexit"]
