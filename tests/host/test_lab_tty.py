"""`pfntrace lab run` in a real terminal: the guest command sees the host
terminal's size (a 120x34 tmux window, not the serial line's 80x24
default)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from pfntrace.lab import kernels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_guest_command_gets_the_host_terminal_size(tmp_path):
    if not kernels.describe("6.12").usable:
        pytest.skip("lab kernel 6.12 is not installed (run scripts/setup.sh)")
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    env = dict(os.environ, TERM="xterm-256color", TMUX_TMPDIR=str(tmp_path))
    env.pop("TMUX", None)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    done = tmp_path / "done"
    # The guest prints what its stdout's tty says; the pane is kept for capture.
    probe = "import os; s = os.get_terminal_size(1); print('SIZE', s.columns, s.lines)"
    cmd = ("cd %s && %s -m pfntrace lab run -q --kernel 6.12 -- %s -c \"%s\"; "
           "echo $? > %s; sleep 600" % (REPO, sys.executable, sys.executable, probe, done))

    def tmux(*args):
        return subprocess.run(["tmux", "-L", "pfntrace-host-tty"] + list(args), env=env,
                              capture_output=True, text=True, timeout=30)

    tmux("new-session", "-d", "-s", "tty", "-x", "120", "-y", "34", cmd)
    try:
        deadline = time.monotonic() + 300
        while not (done.exists() and done.read_text().strip()):
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "tty").stdout
            time.sleep(1)
        screen = tmux("capture-pane", "-p", "-t", "tty").stdout
        assert done.read_text().strip() == "0", screen
        assert "SIZE 120 34" in screen, screen
    finally:
        tmux("kill-server")
