"""`pfntrace doctor` on this host: the real negative environment (a kernel
without kprobes and without headers), run as a user would run it."""

import json
import os
import subprocess
import sys

import pytest

from pfntrace.kernel.kconfig import KconfigError, load as load_kconfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_doctor(*args):
    return subprocess.run([sys.executable, "-m", "pfntrace", "doctor", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def no_kprobes():
    try:
        has_kprobes = load_kconfig().enabled("CONFIG_KPROBES")
    except KconfigError:
        has_kprobes = os.path.isdir("/sys/bus/event_source/devices/kprobe")
    if has_kprobes:
        pytest.skip("this machine unexpectedly has kprobes: not the negative environment")


def test_doctor_json_reports_kprobes_and_headers_missing(no_kprobes):
    result = run_doctor("--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["record_can_run"] is False
    assert not checks["kprobes"]["ok"] and checks["kprobes"]["blocking"]
    assert "pfntrace lab" in checks["kprobes"]["fix"]
    release = os.uname().release
    if not os.path.isdir("/lib/modules/%s/build/include" % release):
        assert not checks["kernel headers"]["ok"]


def test_doctor_table_names_the_blocker(no_kprobes):
    result = run_doctor()
    assert result.returncode == 1, result.stderr
    assert "kprobes are not available on this kernel" in result.stdout
    assert "cannot run here" in result.stdout


def test_record_blocker_is_one_line(no_kprobes):
    from pfntrace.doctor import record_blocker

    blocker = record_blocker()
    assert blocker and "\n" not in blocker


@pytest.mark.parametrize("cmd", [["record", "-o", "x.pft", "--", "true"],
                                 ["check", "--", "true"],
                                 ["top", "--interval", "1"]])
def test_commands_stop_with_doctors_reason(no_kprobes, cmd, tmp_path):
    # Not a traceback: the same one line doctor gives as the fix, and no file.
    result = subprocess.run([sys.executable, "-m", "pfntrace", *cmd], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "pfntrace: kprobes are not available on this kernel (CONFIG_KPROBES is not set): "
        "run inside `pfntrace lab`, or on a kernel with kprobes"]
    assert list(tmp_path.iterdir()) == []
