"""The lab's pure parts: cpio writing, kernel unpacking, sizes, job files."""

import lzma
import struct

import pytest

from pfntrace.lab import initramfs, kernels, vm


def parse_newc(data):
    """Names, modes and contents of a newc archive (as the kernel reads it)."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_newc_round_trip():
    c = initramfs._Cpio()
    c.dir("bin")
    c.file("bin/busybox", b"\x7fELF" + b"x" * 13, 0o755)
    c.file("init", b"#!/bin/sh\n")
    files = parse_newc(c.finish())
    assert files["bin"][0] == 0o040755
    assert files["bin/busybox"] == (0o100755, b"\x7fELF" + b"x" * 13)
    assert files["init"] == (0o100644, b"#!/bin/sh\n")


def _bzimage(payload, setup_sects=3):
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    struct.pack_into("<II", head, 0x248, 16, len(payload))
    return bytes(head) + b"\0" * 16 + payload + b"trailing"


def test_payload_and_xz_unpacking():
    elf = b"\x7fELF" + bytes(range(200))
    image = _bzimage(lzma.compress(elf, format=lzma.FORMAT_XZ))
    assert kernels._decompress(kernels._payload(image)) == elf


def test_unknown_compression_is_a_lab_error():
    with pytest.raises(kernels.LabError, match="unknown kernel compression"):
        kernels._decompress(b"\x01\x02\x03\x04\x05\x06")


@pytest.mark.parametrize("text,mb", [("512M", 512), ("1G", 1024), ("768", 768), ("2g", 2048)])
def test_sizes(text, mb):
    assert vm._parse_size(text) == mb


@pytest.mark.parametrize("text", ["12", "abc", "-1G", "1T", ""])
def test_bad_sizes(text):
    with pytest.raises(kernels.LabError):
        vm._parse_size(text)


def test_unknown_kernel_alias():
    with pytest.raises(kernels.LabError, match="unknown lab kernel '5.10'"):
        kernels.resolve("5.10")


def test_job_files_quote_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = vm.LabConfig(kernel="6.1", fs="xfs", results=str(tmp_path))
    vm._write_job(str(tmp_path), cfg, ["sh", "-c", "echo 'a b'; exit 3"], "6.1.0-x", False, True)
    assert (tmp_path / "command.sh").read_text() == "exec sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'\n"
    env = (tmp_path / "job.env").read_text()
    assert "PFT_FS=xfs\n" in env and "PFT_STDOUT_TTY=0\n" in env and "PFT_STDERR_TTY=1\n" in env
    assert "export PFNTRACE_LAB_RELEASE=6.1.0-x\n" in env
