"""pfntrace.lab.bugs and .oracle without a kernel: paths, modes, the
up-to-date check, the build's reuse (with a stand-in make), and the stat
oracle on an ordinary file."""

import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from pfntrace.lab import bugs, oracle
from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

C_SOURCE = os.path.join(bugs.SOURCE_DIR, "pftbug.c")


def test_modes():
    assert bugs.BUG_MODES == ("control", "no_pfn_mkwrite", "noop_pfn_mkwrite", "stale_update")
    assert bugs.BUGGY_MODES == bugs.BUG_MODES[1:]
    assert bugs.EXPECTED_VERDICT == {"control": "moved", "no_pfn_mkwrite": "stale",
                                     "noop_pfn_mkwrite": "stale", "stale_update": "stale"}
    assert set(bugs.COUNTED_MODES) <= set(bugs.BUGGY_MODES)


def test_modes_and_counters_match_the_module_source():
    with open(C_SOURCE) as f:
        c = f.read()
    table = c[c.index("mode_names[] = {"):]
    table = table[:table.index("};")]
    assert tuple(re.findall(r'= "(\w+)"', table)) == bugs.BUG_MODES
    params = set(re.findall(r"module_param(?:_cb)?\((\w+),", c))
    assert set(bugs.COUNTERS) | set(bugs.STRINGS) <= params
    assert 'MODULE_LICENSE("GPL")' in c


def test_sources_are_shipped_with_the_package():
    for path in bugs.source_paths():
        assert os.path.isfile(path), path
    with open(os.path.join(bugs.SOURCE_DIR, "Kbuild")) as f:
        kbuild = f.read()
    assert "obj-m := pftbug.o $(addsuffix .o,$(COPIES))" in kbuild
    # The copies Kbuild builds are the ones bugs.py loads.
    (copies,) = re.findall(r"^COPIES := (.*)$", kbuild, re.M)
    assert tuple(copies.split()) == bugs.COPIES


def test_paths_live_in_the_cache_per_release(tmp_path):
    assert bugs.build_dir("6.1.0-56-amd64", str(tmp_path)) == \
        str(tmp_path / "bugmod" / "6.1.0-56-amd64")
    assert bugs.ko_path("6.12.117+deb12-amd64", str(tmp_path)) == \
        str(tmp_path / "bugmod" / "6.12.117+deb12-amd64" / "pftbug.ko")
    assert bugs.ko_path("6.1.0-56-amd64").startswith(os.path.join(lab_cache.CACHE, "bugmod"))
    assert bugs.kbuild_dir("6.1.0-56-amd64") == "/lib/modules/6.1.0-56-amd64/build"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(LabError):
            bugs.build_dir(bad, str(tmp_path))


def _touch(path, ns):
    with open(path, "a"):
        pass
    os.utime(path, ns=(ns, ns))


def test_is_current(tmp_path):
    ko, a, b = (str(tmp_path / n) for n in ("m.ko", "a.c", "Kbuild"))
    _touch(a, 10**18)
    _touch(b, 10**18 + 5)
    assert not bugs.is_current(ko, [a, b])          # not built
    _touch(ko, 10**18 + 5)
    assert not bugs.is_current(ko, [a, b])          # as old as a source
    _touch(ko, 10**18 + 6)
    assert bugs.is_current(ko, [a, b])
    _touch(a, 10**18 + 7)
    assert not bugs.is_current(ko, [a, b])          # a source edited since


