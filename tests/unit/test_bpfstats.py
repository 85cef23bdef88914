"""pfntrace/bpfstats.py on this machine's kernel: BPF_ENABLE_STATS gives an
fd that holds run-time statistics on, and close() gives it back."""

import os

import pytest

from pfntrace import bpfstats


class _NoPrograms:
    def programs(self):
        return {}


def _stats_fds():
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) == "anon_inode:bpf-stats":
                fds.add(int(fd))
        except OSError:
            pass
    return fds


def test_enable_stats_holds_an_fd_until_close():
    if os.geteuid() != 0:
        pytest.skip("BPF_ENABLE_STATS needs CAP_SYS_ADMIN: not root")
    if os.uname().machine not in bpfstats.BPF_SYSCALL:
        pytest.skip("no bpf(2) number known for %s" % os.uname().machine)
    with open(bpfstats.SYSCTL) as f:
        sysctl = f.read()
    before = _stats_fds()
    s = bpfstats.BpfStats(_NoPrograms())
    try:
        assert s.enabled
        assert len(_stats_fds() - before) == 1
        assert s.run_times() == {}
    finally:
        s.close()
    assert _stats_fds() == before and not s.enabled
    s.close()   # twice: harmless
    with open(bpfstats.SYSCTL) as f:
        assert f.read() == sysctl   # the sysctl was never touched


@pytest.mark.parametrize("name", ["record", "top"])
def test_statistics_are_off_unless_asked_and_no_bpf_stats_still_parses(name):
    """Both commands share one option: off by default (the statistics cost
    every BPF program on the machine), --bpf-stats turns them on, and
    --no-bpf-stats (top's switch when they were on by default) is still
    understood."""
    from pfntrace.cli import main

    cmd = main.get_command(None, name)
    for argv, want in (([], False), (["--bpf-stats"], True), (["--no-bpf-stats"], False)):
        ctx = cmd.make_context(name, argv + ["--", "true"] if name == "record" else argv)
        assert ctx.params["bpf_stats"] is want, (argv, ctx.params)


def test_skipped_runs_come_from_each_programs_recursion_misses(tmp_path):
    """fdinfo's recursion_misses, per program; a program whose fdinfo has
    none (an older kernel) or is gone is left out."""
    (tmp_path / "3").write_text("pos:\t0\nprog_type:\t26\nrun_time_ns:\t0\nrun_cnt:\t0\n"
                                "recursion_misses:\t10157\nverified_insns:\t900\n")
    (tmp_path / "4").write_text("pos:\t0\nprog_type:\t26\nrecursion_misses:\t0\n")
    (tmp_path / "5").write_text("pos:\t0\nprog_type:\t2\n")
    got = bpfstats.fdinfo_skipped({"kretfunc__do_wp_page": 3, "kfunc__do_wp_page": 4,
                                   "old": 5, "gone": 6}, proc=str(tmp_path))
    assert got == {"kretfunc__do_wp_page": 10157, "kfunc__do_wp_page": 0}
