"""pfntrace.lab.newest without the network: the mirror from apt's sources,
Depends parsing, the newest version, the package set, the kbuild wrappers."""

import os

import pytest

from pfntrace.lab import cache as lab_cache
from pfntrace.lab import kernels, newest
from pfntrace.lab.cache import LabError


def test_mirror_from_deb822_and_one_line_sources(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert newest.system_mirror(str(tmp_path)) == "http://mirror.example/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg arch=amd64] http://other.example/debian bookworm main\n")
    assert newest.system_mirror(str(tmp_path)) == "http://other.example/debian"
    (tmp_path / "sources.list").write_text("deb https://vendor.example/apt cloud-sdk main\n")
    assert newest.system_mirror(str(tmp_path)) is None


def test_depends_keeps_exact_versions_and_alternatives():
    stanza = {"Depends": "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, "
                         "linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), gcc-14-for-host"}
    assert newest.depends(stanza) == [
        ("dracut", None), ("initramfs-tools", None), ("linux-initramfs-tool", None),
        ("linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"), ("gcc-14-for-host", None)]


def test_newest_compares_debian_versions():
    got = newest.newest_stanza([{"Version": "7.2.13-1"}, {"Version": "7.3.4-1~bpo13+1"},
                                {"Version": "7.3.4-1~bpo13"}])
    assert got["Version"] == "7.3.4-1~bpo13+1"
    assert newest.version_gt("7.3.4-1", "7.3.4-1~bpo13+1")


class FakeApt:
    suites = ("unstable", "trixie-backports")

    def __init__(self, packages):
        self.packages = packages

    def show(self, name):
        return [dict(s, Package=name) for s in self.packages.get(name, [])]


ARCHIVE = {
    "linux-image-amd64": [
        {"Version": "7.2.13-1", "Depends": "linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)"},
        {"Version": "7.3.4-1~bpo13+1",
         "Depends": "linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)"}],
    "linux-image-7.3.4+deb13-amd64": [{"Version": "7.3.4-1~bpo13+1", "Depends":
        "dracut | initramfs-tools, linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), "
        "linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), "
        "linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)"}],
    "linux-headers-7.3.4+deb13-amd64": [{"Version": "7.3.4-1~bpo13+1", "Depends":
        "gcc-14-for-host, linux-base (>= 4.12~), linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), "
        "linux-headers-7.3.4+deb13-common (= 7.3.4-1~bpo13+1), linux-kbuild-7.3.4+deb13"}],
    "linux-kbuild-7.3.4+deb13": [{"Version": "7.3.4-1~bpo13+1"}],
}
for _name in ("linux-base", "linux-binary", "linux-modules", "linux-headers"):
    _full = "%s-7.3.4+deb13-%s" % (_name, "common" if _name == "linux-headers" else "amd64")
    ARCHIVE.setdefault(_full, [{"Version": "7.3.4-1~bpo13+1"}])


def test_discover_and_package_set():
    apt = FakeApt(ARCHIVE)
    release, version, image = newest.discover(apt)
    assert (release, version) == ("7.3.4+deb13-amd64", "7.3.4-1~bpo13+1")
    assert image == "linux-image-7.3.4+deb13-amd64"
    names = [n for n, _ in newest.package_set(apt, release, version)]
    assert names == sorted([
        "linux-base-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-amd64",
        "linux-headers-7.3.4+deb13-amd64", "linux-headers-7.3.4+deb13-common",
        "linux-image-7.3.4+deb13-amd64", "linux-kbuild-7.3.4+deb13",
        "linux-modules-7.3.4+deb13-amd64"])


def test_a_missing_package_is_one_line():
    archive = dict(ARCHIVE)
    del archive["linux-modules-7.3.4+deb13-amd64"]
    with pytest.raises(LabError, match="linux-modules-7.3.4.deb13-amd64 7.3.4-1~bpo13.1 is not"):
        newest.package_set(FakeApt(archive), "7.3.4+deb13-amd64", "7.3.4-1~bpo13+1")


def test_kbuild_tools_needing_a_newer_glibc_run_through_the_unpacked_loader(tmp_path):
    root = tmp_path / "root.tmp"
    tools = root / "usr/lib/linux-kbuild-9.9/scripts/mod"
    tools.mkdir(parents=True)
    new = tools / "modpost.real"
    new.write_bytes(b"\x7fELF....GLIBC_2.2.5\0GLIBC_2.%d\0" % (newest.host_glibc() + 2))
    old = tools / "fixdep"
    old.write_bytes(b"\x7fELF....GLIBC_2.2.5\0")
    for f in (new, old):
        f.chmod(0o755)
    with pytest.raises(LabError, match="no newer libc6"):
        newest.wrap_kbuild_tools(str(root))
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (libdir / "ld-linux-x86-64.so.2").write_bytes(b"")
    newest.wrap_kbuild_tools(str(root), "/final")
    script = new.read_text()
    assert script.startswith("#!/bin/sh")
    assert "exec /final/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path " \
           "/final/usr/lib/x86_64-linux-gnu:" in script
    assert "/final/usr/lib/linux-kbuild-9.9/scripts/mod/modpost.real.elf" in script
    assert (tools / "modpost.real.elf").exists()
    assert old.read_bytes().startswith(b"\x7fELF")      # old enough: left alone


def test_the_newest_alias_without_a_fetch_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(lab_cache, "CACHE", str(tmp_path))
    k = kernels.describe("newest")
    assert not k.usable and "pfntrace.lab.newest fetch" in k.missing[0]
    with pytest.raises(LabError, match="lab kernel newest is not usable"):
        kernels.resolve("newest")
    with pytest.raises(LabError, match="unknown lab kernel '9.9'.*6.1, 6.12, newest"):
        kernels.resolve("9.9")


def test_the_newest_alias_resolves_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(lab_cache, "CACHE", str(tmp_path))
    release = "7.3.4+deb13-amd64"
    root = os.path.join(newest.kernel_dir(release), "root")
    moddir = os.path.join(root, "usr/lib/modules", release)
    os.makedirs(os.path.join(root, "usr/src/linux-headers-" + release))
    os.makedirs(moddir)
    for name in ("vmlinuz", "modules.dep"):
        open(os.path.join(moddir, name), "w").close()
    newest._write_json(os.path.join(newest.kernel_dir(release), newest.RECORD),
                       {"release": release, "version": "7.3.4-1~bpo13+1", "root": root})
    newest._write_json(os.path.join(newest.base_dir(), newest.POINTER), {"release": release})
    for name in ("newest", release, "7.3", "7"):
        k = kernels.resolve(name)
        assert (k.alias, k.release, k.root) == ("newest", release, root), name
    assert k.image == os.path.join(moddir, "vmlinuz")
    assert kernels.fetched_root(release) == root
    assert kernels.fetched_root("6.1.0-56-amd64") == ""
