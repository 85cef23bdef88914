"""`pfntrace top` on a real DAX mount: the screen (in tmux) and the text
snapshots (stdout not a terminal) must show exactly the workload's faults.

read-then-write of N pages: N write-protect faults, all through
->pfn_mkwrite, none first-touch, none PMD; verdicts judged in the kernel.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess

import pytest

from guest import MOUNT, PFNTRACE, WORKLOAD, run, wait_for

pytestmark = pytest.mark.lab_on("6.1/xfs")   # the command's surface (conftest.py)

N = 23
ATTACH_TIMEOUT = 300     # bcc compile and attach under TCG, on a loaded host
COUNT_TIMEOUT = 30


def _file_row(lines, path):
    """The fields of the files-table line ending in path (last one wins):
    FLT/S TOTAL PFN PAGE PMD TOUCH UPDATED CURRENT MISSED NO_NOTIF P50 P99 LAST PATH."""
    row = None
    for line in lines:
        fields = line.split()
        if len(fields) == 14 and fields[-1] == path:
            row = fields
    if row is None:
        return None
    names = ("rate", "total", "pfn", "page", "pmd", "touch", "updated", "current",
             "missed", "no_notifier")
    out = {n: int(v) if n != "rate" else v for n, v in zip(names, row[:10])}
    out["path"] = row[-1]
    return out


def _check_row(row):
    assert row["total"] == N, row
    assert row["pfn"] == N, row
    assert (row["page"], row["pmd"], row["touch"], row["no_notifier"]) == (0, 0, 0, 0), row
    assert row["missed"] == 0, row
    assert row["updated"] + row["current"] == N, row


def _screen_table(screen, first):
    """{column: [cells]} of the table on a tmux screen whose column names
    start with `first` (FLT/S: files, PID: processes); the columns shown
    depend on the terminal's width."""
    lines = screen.splitlines()
    heads = [n for n, line in enumerate(lines) if line.split()[:1] == [first]]
    if not heads:
        return None
    names = lines[heads[0]].split()
    rows = []
    for line in lines[heads[0] + 2:]:
        fields = line.split()
        if len(fields) != len(names):
            break
        rows.append(fields)
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


class Tmux:
    def __init__(self, workdir):
        self.env = dict(os.environ, TERM="xterm-256color", TMUX_TMPDIR=workdir)
        self.env.pop("TMUX", None)
        self.name = "pft-top"

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", "pfntrace-test"] + list(args), env=self.env,
                              capture_output=True, text=True, check=check, timeout=30)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", self.name).stdout

    def keys(self, *keys):
        self.tmux("send-keys", "-t", self.name, *keys)

    def kill(self):
        self.tmux("kill-server", check=False)


# One `top` in a real terminal (tmux) serves the two screen tests below: a
# top costs a bcc compile, ~30 s of a guest under TCG.  It runs in a wide
# terminal first (the keys), then in the common 80x24 one (resized), each
# phase with a workload of its own; each test asserts on its phase.
_session = {}


def _top_in_tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    if _session:
        return _session
    where = os.path.join(MOUNT, "top-tmux")
    run(["rm", "-rf", where])
    os.makedirs(where)
    wide, small = os.path.join(where, "rtw"), os.path.join(where, "rtw80")
    status = os.path.join(where, "top-exit")
    t = Tmux(where)
    # The shell records top's exit code, then keeps the pane for capture.
    argv = PFNTRACE + ["top", "--mount", MOUNT, "--interval", "0.5"]
    t.tmux("new-session", "-d", "-s", t.name, "-x", "250", "-y", "60",
           "%s; echo $? > %s; sleep 600"
           % (" ".join(shlex.quote(a) for a in argv), shlex.quote(status)))
    try:
        wait_for("top's header on screen", lambda: "write faults:" in t.screen(), ATTACH_TIMEOUT)
        w = run(WORKLOAD + ["read-then-write", wide, str(N)])
        assert w.returncode == 0, w.stderr
        row = wait_for("the workload's file on screen with %d faults" % N,
                       lambda: (lambda r: r if r and r["total"] >= N else None)(
                           _file_row(t.screen().splitlines(), wide)), COUNT_TIMEOUT)
        _session.update(wide_path=wide, wide_row=row, wide_screen=t.screen())
        # Keys: sort by total, filter by a name nothing has, then clear it.
        t.keys("s")
        wait_for("sort column 'total'", lambda: "sort: total" in t.screen(), 10)
        t.keys("f", "zzz-no-such", "Enter")
        wait_for("the filter applied", lambda: "filter: zzz-no-such" in t.screen(), 10)
        _session["filtered_row"] = _file_row(t.screen().splitlines(), wide)
        t.keys("f", "Enter")
        wait_for("the filter cleared", lambda: "filter:" not in t.screen(), 10)

        t.tmux("resize-window", "-t", t.name, "-x", "80", "-y", "24")
        w = run(WORKLOAD + ["read-then-write", small, str(N)])
        assert w.returncode == 0, w.stderr

        def counted():
            # One screen on which both tables have counted every fault (a
            # read can fall between a fault's file and process counters).
            screen = t.screen()
            files = _screen_table(screen, "FLT/S")
            procs = _screen_table(screen, "PID")
            if files and small in files.get("PATH", ()) and \
                    files["TOTAL"][files["PATH"].index(small)] == str(N) and \
                    procs and str(N) in procs["TOTAL"]:
                return files, procs, screen
            return None

        _session["small"] = (small,) + wait_for(
            "the file and its process on the 80x24 screen with %d faults" % N, counted,
            COUNT_TIMEOUT)
        t.keys("q")
        wait_for("top to quit on q", lambda: os.path.exists(status) and open(status).read(), 20)
        with open(status) as f:
            _session["exit"] = f.read().strip()
    finally:
        t.kill()
    return _session


