"""Lab tests: their bodies run inside a QEMU guest on a real DAX mount.

On the host, every test in tests/lab is parametrized over the lab targets
(kernel x filesystem).  The first test of a target boots that guest once and
runs every selected test of tests/lab inside it (one boot, one bcc compile
per recording, instead of a boot per test); each host test then reports what
its body did in the guest: passed, failed with the guest's traceback, or
skipped with the guest's reason.

Inside the guest (PFNTRACE_IN_LAB=1) the same files run as plain tests, and
this plugin writes their outcomes to a JSON file in the shared results
folder after every test, and the id of the test running into another file.

Targets boot in parallel as soon as collection is done, PFNTRACE_LAB_PARALLEL
at a time (default: one per host CPU; each guest's TCG runs in one host
thread); the other tests run meanwhile, and the lab's host tests, ordered
last, report each target's outcomes once its guest is done.

A target survives a bad boot.  When the guest dies (kernel panic, hang) the
host keeps its console log in the boot's results folder, names the test
that was running, and boots again with only the tests that have no outcome
yet (the one that was running included).  A test that passes only after a
crashed boot passes, with a loud line on stderr (and in the summary) naming
it, the panic and the console log; one that crashes two boots in a row
fails with the console's oops, and the rest go on.
"""

import json
import os
import subprocess
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_GUEST = os.environ.get("PFNTRACE_IN_LAB") == "1"
ALL_TARGETS = ["6.1/ext4", "6.1/xfs", "6.12/ext4", "6.12/xfs", "newest/ext4", "newest/xfs"]
OUTCOMES = "lab-outcomes.json"
RUNNING = "lab-running"
# A guest's backstop; a hung guest is caught sooner, by STALL_S without a
# test starting or ending, or at once by its kernel's soft-lockup panic.
GUEST_TIMEOUT = 3600
STALL_S = 900
# Boots of one target at most: the first, plus retries after crashes.
MAX_BOOTS = 6


def targets():
    wanted = os.environ.get("PFNTRACE_LAB_TARGETS")
    return wanted.split(",") if wanted else ALL_TARGETS


def _target_id(target):
    return "lab-" + target.replace("/", "-")


# --- host side ---------------------------------------------------------------

