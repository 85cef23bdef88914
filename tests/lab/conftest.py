"""Lab tests: their bodies run inside a QEMU guest on a real DAX mount.

On the host, every test in tests/lab is parametrized over the lab targets
(kernel x filesystem).  The first test of a target boots that guest once and
runs the whole tests/lab suite inside it (one boot, one bcc compile per
recording, instead of a boot per test); each host test then reports what
its body did in the guest: passed, failed with the guest's traceback, or
skipped with the guest's reason.

Inside the guest (PFNTRACE_IN_LAB=1) the same files run as plain tests, and
this plugin writes their outcomes to a JSON file in the shared results
folder.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_GUEST = os.environ.get("PFNTRACE_IN_LAB") == "1"
ALL_TARGETS = ["6.1/ext4", "6.1/xfs", "6.12/ext4", "6.12/xfs"]
OUTCOMES = "lab-outcomes.json"
GUEST_TIMEOUT = 1800


def targets():
    wanted = os.environ.get("PFNTRACE_LAB_TARGETS")
    return wanted.split(",") if wanted else ALL_TARGETS


def _target_id(target):
    return "lab-" + target.replace("/", "-")


# --- host side ---------------------------------------------------------------

def pytest_generate_tests(metafunc):
    if IN_GUEST:
        return
    metafunc.fixturenames.append("lab_target")
    metafunc.parametrize("lab_target", targets(), ids=[_target_id(t) for t in targets()],
                         scope="session")


class _Guests:
    """One guest session per target, booted on first use, outcomes cached."""

    def __init__(self, tmp_factory):
        self.tmp_factory = tmp_factory
        self.results = {}

    def outcomes(self, target):
        if target not in self.results:
            self.results[target] = self._boot(target)
        return self.results[target]

    def _boot(self, target):
        from pfntrace.lab import kernels, vm

        kernel, fs = target.split("/")
        k = kernels.describe(kernel)
        if not k.usable:
            return {"__skip__": "lab kernel %s not installed: %s" % (kernel, "; ".join(k.missing))}
        out = str(self.tmp_factory.mktemp(_target_id(target)))
        log_path = os.path.join(out, "guest-pytest.log")
        argv = [sys.executable, "-m", "pytest", os.path.join(REPO, "tests", "lab"),
                "-p", "no:cacheprovider", "-q", "-rs", "--tb=short"]
        cfg = vm.LabConfig(kernel=kernel, fs=fs, results=out, timeout=GUEST_TIMEOUT,
                           env={"PFNTRACE_LAB_OUT": out})
        with open(log_path, "wb") as log:
            try:
                result = vm.run(cfg, argv, stdout=log, stderr=log)
            except kernels.LabError as e:
                return {"__error__": "lab %s: %s" % (target, e)}
        with open(log_path, "rb") as f:
            tail = f.read().decode(errors="replace")[-4000:]
        sys.stderr.write("\nlab %s: %s, userspace at %.1f s, guest pytest %.1f s, total %.1f s, "
                         "exit %d\n" % (target, result.release, result.boot_s, result.command_s,
                                        result.total_s, result.exit_code))
        try:
            with open(os.path.join(out, OUTCOMES)) as f:
                outcomes = json.load(f)
        except (OSError, ValueError):
            return {"__error__": "the guest pytest left no outcomes (exit %d):\n%s"
                    % (result.exit_code, tail)}
        outcomes["__log__"] = tail
        return outcomes


@pytest.fixture(scope="session")
def _lab_guests(tmp_path_factory):
    return _Guests(tmp_path_factory)


def _guest_nodeid(item):
    """The id the same test has inside the guest, where it is not parametrized
    over targets."""
    nodeid = item.nodeid
    tid = _target_id(item.callspec.params["lab_target"])
    for form in ("[%s]" % tid, "-%s]" % tid, "[%s-" % tid):
        if form in nodeid:
            return nodeid.replace(form, {"[%s]" % tid: "", "-%s]" % tid: "]",
                                          "[%s-" % tid: "["}[form])
    return nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if IN_GUEST:
        return None
    guests = pyfuncitem._request.getfixturevalue("_lab_guests")
    target = pyfuncitem.callspec.params["lab_target"]
    outcomes = guests.outcomes(target)
    if "__skip__" in outcomes:
        pytest.skip(outcomes["__skip__"])
    if "__error__" in outcomes:
        pytest.fail(outcomes["__error__"], pytrace=False)
    key = os.path.relpath(os.path.join(REPO, _guest_nodeid(pyfuncitem)), REPO)
    got = outcomes.get(key)
    if got is None:
        pytest.fail("%s did not run in the %s guest; guest log tail:\n%s"
                    % (key, target, outcomes.get("__log__", "")), pytrace=False)
    if got["outcome"] == "skipped":
        pytest.skip("in the %s guest: %s" % (target, got["detail"]))
    if got["outcome"] != "passed":
        pytest.fail("in the %s guest:\n%s" % (target, got["detail"]), pytrace=False)
    return True


# --- guest side --------------------------------------------------------------

_guest_outcomes = {}


def pytest_runtest_logreport(report):
    if not IN_GUEST:
        return
    key = report.nodeid
    prev = _guest_outcomes.get(key)
    if report.when == "call" or report.outcome != "passed":
        if prev and prev["outcome"] != "passed":
            return  # keep the first failure (setup before teardown)
        detail = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            detail = report.longrepr[2]
        elif report.failed:
            detail = str(report.longrepr)[-6000:]
        _guest_outcomes[key] = {"outcome": report.outcome, "detail": detail,
                                "when": report.when}


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("PFNTRACE_LAB_OUT")
    if IN_GUEST and out:
        # Guest node ids are relative to its rootdir, which is the repo.
        with open(os.path.join(out, OUTCOMES), "w") as f:
            json.dump(_guest_outcomes, f, indent=1)


# --- fixtures for the tests' bodies (guest) ------------------------------------

@pytest.fixture
def dax_dir(request):
    """A fresh folder on the guest's DAX mount for one test."""
    if not IN_GUEST:
        return None
    mount = os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax")
    path = os.path.join(mount, request.node.name.replace("/", "_").replace("[", "_")
                        .replace("]", ""))
    subprocess.run(["rm", "-rf", path], check=True)
    os.makedirs(path)
    return path
