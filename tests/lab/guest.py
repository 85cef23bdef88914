"""Helpers for lab test bodies (they run inside the guest)."""

import functools
import os
import subprocess
import sys

import pytest

IN_GUEST = os.environ.get("PFNTRACE_IN_LAB") == "1"
FS = os.environ.get("PFNTRACE_LAB_FS", "")
KERNEL = os.environ.get("PFNTRACE_LAB_KERNEL", "")
MOUNT = os.environ.get("PFNTRACE_DAX_MOUNT", "/mnt/dax")
PFNTRACE = [sys.executable, "-m", "pfntrace"]
WORKLOAD = [sys.executable, "-m", "pfntrace.lab.workloads"]
# The handler each filesystem's DAX vm_ops name as ->pfn_mkwrite
# (fs/ext4/file.c ext4_dax_vm_ops, fs/xfs/xfs_file.c xfs_file_vm_ops).
PFN_MKWRITE_HANDLER = {"ext4": "ext4_dax_fault", "xfs": "xfs_filemap_pfn_mkwrite"}


def guest_fixture(scope="function"):
    """A fixture whose body runs only in the guest: on the host, where the
    lab plugin only relays the guest's outcomes, it yields None."""
    def wrap(fn):
        @pytest.fixture(scope=scope)
        @functools.wraps(fn)
        def fixture(*args, **kwargs):
            if not IN_GUEST:
                return None
            return fn(*args, **kwargs)
        return fixture
    return wrap


def run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run(argv, **kw)


def figures(test, **data):
    """Keep what a test measured for the notes: one JSON line per test in
    the results folder the host reads (PFNTRACE_LAB_OUT), and on stdout."""
    import json

    line = json.dumps(dict(test=test, lab=KERNEL + "/" + FS, **data))
    print(line)
    out = os.environ.get("PFNTRACE_LAB_OUT")
    if out:
        with open(os.path.join(out, "figures.jsonl"), "a") as f:
            f.write(line + "\n")