# The filesystem a `lab_one_fs` test runs on, per kernel: each kernel once,
# each filesystem at least once; `lab_one_fs(other=True)` tests take the
# other one, so both of a kernel's guests carry a share.
ONE_FS = {"6.1": "ext4", "6.12": "xfs", "newest": "ext4"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab_kernels(*aliases): run only on these lab kernels (a test of what "
        "the other kernels do not have, e.g. 6.13+ multigrain timestamps)")
    config.addinivalue_line(
        "markers", "lab_on(target): run on this one target only (or, when it is not "
        "selected, on one that is: its kernel's first, else the first): a test of a "
        "command's surface (its options and exit codes, signals, top's screens, the "
        "exporter, the timeline) that no kernel's or filesystem's faults change")
    config.addinivalue_line(
        "markers", "lab_one_fs(other=False): run on one filesystem per lab kernel "
        "(ONE_FS, or the other one): a test of what a kernel does (doctor's checks, a "
        "lazy unmount, top's rules against record's) that judges no filesystem's faults")


def one_fs_targets(chosen, other=False):
    """Of the chosen targets, one per kernel: the one on its ONE_FS
    filesystem (other: on any other) when chosen, else the first chosen."""
    kept = {}      # kernel -> (target, whether it is the wanted filesystem)
    for t in chosen:
        kernel, fs = t.split("/")
        wanted = (fs == ONE_FS.get(kernel)) != other
        if kernel not in kept or wanted and not kept[kernel][1]:
            kept[kernel] = (t, wanted)
    keep = {t for t, _ in kept.values()}
    return [t for t in chosen if t in keep]


def on_target(chosen, target):
    """[target] when chosen; else one chosen target of its kernel, else
    the first chosen (a partial selection still runs the test)."""
    if target in chosen:
        return [target]
    kernel = target.split("/")[0]
    return [t for t in chosen if t.split("/")[0] == kernel][:1] or chosen[:1]


def pytest_generate_tests(metafunc):
    if IN_GUEST:
        return
    only = metafunc.definition.get_closest_marker("lab_kernels")
    chosen = [t for t in targets() if only is None or t.split("/")[0] in only.args]
    one_fs = metafunc.definition.get_closest_marker("lab_one_fs")
    if one_fs:
        chosen = one_fs_targets(chosen, **one_fs.kwargs)
    on = metafunc.definition.get_closest_marker("lab_on")
    if on:
        chosen = on_target(chosen, *on.args)
    metafunc.fixturenames.append("lab_target")
    metafunc.parametrize("lab_target", chosen, ids=[_target_id(t) for t in chosen],
                         scope="session")


class _Crash:
    """One guest that died: which boot, the test it was running, why."""

    def __init__(self, target, boot, test, reason, console, excerpt):
        self.target, self.boot, self.test = target, boot, test
        self.reason, self.console, self.excerpt = reason, console, excerpt

    def line(self):
        return "the %s guest died (boot %d) %s: %s; console log: %s" % (
            self.target, self.boot,
            "while running %s" % self.test if self.test else "outside any test",
            self.reason, self.console)


class _Guests:
    """Guest sessions per target: all started at the first lab test, run
    in background threads (a few at a time), outcomes cached."""

    def __init__(self, config, tmp_factory):
        self.config = config
        self.tmp_factory = tmp_factory
        self.results = {}
        self.threads = {}
        self.loud = []          # lines for stderr and the summary
        self._pending = []      # (loud, line) to print from the main thread
        self._lock = threading.Lock()

    def start(self, items):
        if not self.threads:
            self._start(items)

    def outcomes(self, target, items):
        self.start(items)
        self.threads[target].join()
        self._flush()
        return self.results[target]

    def _start(self, items):
        expected = {}
        for i in items:
            if _is_lab_item(i):
                expected.setdefault(i.callspec.params["lab_target"], []).append(_guest_key(i))
        slots = threading.Semaphore(_parallel(len(expected)))
        # Made here, once: threads that each made it first would each make
        # a numbered base folder of their own.
        self.tmp_factory.getbasetemp()

        def run(target, keys):
            with slots:
                try:
                    self.results[target] = self._session(target, keys)
                except Exception as e:  # a bug here must fail tests, not hang them
                    self.results[target] = {"__error__": "lab %s: %s: %s"
                                            % (target, type(e).__name__, e)}

        # Longest first (START_ORDER), the short ones fill in after them.
        for target, keys in sorted(expected.items(), key=_start_rank):
            t = threading.Thread(target=run, args=(target, keys), daemon=True,
                                 name="lab " + target)
            self.threads[target] = t
            t.start()

    def _say(self, line):
        """A line on the real stderr (not captured), and in the summary."""
        with self._lock:
            self.loud.append(line)
            self._pending.append((True, line))

    def _say_quietly(self, line):
        with self._lock:
            self._pending.append((False, line))

    def _flush(self):
        """Print the lines the guest threads queued: from the main thread,
        where pytest's capture can be stepped around."""
        with self._lock:
            pending, self._pending = self._pending, []
        capman = self.config.pluginmanager.getplugin("capturemanager")
        for loud, line in pending:
            if loud and capman is not None:
                with capman.global_and_fixture_disabled():
                    sys.stderr.write("\n%s\n" % line)
                    sys.stderr.flush()
            else:
                sys.stderr.write("\n%s\n" % line)

    def _session(self, target, expected):
        from pfntrace.lab import kernels

        kernel, _ = target.split("/")
        k = kernels.describe(kernel)
        if not k.usable:
            return {"__skip__": "lab kernel %s not installed: %s" % (kernel, "; ".join(k.missing))}
        outcomes, crashes, every, fruitless = {}, {}, [], 0
        for boot in range(1, MAX_BOOTS + 1):
            todo = [key for key in expected if key not in outcomes]
            if boot > 1 and not todo:
                break
            # The tests this host session selected that have no outcome yet:
            # all of them in the first boot (the one-boot fast path).
            paths = [os.path.join(REPO, key) for key in todo]
            got, crash = self._boot(target, boot, paths)
            if crash is None:
                if "__error__" in got:
                    if not outcomes:
                        return got
                    for key in todo:
                        outcomes[key] = {"outcome": "failed", "when": "setup",
                                         "detail": "boot %d: %s" % (boot, got["__error__"])}
                outcomes.update(got)
                break
            new = {key: v for key, v in got.items() if key != crash.test}
            outcomes.update(new)
            every.append(crash)
            self._say("LAB CRASH: " + crash.line())
            if crash.test is None:
                fruitless = 0 if new else fruitless + 1
                if fruitless >= 2:
                    break
                continue
            fruitless = 0
            crashes.setdefault(crash.test, []).append(crash)
            mine = crashes[crash.test]
            if len(mine) >= 2 and mine[-2].boot == boot - 1:
                outcomes[crash.test] = {"outcome": "failed", "when": "call", "detail": (
                    "the %s guest died in %d boots in a row while running this test:\n%s"
                    % (target, len(mine), "\n\n".join(
                        "%s\n%s" % (c.line(), c.excerpt) for c in mine[-2:])))}
        for key in expected:
            if key in outcomes:
                continue
            if key in crashes:
                c = crashes[key][-1]
                outcomes[key] = {"outcome": "failed", "when": "call", "detail":
                                 "%s\n%s" % (c.line(), c.excerpt)}
        for key, mine in crashes.items():
            got = outcomes.get(key, {})
            if got.get("outcome") == "passed":
                self._say("LAB TEST PASSED ONLY AFTER A CRASHED BOOT: %s on %s; %s"
                          % (key, target, mine[-1].line()))
        outcomes["__crashes__"] = every
        return outcomes

    def _boot(self, target, boot, paths):
        """One guest running the tests at paths: (outcomes, None) when its
        pytest ended, (outcomes so far, _Crash) when the guest died."""
        from pfntrace.lab import kernels, vm

        kernel, fs = target.split("/")
        out = str(self.tmp_factory.mktemp("%s-boot%d-" % (_target_id(target), boot)))
        log_path = os.path.join(out, "guest-pytest.log")
        console = os.path.join(out, "console.log")
        argv = [sys.executable, "-m", "pytest", *paths,
                "-p", "no:cacheprovider", "-q", "-rs", "--tb=short"]
        env = {"PFNTRACE_LAB_OUT": out, "PFNTRACE_LAB_BOOT": str(boot)}
        # PFNTRACE_ATTACH: every pfntrace command of the run attaches so
        # (a whole run under --attach kprobe, say).
        for name in ("PFNTRACE_LAB_CRASH", "PFNTRACE_LAB_CRASH_BOOTS", "PFNTRACE_LOAD_FAULTS",
                     "PFNTRACE_ATTACH", "PFNTRACE_LAB_PROOFS"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        cfg = vm.LabConfig(kernel=kernel, fs=fs, results=out, timeout=GUEST_TIMEOUT,
                           stall=STALL_S, env=env, console_log=console)
        result = lost = None
        with open(log_path, "wb") as log:
            try:
                result = vm.run(cfg, argv, stdout=log, stderr=log)
            except vm.LabGuestLost as e:
                lost = e
            except kernels.LabError as e:
                return {"__error__": "lab %s: %s" % (target, e)}, None
        with open(log_path, "rb") as f:
            tail = f.read().decode(errors="replace")[-4000:]
        outcomes = _read_json(os.path.join(out, OUTCOMES))
        if lost is not None:
            running = (_read_text(os.path.join(out, RUNNING)) or "").strip() or None
            text = _read_text(console) or ""
            return outcomes or {}, _Crash(target, boot, running, lost.reason or str(lost),
                                          console, vm.console_excerpt(text))
        slowest = max(((v.get("seconds", 0), k) for k, v in (outcomes or {}).items()),
                      default=(0, "-"))
        self._say_quietly("lab %s boot %d: %s, userspace at %.1f s, guest pytest %.1f s, "
                          "total %.1f s, exit %d; slowest test %.1f s (%s)"
                          % (target, boot, result.release, result.boot_s, result.command_s,
                             result.total_s, result.exit_code, slowest[0], slowest[1]))
        if outcomes is None:
            return {"__error__": "the guest pytest left no outcomes (exit %d):\n%s"
                    % (result.exit_code, tail)}, None
        outcomes["__log__"] = tail
        return outcomes, None



# The order targets start in: longest first, from their guest minutes in CI
# (2 guests on 2 cores, the tests as spread by lab_on/lab_one_fs: newest/xfs
# 26, 6.12/ext4 24, 6.1/xfs 22, newest/ext4 17, 6.12/xfs 16, 6.1/ext4 14),
# so the two CPUs end together (~60 min) instead of one waiting on a long
# guest started last.  Targets not listed start after, most tests first.
START_ORDER = ("newest/xfs", "6.12/ext4", "6.1/xfs", "newest/ext4", "6.12/xfs", "6.1/ext4")


def _start_rank(item):
    target, keys = item
    rank = START_ORDER.index(target) if target in START_ORDER else len(START_ORDER)
    return rank, -len(keys)


def _parallel(n_targets):
    wanted = os.environ.get("PFNTRACE_LAB_PARALLEL")
    # One guest per host CPU (each guest's TCG is one host thread).  A third
    # guest on CI's 2 cores made no more progress per minute: each of three
    # took 44-52 min where two took 30-38.
    n = int(wanted) if wanted and wanted.isdigit() else (os.cpu_count() or 1)
    return max(1, min(n, n_targets))


def _read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read_json(path):
    text = _read_text(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _guests_of(config):
    guests = getattr(config, "_lab_guests", None)
    if guests is None:
        guests = config._lab_guests = _Guests(config, config._tmp_path_factory)
    return guests


def pytest_collection_modifyitems(session, config, items):
    """The lab's host tests last: their guests boot as soon as collection
    is done (pytest_collection_finish), so the other tests (unit, host)
    run while the guests work, not before or after them."""
    if IN_GUEST:
        return
    lab = [i for i in items if _is_lab_item(i)]
    rest = [i for i in items if not _is_lab_item(i)]
    items[:] = rest + lab


def pytest_collection_finish(session):
    if IN_GUEST or getattr(session.config.option, "collectonly", False):
        return
    lab = [i for i in session.items if _is_lab_item(i)]
    if lab:
        _guests_of(session.config).start(lab)


def _is_lab_item(item):
    """A test run in a guest.  (A lab_kernels test none of whose kernels
    was selected has an empty parameter set, pytest's NotSet here, and is
    skipped: no guest.)"""
    return isinstance(getattr(getattr(item, "callspec", None), "params", {}).get("lab_target"),
                      str)


@pytest.fixture(scope="session")
def _lab_guests(request):
    return _guests_of(request.config)


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


def _guest_key(item):
    return os.path.relpath(os.path.join(REPO, _guest_nodeid(item)), REPO)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if IN_GUEST:
        return None
    guests = pyfuncitem._request.getfixturevalue("_lab_guests")
    target = pyfuncitem.callspec.params["lab_target"]
    outcomes = guests.outcomes(target, pyfuncitem.session.items)
    if "__skip__" in outcomes:
        pytest.skip(outcomes["__skip__"])
    if "__error__" in outcomes:
        pytest.fail(outcomes["__error__"], pytrace=False)
    key = _guest_key(pyfuncitem)
    got = outcomes.get(key)
    if got is None:
        crashes = outcomes.get("__crashes__") or []
        pytest.fail("%s did not run in the %s guest; %s" % (
            key, target, "\n".join("%s\n%s" % (c.line(), c.excerpt) for c in crashes[-2:])
            if crashes else "guest log tail:\n%s" % outcomes.get("__log__", "")),
            pytrace=False)
    if got["outcome"] == "skipped":
        pytest.skip("in the %s guest: %s" % (target, got["detail"]))
    if got["outcome"] != "passed":
        pytest.fail("in the %s guest:\n%s" % (target, got["detail"]), pytrace=False)
    return True


def pytest_terminal_summary(terminalreporter, config):
    guests = getattr(config, "_lab_guests", None)
    if IN_GUEST or guests is None or not guests.loud:
        return
    terminalreporter.section("lab guests that died", red=True, bold=True)
    for line in guests.loud:
        terminalreporter.write_line(line, red=True, bold=True)


# --- guest side --------------------------------------------------------------

_guest_outcomes = {}


def _guest_write(name, text):
    """Replace a file in the shared results folder (the host reads it even if
    this guest dies right after)."""
    out = os.environ.get("PFNTRACE_LAB_OUT")
    if not out:
        return
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def pytest_runtest_logstart(nodeid, location):
    if IN_GUEST:
        _guest_write(RUNNING, nodeid + "\n")
        _crash_on_request(nodeid)


def _crash_on_request(nodeid):
    """Test the host's crash handling with a real panic: PFNTRACE_LAB_CRASH
    (a part of a test id) panics the guest as that test starts, in boots up
    to PFNTRACE_LAB_CRASH_BOOTS (default 1)."""
    want = os.environ.get("PFNTRACE_LAB_CRASH")
    boots = int(os.environ.get("PFNTRACE_LAB_CRASH_BOOTS") or 1)
    if want and want in nodeid and int(os.environ.get("PFNTRACE_LAB_BOOT") or 1) <= boots:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("c")


def pytest_runtest_logfinish(nodeid, location):
    if IN_GUEST:
        _guest_write(RUNNING, "")


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
                                "when": report.when, "seconds": round(report.duration, 1)}
        # Guest node ids are relative to its rootdir, which is the repo.
        _guest_write(OUTCOMES, json.dumps(_guest_outcomes, indent=1))


def pytest_sessionfinish(session, exitstatus):
    if IN_GUEST:
        _guest_write(OUTCOMES, json.dumps(_guest_outcomes, indent=1))


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
