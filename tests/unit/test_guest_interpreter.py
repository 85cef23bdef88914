"""The lab guest runs pfntrace's Python with the interpreter pfntrace was
installed with (the venv: its cffi, click, rich), never a system python3 that
happens to be there.  Host only: reads the guest scripts and the job file."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from pfntrace.lab import initramfs, vm

# A word that starts an interpreter: python, python3, python3.11, pypy3,
# /usr/bin/python3, env python3... (a path to one counts too).
_INTERPRETER = re.compile(r"(?<![\w$.{-])(?:/[\w./-]*/)?"
                          r"(?:python|pypy|perl|ruby|node)[\d.]*(?![\w.-])")


def _guest_files():
    for root, _, names in os.walk(initramfs.GUEST_DIR):
        for name in sorted(names):
            path = os.path.join(root, name)
            with open(path, errors="replace") as f:
                yield path, f.read()


def _code(text):
    """Lines without comments (a comment may name python3 to explain)."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") and not (n == 1 and line.startswith("#!")):
            continue
        yield n, line.split(" #")[0]


def test_the_scanner_sees_interpreters():
    hits = [l for l in ("/usr/bin/python3 -m x", "python3 -c 1", "exec python -m y",
                        "env python3.11 z", "#!/usr/bin/env python3", "x | perl -e 1")
            if _INTERPRETER.search(l)]
    assert len(hits) == 6
    for ok in ('"$PFT_PYTHON" -m pfntrace.lab.daxcheck', "pfntrace.lab.python_thing",
               "/run/pft/busybox sh", "python3-bpfcc"):
        assert not _INTERPRETER.search(ok), ok


def test_guest_scripts_name_no_interpreter_of_their_own():
    found = []
    for path, text in _guest_files():
        for n, line in _code(text):
            m = _INTERPRETER.search(line)
            if m:
                found.append("%s:%d: %s" % (os.path.relpath(path, vm.CHECKOUT), n, line.strip()))
    assert not found, ("the guest must run pfntrace's interpreter ($PFT_PYTHON, from job.env), "
                       "not one of its own:\n" + "\n".join(found))


def test_guest_scripts_are_shell_only():
    for path, text in _guest_files():
        first = text.splitlines()[0] if text else ""
        assert first in ("#!/bin/sh", "#!/bin/busybox sh"), (path, first)


def test_python_in_stage2_is_the_jobs_interpreter():
    stage2 = open(vm.STAGE2).read()
    uses = [l for _, l in _code(stage2) if " -m pfntrace" in l]
    assert uses, "stage2 runs no pfntrace module any more: update this test"
    for line in uses:
        assert line.strip().startswith('"$PFT_PYTHON" -m pfntrace.'), line
    # job.env is read before the first use
    assert stage2.index('. "$pft_job/job.env"') < stage2.index('"$PFT_PYTHON" -m')


def test_job_env_carries_this_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = vm.LabConfig(kernel="6.12", fs="ext4", results=str(tmp_path))
    vm._write_job(str(tmp_path), cfg, ["true"], "6.12.0-x", False, False)
    env = {}
    for line in (tmp_path / "job.env").read_text().splitlines():
        k, v = line.replace("export ", "", 1).split("=", 1)
        env[k] = shlex.split(v)[0] if v else ""
    assert env["PFT_PYTHON"] == sys.executable
    # and what the sourced file gives a shell is the same path
    out = subprocess.run(["sh", "-c", '. ./job.env; printf %s "$PFT_PYTHON"'], cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert out == sys.executable


@pytest.mark.parametrize("module", ["cffi", "click", "rich"])
def test_this_interpreter_has_what_the_guest_imports(module):
    # The guest runs sys.executable: whatever pfntrace needs must import there.
    p = subprocess.run([sys.executable, "-c", "import %s" % module], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
