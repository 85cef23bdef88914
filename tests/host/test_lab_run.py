"""`pfntrace lab run` as a user runs it: real guests, real exit codes, and
the failure modes the lab promises to report in one line."""

import os
import subprocess
import sys
import time

import pytest

from pfntrace.lab import kernels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# How a guest dies when QEMU TCG lets a vCPU run a stale int3 of the kernel's
# live text patching (seen at uptime 2 s, before anything of pfntrace ran:
# "Oops: int3" in sched_clock_idle_wakeup_event).  The emulator's, not the
# test's: boot once more, and say so.  (sysrq's crash reads differently.)
EMULATOR_PANIC = "Kernel panic - not syncing: Fatal exception in interrupt"


def lab(*args, timeout=300, cwd=None):
    argv = [sys.executable, "-m", "pfntrace", "lab", "run", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO)
    if p.returncode != 0 and EMULATOR_PANIC in p.stderr:
        sys.stderr.write("\nLAB CRASH (host test, booting again): %s\n" % p.stderr.strip())
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           cwd=cwd or REPO)
    return p


@pytest.fixture(scope="module", autouse=True)
def lab_kernels():
    missing = [a for a in kernels.LAB_KERNELS if not kernels.describe(a).usable]
    if missing:
        pytest.skip("lab kernels not installed: %s (run scripts/setup.sh)" % ", ".join(missing))


def qemus(marker):
    """Pids of lab QEMUs whose command line names marker (this test's results
    folder: other runs on the machine may boot guests meanwhile).  Read from
    /proc: procps is not on a minimal system."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"qemu-system-x86_64" and any(
                marker.encode() in a for a in argv):
            found.add(pid)
    return found


def test_stat_on_the_xfs_dax_mount_and_boot_time():
    p = lab("--kernel", "6.12", "--fs", "xfs", "--", "stat", "-f", "/mnt/dax")
    assert p.returncode == 0, p.stderr
    assert "Type: xfs" in p.stdout
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("lab: 6.12.") and "xfs on memmap pmem: userspace at" in line


@pytest.mark.parametrize("kernel", sorted(kernels.LAB_KERNELS))
def test_exit_code_and_streams_come_back(kernel, tmp_path):
    p = lab("--kernel", kernel, "--results", str(tmp_path), "-q", "--",
            "sh", "-c", "echo out; echo err >&2; uname -r > %s/release; exit 5" % tmp_path)
    assert p.returncode == 5
    assert p.stdout == "out\n"
    assert p.stderr == "err\n"
    release = (tmp_path / "release").read_text().strip()
    assert release == kernels.describe(kernel).release


def test_false_exits_1():
    assert lab("-q", "--", "false").returncode == 1


def test_missing_command_is_one_line_127():
    p = lab("--", "no-such-command-xyz")
    assert p.returncode == 127
    assert p.stderr.strip() == "pfntrace: lab: command not found in the guest: no-such-command-xyz"


def test_hang_is_killed_at_the_time_limit_and_leaves_no_qemu(tmp_path):
    start = time.monotonic()
    # 120 s: well past boot and set-up (~6 s; a minute on a machine loaded
    # with other guests), so the time limit strikes while the command runs.
    p = lab("--timeout", "120", "--results", str(tmp_path), "--", "sleep", "6000")
    assert p.returncode == 2
    assert time.monotonic() - start < 600       # killed at the limit, not at the end
    assert p.stderr.strip().splitlines() == [
        "pfntrace: lab: the command did not finish within 120 s in the 6.12 guest; killed"]
    assert qemus("path=%s," % tmp_path) == set()


def test_a_guest_without_progress_is_killed_long_before_its_timeout(tmp_path):
    # The lab tests' guard against a silent hang: nothing written to the
    # results folder and nothing on the console for `stall` seconds.
    from pfntrace.lab import vm

    cfg = vm.LabConfig(kernel="6.12", results=str(tmp_path), timeout=3600, stall=60,
                       console_log=str(tmp_path / "console.log"))
    with open(os.devnull, "wb") as sink:
        with pytest.raises(vm.LabGuestLost) as lost:
            vm.run(cfg, ["sleep", "3000"], stdout=sink, stderr=sink)
    assert str(lost.value) == (
        "the command made no progress for 60 s in the 6.12 guest; killed")
    assert lost.value.reason.startswith("hung (no progress for 60 s)")
    assert qemus("path=%s," % tmp_path) == set()


def test_kernel_panic_is_reported():
    p = lab("--kernel", "6.1", "--", "sh", "-c", "echo c > /proc/sysrq-trigger")
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Kernel panic - not syncing: sysrq triggered crash" in err[0]


def test_bad_options_are_one_line():
    p = lab("--size", "12", "--", "true")
    assert p.returncode == 2 and p.stderr.strip() == (
        "pfntrace: lab: --size wants a size of at least 64M, like 512M or 1G")
    p = lab("--results", "/no/such/dir", "--", "true")
    assert p.returncode == 2 and "results folder /no/such/dir does not exist" in p.stderr
    p = lab()
    assert p.returncode == 2 and "no command given" in p.stderr


def test_nvdimm_pmem_is_made_fsdax():
    p = lab("--kernel", "6.1", "--pmem", "nvdimm", "--fs", "xfs", "-q", "--",
            "cat", "/sys/block/pmem0/queue/dax")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1"


def test_lab_list_names_every_kernel():
    p = subprocess.run([sys.executable, "-m", "pfntrace", "lab", "list"], capture_output=True,
                       text=True, cwd=REPO)
    assert p.returncode == 0
    assert [l.split()[0] for l in p.stdout.splitlines()] == ["6.1", "6.12", "newest"]
    assert all(" usable " in l for l in p.stdout.splitlines())


def test_host_tmp_is_visible_at_its_path(tmp_path):
    # CI clones the project under /tmp: the guest must see it there.
    script = tmp_path / "hello.sh"
    script.write_text("echo hello from $(uname -r)\n")
    p = lab("-q", "--", "sh", str(script))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("hello from 6.12.")


def test_power_off_falls_back_when_busybox_is_gone(tmp_path):
    # finish() never returns: without the lab's busybox (no poweroff) the
    # guest still stops (sysrq o, or PID 1 exits) and the exit code comes
    # back.  A guest that hung instead would end at --timeout, as a one-line
    # error with exit 2, not 3 (the limit is generous: a loaded machine).
    p = lab("--timeout", "600", "-q", "--", "sh", "-c", "rm /run/pft/busybox; exit 3")
    assert p.returncode == 3, p.stderr


def test_a_failed_setup_step_never_runs_the_command(tmp_path, monkeypatch):
    from pfntrace.lab import vm

    # pfntrace's interpreter, as the guest is told, fails the DAX check.
    monkeypatch.setattr(vm, "guest_python", lambda: "/bin/false")
    cfg = vm.LabConfig(kernel="6.12", results=str(tmp_path), timeout=120)
    with pytest.raises(kernels.LabError, match="the DAX check failed"):
        vm.run(cfg, ["sh", "-c", "touch %s/ran" % tmp_path])
    assert not (tmp_path / "ran").exists()
