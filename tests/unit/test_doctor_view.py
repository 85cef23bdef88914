"""`pfntrace doctor` as text, at 60, 80 and 120 columns and piped: every
check's status, detail and fix whole, nothing cut, each command in a fix
on one line; `doctor --json` as it was."""

import io
import json
import os
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from pfntrace import doctor
from pfntrace.cli import main
from pfntrace.views import doctor as view
from test_doctor import DATA, config, data, plan_618

# `pfntrace doctor --json` on our host (Debian 12, a 6.18 kernel without
# kprobes or headers), recorded before the text view was rewritten.
HOST = os.path.join(DATA, "doctor-host-6.18.json")
HOST_PACKAGE = "install linux-headers-6.18.44-fc-v1272"
WIDTHS = (60, 80, 120)
FIX_INDENT = view.INDENT + len(view.FIX)
# The commands the fixes hold: what a user copies.
COMMAND = re.compile(r"install \S+[^,\s]|modprobe [^)]*|mount -[^,)]*|pip uninstall \S+|"
                     r"run inside `pfntrace lab`|`[^`]*`")


def host_checks():
    with open(HOST) as f:
        return [doctor.Check(**c) for c in json.load(f)["checks"]]


class _Bcc:
    __file__ = "/usr/lib/python3/dist-packages/bcc/__init__.py"
    BPF = object


def lab_checks(tmp_path):
    """A lab guest's result (6.1, ext4 on pmem), made by doctor's own
    checks where they take their input: record can run; the handlers of
    filesystems not loaded and a scratch mount that is not DAX fail, with
    long fixes."""
    release = "6.1.0-31-amd64"
    cfg = config("config-6.1.txt")
    (tmp_path / "modules" / release / "build" / "include").mkdir(parents=True)
    scratch = tmp_path / "mnt" / "xfstests-scratch-generic-080-mmap-mtime"
    scratch.mkdir(parents=True)
    (scratch / "mmap_mtime_testfile").write_bytes(b"x")
    checks = [doctor.check_kernel(release, cfg),
              doctor.check_privileges(data("status-root.txt"), 0),
              doctor.Check("bpf syscall", True, "BPF_MAP_CREATE of an array map works", "", True),
              doctor.check_kprobes(cfg, str(tmp_path)),
              doctor.Check("BTF", True, "/sys/kernel/btf/vmlinux: 102233 types, "
                           "vm_area_struct.vm_file at 160", "", True),
              doctor.check_headers(release, str(tmp_path / "modules")),
              doctor.check_bcc(lambda name: _Bcc),
              doctor.Check("tracefs", True, "/sys/kernel/tracing", "", True),
              doctor.check_fentry(cfg)]
    checks += doctor.hook_checks(plan_618(kprobes=(True, "ok")))
    checks.append(doctor.check_dax_mount(str(scratch), "ext4", "dax=always"))
    assert not [c for c in checks if c.blocking and not c.ok]
    return checks


def render(checks, width):
    console = Console(width=width, file=io.StringIO(), color_system=None,
                      force_terminal=False)
    view.render(console, checks)
    return console.file.getvalue()


def flat(text):
    """The text as wrapping cannot change it: a path that goes on after a
    slash on the next line joined again, every other run of white space
    one space."""
    return " ".join(re.sub(r"/\n *", "/", text).split())


def assert_whole(text, checks, width):
    lines = text.splitlines()
    assert "…" not in text and "..." not in text
    assert max(len(line) for line in lines) <= width, text
    for c in checks:
        word, _style = view.status(c)
        entry = "%s %s %s" % (word, c.name, c.detail)
        if c.fix:
            entry += " fix: " + c.fix
        assert flat(entry) in flat(text), entry
        if c.fix and FIX_INDENT + len(c.fix) <= width:
            assert any(c.fix in line for line in lines), c.fix
        for command in COMMAND.findall(c.fix):
            assert any(command in line for line in lines), command


@pytest.mark.parametrize("width", WIDTHS)
def test_host_result_is_shown_whole(width):
    checks = host_checks()
    text = render(checks, width)
    assert_whole(text, checks, width)
    assert [line for line in text.splitlines() if HOST_PACKAGE in line]
    blocker = next(c for c in checks if c.blocking and not c.ok)
    assert flat("pfntrace record cannot run here: " + blocker.fix) in flat(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_lab_result_is_shown_whole(tmp_path, width):
    checks = lab_checks(tmp_path)
    assert any(len(c.fix) > width for c in checks)
    text = render(checks, width)
    assert_whole(text, checks, width)
    assert text.splitlines()[-1] == "pfntrace record can run here."


def test_each_check_is_an_entry_its_detail_and_fix_indented():
    lines = render(host_checks(), 80).splitlines()
    i = lines.index("BLOCKS kernel headers")
    assert lines[i + 1] == "    no /lib/modules/6.18.44-fc-v1272/build/include"
    assert lines[i + 2].startswith("    fix: bcc needs the kernel headers")
    assert lines[i + 4] == ("         %s, or run inside `pfntrace lab`" % HOST_PACKAGE)
    assert lines[i + 5].startswith("ok     bcc")


@pytest.fixture
def host(monkeypatch):
    with open(HOST) as f:
        doc = json.load(f)
    monkeypatch.setattr(doctor, "run_checks",
                        lambda: ([doctor.Check(**c) for c in doc["checks"]], doc["plan"]))


@pytest.mark.parametrize("columns", [None, "60", "120"])
def test_cli_text_piped_or_sized_is_never_cut(host, monkeypatch, columns):
    # Not a terminal: rich takes COLUMNS, else 80 columns.
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 1
    assert_whole(r.output, host_checks(), int(columns or 80))


def test_cli_json_is_unchanged(host):
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 1
    with open(HOST) as f:
        assert r.output == f.read()
