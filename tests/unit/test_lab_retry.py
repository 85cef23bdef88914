"""The lab plugin's survival of a bad boot (tests/lab/conftest.py), with
scripted boots instead of guests: which tests each boot runs, what passes,
what fails, what is said out loud."""

import importlib.util
import os
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "lab_conftest", os.path.join(REPO, "tests", "lab", "conftest.py"))
lab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab)

TESTS = ["tests/lab/t.py::a", "tests/lab/t.py::b", "tests/lab/t.py::c"]
PASS = {"outcome": "passed", "detail": "", "when": "call"}


class Scripted(lab._Guests):
    """Boots that follow a script: per boot, (tests that pass, crashed test or
    'outside', or None for a clean end)."""

    def __init__(self, script):
        config = types.SimpleNamespace(
            pluginmanager=types.SimpleNamespace(getplugin=lambda name: None))
        super().__init__(config, None)
        self.script = list(script)
        self.paths = []
        self.said = []

    def _say(self, line):
        self.said.append(line)
        self.loud.append(line)

    def _boot(self, target, boot, paths):
        self.paths.append([os.path.relpath(p, REPO) for p in paths])
        passed, crashed = self.script.pop(0)
        got = {k: dict(PASS) for k in passed}
        if crashed is None:
            return got, None
        test = None if crashed == "outside" else crashed
        return got, lab._Crash(target, boot, test, "Kernel panic - not syncing: boom",
                               "/r/boot%d/console.log" % boot, "[ 1.0] BUG: oops at %d" % boot)


@pytest.fixture(autouse=True)
def usable_kernel(monkeypatch):
    from pfntrace.lab import kernels
    monkeypatch.setattr(kernels, "describe",
                        lambda k: types.SimpleNamespace(usable=True, missing=[]))


def test_one_boot_when_nothing_crashes():
    g = Scripted([(TESTS, None)])
    out = g._session("6.12/xfs", TESTS)
    assert g.paths == [TESTS]
    assert all(out[k]["outcome"] == "passed" for k in TESTS) and not g.said


def test_a_crash_reboots_with_what_is_left_and_says_so():
    g = Scripted([(TESTS[:1], TESTS[1]), (TESTS[1:], None)])
    out = g._session("6.12/xfs", TESTS)
    assert g.paths == [TESTS, TESTS[1:]]
    assert all(out[k]["outcome"] == "passed" for k in TESTS)
    assert len(g.said) == 2
    assert g.said[0].startswith("LAB CRASH: the 6.12/xfs guest died (boot 1) while running "
                                "tests/lab/t.py::b: Kernel panic - not syncing: boom; "
                                "console log: /r/boot1/console.log")
    assert g.said[1].startswith("LAB TEST PASSED ONLY AFTER A CRASHED BOOT: tests/lab/t.py::b")
    assert "/r/boot1/console.log" in g.said[1]


def test_two_crashes_in_a_row_fail_that_test_and_the_rest_go_on():
    g = Scripted([(TESTS[:1], TESTS[1]), ([], TESTS[1]), (TESTS[2:], None)])
    out = g._session("6.12/xfs", TESTS)
    assert g.paths == [TESTS, TESTS[1:], TESTS[2:]]
    assert out[TESTS[0]]["outcome"] == out[TESTS[2]]["outcome"] == "passed"
    bad = out[TESTS[1]]
    assert bad["outcome"] == "failed"
    assert "died in 2 boots in a row" in bad["detail"]
    assert "BUG: oops at 1" in bad["detail"] and "BUG: oops at 2" in bad["detail"]
    assert "/r/boot2/console.log" in bad["detail"]


def test_crashes_of_different_tests_each_get_their_retry():
    g = Scripted([([], TESTS[0]), ([TESTS[0]], TESTS[1]), (TESTS[1:], None)])
    out = g._session("6.1/ext4", TESTS)
    assert all(out[k]["outcome"] == "passed" for k in TESTS)
    assert len([l for l in g.said if l.startswith("LAB TEST PASSED ONLY")]) == 2


def test_a_guest_that_dies_outside_any_test_without_progress_gives_up():
    g = Scripted([(TESTS[:1], "outside"), ([], "outside"), ([], "outside")])
    out = g._session("6.12/ext4", TESTS)
    assert len(g.paths) == 3          # progress in boot 1, none in boots 2 and 3
    assert out[TESTS[0]]["outcome"] == "passed"
    assert TESTS[1] not in out and len(out["__crashes__"]) == 3


CONSOLE = """\
[    3.1] Run /init as init process
[  200.5] BUG: kernel NULL pointer dereference, address: 0000000000000008
[  200.5] #PF: supervisor read access in kernel mode
[  200.6] RIP: 0010:some_function+0x1a/0x40
[  200.7] Kernel panic - not syncing: Fatal exception in interrupt
[  200.8] Kernel Offset: disabled
"""


def test_console_reason_and_excerpt():
    from pfntrace.lab import vm

    assert vm.console_reason(CONSOLE) == "Kernel panic - not syncing: Fatal exception in interrupt"
    ex = vm.console_excerpt(CONSOLE).splitlines()
    assert ex[0].endswith("BUG: kernel NULL pointer dereference, address: 0000000000000008")
    assert "RIP: 0010:some_function+0x1a/0x40" in ex[2] and len(ex) == 5
    assert vm.console_excerpt("[ 1.0] a\n[ 2.0] b\n") == "[ 1.0] a\n[ 2.0] b"
    assert vm.console_reason("[ 2.0] last words\n") == "last words"