def test_build_without_headers_is_one_line(tmp_path):
    with pytest.raises(LabError) as e:
        bugs.build("0.0.0-none", cache=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert "no kernel headers" in msg and "linux-headers-0.0.0-none" in msg


def test_first_error_line():
    log = ("make: Entering directory '/usr/src/x'\n  CC [M]  /c/pftbug.o\n"
           "/c/pftbug.c:10:2: error: unknown type name 'foo'\nmake[1]: *** Error 1\n")
    assert bugs._first_error(log) == "/c/pftbug.c:10:2: error: unknown type name 'foo'"
    assert bugs._first_error("sh: 1: x86_64-linux-gnu-gcc-12: not found\n").endswith("not found")
    assert bugs._first_error("") == "no output"


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """A make that 'builds' pftbug.ko into M= and counts its runs, a gcc, and
    a kbuild folder with a Makefile."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runs = tmp_path / "make-runs"
    make = bindir / "make"
    make.write_text("#!/bin/sh\necho run >> %s\nfor a; do case $a in M=*) m=${a#M=};; esac; done\n"
                    "test -f \"$m/pftbug.c\" || { echo 'error: no source'; exit 2; }\n"
                    "for k in %s; do echo ko > \"$m/$k.ko\"; done\n"
                    % (runs, " ".join(bugs.MODULES)))
    gcc = bindir / "gcc"
    gcc.write_text("#!/bin/sh\nexit 0\n")
    for f in (make, gcc):
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ.get("PATH", "")))
    kdir = tmp_path / "kbuild"
    kdir.mkdir()
    (kdir / "Makefile").write_text("")
    monkeypatch.setattr(bugs, "kbuild_dir", lambda release: str(kdir))
    src = tmp_path / "src"
    src.mkdir()
    for name in bugs.SOURCES:
        (src / name).write_text(name)
    monkeypatch.setattr(bugs, "SOURCE_DIR", str(src))

    def count():
        return len(runs.read_text().splitlines()) if runs.exists() else 0
    return src, count


def test_build_copies_sources_and_reuses_a_current_build(tmp_path, fake_toolchain):
    src, make_runs = fake_toolchain
    cache = str(tmp_path / "cache")
    ko = bugs.build("9.9.9-test", cache=cache)
    assert ko == bugs.ko_path("9.9.9-test", cache) and os.path.exists(ko)
    for name in bugs.SOURCES:   # the sources went into the build folder
        with open(os.path.join(bugs.build_dir("9.9.9-test", cache), name)) as f:
            assert f.read() == name
    assert make_runs() == 1
    assert bugs.build("9.9.9-test", cache=cache) == ko
    assert make_runs() == 1                      # reused
    future = os.stat(ko).st_mtime_ns + 10**9
    os.utime(src / "pftbug.c", ns=(future, future))
    bugs.build("9.9.9-test", cache=cache)
    assert make_runs() == 2                      # a source is newer: rebuilt
    bugs.build("9.9.9-test", cache=cache, force=True)
    assert make_runs() == 3


def test_a_build_without_every_copy_fails(tmp_path, fake_toolchain):
    src, _ = fake_toolchain
    make = src.parent / "bin" / "make"     # the fixture's
    with open(make) as f:
        text = f.read()
    with open(make, "w") as f:
        f.write(text.replace(" ".join(bugs.MODULES), " ".join(bugs.MODULES[:-1])))
    with pytest.raises(LabError, match="building pftbug for 9.9.9-test failed"):
        bugs.build("9.9.9-test", cache=str(tmp_path / "cache"))


def test_prebuild_reports_each_release(tmp_path, fake_toolchain, monkeypatch):
    cache = str(tmp_path / "cache")
    done = bugs.prebuild(["1.0-a", "../bad"], cache=cache)
    assert done["1.0-a"] == bugs.ko_path("1.0-a", cache)
    assert isinstance(done["../bad"], LabError)


def test_load_rejects_unknown_mode_before_touching_the_kernel():
    with pytest.raises(LabError, match="unknown bug mode 'nope'"):
        bugs.load("/mnt/dax/f", "nope", ko="/nonexistent.ko")
    with pytest.raises(LabError, match="whitespace"):
        bugs.load("/mnt/dax/a b", "control", ko="/nonexistent.ko")


def test_cli_path_and_usage(tmp_path):
    env = dict(os.environ, PFNTRACE_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "pfntrace.lab.bugs", "path", "6.1.0-56-amd64"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == str(tmp_path / "bugmod" / "6.1.0-56-amd64" / "pftbug.ko")
    bad = subprocess.run([sys.executable, "-m", "pfntrace.lab.bugs"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "usage" in bad.stderr


# --- the stat oracle, on an ordinary (page-cache) file ------------------------

def test_verdict_is_by_mtime():
    before = {"mtime_ns": 1, "ctime_ns": 1, "dev": "1:2", "ino": 3}
    moved = oracle._verdict("generic-080", "/f", 1, before,
                            dict(before, mtime_ns=2, ctime_ns=2), True)
    assert (moved["verdict"], moved["mtime_moved"], moved["ctime_moved"]) == ("moved", True, True)
    stale = oracle._verdict("generic-080", "/f", 1, before, dict(before, ctime_ns=2), True)
    assert (stale["verdict"], stale["mtime_moved"], stale["ctime_moved"]) == \
        ("stale", False, True)


def test_oracle_workloads_and_command():
    assert oracle.WORKLOADS["generic-080"][1] == 1
    assert oracle.default_pages("read-then-write") == 23
    argv = oracle.command("read-then-write", "/mnt/dax/f", output="/tmp/o.json")
    assert argv[1:] == ["-m", "pfntrace.lab.oracle", "read-then-write", "/mnt/dax/f", "23",
                        "-o", "/tmp/o.json"]


def _fs_type(path):
    """The type of the filesystem path is on (the longest mount point)."""
    best, kind = "", None
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype = line.split()[:3]
            point = point.replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, fstype
    return kind


@pytest.fixture
def disk_dir(tmp_path):
    """A folder whose shared mappings write-notify (page_mkwrite): not tmpfs,
    where an mmap write after a read makes no fault and mtime stays (a fresh
    Debian's /tmp is tmpfs)."""
    if _fs_type(str(tmp_path)) != "tmpfs":
        yield tmp_path
        return
    bases = [b for b in ("/var/tmp", os.path.expanduser("~"))
             if os.path.isdir(b) and _fs_type(b) != "tmpfs"]
    if not bases:
        pytest.skip("no folder here outside tmpfs: tmpfs mmap writes never move mtime")
    d = tempfile.mkdtemp(prefix="pfntrace-oracle-", dir=bases[0])
    try:
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_oracle_on_a_healthy_file_moves_mtime(disk_dir):
    # Any kernel updates mtime on an mmap write of an ordinary file
    # (page_mkwrite): the oracle must say so, from a forked child.
    path = str(disk_dir / "f")
    r = oracle.run_in_child("read-then-write", path, 3)
    assert r["verdict"] == "moved" and r["mtime_moved"] and r["data_ok"]
    assert r["pages"] == 3 and r["ino"] == os.stat(path).st_ino
    assert os.path.getsize(path) == 3 * oracle.PAGE


def test_oracle_cli_prints_one_json_line(disk_dir):
    path, out = str(disk_dir / "g"), str(disk_dir / "o.json")
    proc = subprocess.run([sys.executable, "-m", "pfntrace.lab.oracle", "generic-080", path,
                           "-o", out], capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    with open(out) as f:
        assert json.load(f) == r
    assert r["workload"] == "generic-080" and r["pages"] == 1 and r["verdict"] == "moved"