def test_top_screen_shows_the_faults():
    got = _top_in_tmux()
    _check_row(got["wide_row"])
    screen = got["wide_screen"]
    # The header says how many probes are BPF trampolines (--attach auto).
    from pfntrace.commands.common import build_plan
    fentry = sum(1 for h in build_plan(counting=True)["hooks"]
                 if h.get("mechanism") in ("fentry", "fexit"))
    assert ("attached (%d fentry)" % fentry in screen) if fentry else \
        "fentry" not in screen, screen
    # Per-process table; the filter hid the file; q quits with 0.
    assert "processes" in screen and "python" in screen, screen
    assert got["filtered_row"] is None
    assert got["exit"] == "0"


@pytest.mark.parametrize("bpf_stats", [False, True], ids=["default", "bpf-stats"])
def test_top_plain_snapshots_when_not_a_tty(dax_dir, bpf_stats):
    path = os.path.join(dax_dir, "rtw")
    out_path = os.path.join(dax_dir, "top.txt")
    argv = PFNTRACE + ["top", "--mount", MOUNT, "--interval", "0.5"] + \
        (["--bpf-stats"] if bpf_stats else [])
    with open(out_path, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True)
    try:
        def text():
            with open(out_path) as f:
                return f.read()

        wait_for("the first snapshot", lambda: "write faults" in text() or proc.poll() is not None,
              ATTACH_TIMEOUT)
        assert proc.poll() is None, proc.stderr.read()
        w = run(WORKLOAD + ["read-then-write", path, str(N)])
        assert w.returncode == 0, w.stderr
        row = wait_for("a snapshot with the file at %d faults" % N,
                    lambda: (lambda r: r if r and r["total"] >= N else None)(
                        _file_row(text().splitlines(), path)), COUNT_TIMEOUT)
        _check_row(row)
        # Plain text: no escape sequences, one header per snapshot.
        body = text()
        assert "\x1b" not in body
        assert body.count("write faults") >= 2
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=20)
        err = proc.stderr.read()
        assert status == 0, err
        # The kernel's BPF run-time statistics cost every program run two
        # clock reads: on only when asked, and then the do_wp_page program
        # ran at least once per fault top counted.
        line = [x for x in err.splitlines() if "BPF run time per probe run" in x]
        if not bpf_stats:
            assert line == []
        else:
            assert len(line) == 1, line
            runs = re.findall(r"(?:kfunc__do_wp_page|wp_entry) [0-9.]+ µs x (\d+)", line[0])
            assert len(runs) == 1 and int(runs[0]) >= row["total"], line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_top_80x24():
    """The common terminal: in a real 80x24 tmux the screen names the file
    and the process, counts the workload's faults, and no cell is cut."""
    path, files, procs, screen = _top_in_tmux()["small"]
    lines = screen.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80, screen
    assert "…" not in screen and "..." not in screen, screen
    i = files["PATH"].index(path)
    assert files["MISSED"][i] == "0" and files["NO_NOTIF"][i] == "0", screen
    if "UPDATED" in files and "CURRENT" in files:
        assert int(files["UPDATED"][i]) + int(files["CURRENT"][i]) == N, screen
    assert procs["COMM"][procs["TOTAL"].index(str(N))] == "python", screen
    # Handlers of filesystems not mounted in the guest (fuse, ext2) are
    # "n/a" in the header, not missing.
    assert "n/a" in lines[0] + lines[1], screen
