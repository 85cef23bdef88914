"""Which Debian lab kernels are there, and their uncompressed vmlinux.

The installed ones (LAB_KERNELS: /boot, /lib/modules) and the fetched one
(FETCHED_KERNELS: `newest`, unpacked into CACHE/debian by
pfntrace.lab.newest; its vmlinuz, modules and headers stay there).

QEMU boots an uncompressed vmlinux through its PVH ELF note in ~3 s under TCG
where the bzImage takes ~6 s (it decompresses itself in emulation), so the
vmlinux is unpacked once from the vmlinuz into a cache and reused.
"""

import glob
import lzma
import os
import re
import struct
import subprocess
from dataclasses import dataclass, field

from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

# The two kernels the lab supports, by the Debian packages that bring them.
LAB_KERNELS = {
    "6.1": {
        "pattern": r"^6\.1\.\d+-\d+-amd64$",
        "packages": ["linux-image-amd64", "linux-headers-amd64"],
    },
    "6.12": {
        "pattern": r"^6\.12\.\d+\+deb\d+-amd64$",
        "packages": ["linux-image-6.12-amd64", "linux-headers-6.12-amd64"],
    },
}

# Lab kernels that are not installed: unpacked from Debian's archive into
# CACHE/debian by pfntrace.lab.newest (setup fetches it).
FETCHED_KERNELS = {
    "newest": "the newest linux-image-amd64 in Debian's unstable or trixie-backports",
}

@dataclass
class LabKernel:
    alias: str
    release: str
    image: str
    modules: str
    headers: str
    missing: list = field(default_factory=list)
    # A kernel unpacked into the cache (not installed): the root its
    # packages were unpacked into (ROOT/usr/lib/modules/RELEASE, ROOT/usr/src).
    root: str = ""
    version: str = ""     # its Debian package version

    @property
    def usable(self):
        return not self.missing


def _releases(pattern):
    found = set()
    for path in glob.glob("/boot/vmlinuz-*") + glob.glob("/lib/modules/*"):
        release = os.path.basename(path).replace("vmlinuz-", "", 1)
        if re.match(pattern, release):
            found.add(release)
    # Newest first: Debian keeps older ABIs installed after upgrades.
    return sorted(found, key=_version_key, reverse=True)


def _version_key(release):
    return [int(x) if x.isdigit() else 0 for x in re.split(r"[.+-]", release)]


def aliases():
    """Every lab kernel alias: the installed ones, then the fetched ones."""
    return list(LAB_KERNELS) + list(FETCHED_KERNELS)


def _fetched(alias):
    from pfntrace.lab import newest

    fetch = "python -m pfntrace.lab.newest fetch, or sh scripts/setup.sh"
    record = newest.current()
    if not record:
        return LabKernel(alias, "", "", "", "", ["not fetched (%s)" % fetch])
    release, root = record["release"], record["root"]
    moddir = os.path.join(root, "usr", "lib", "modules", release)
    kernel = LabKernel(alias, release, image=os.path.join(moddir, "vmlinuz"), modules=moddir,
                       headers=os.path.join(root, "usr", "src", "linux-headers-" + release),
                       root=root, version=record.get("version", ""))
    if not os.path.exists(kernel.image):
        kernel.missing.append("%s (%s)" % (kernel.image, fetch))
    if not os.path.exists(os.path.join(moddir, "modules.dep")):
        kernel.missing.append("%s/modules.dep (%s)" % (moddir, fetch))
    if not os.path.isdir(kernel.headers):
        kernel.missing.append("headers %s (%s)" % (kernel.headers, fetch))
    return kernel


def fetched_root(release):
    """The cache root a fetched kernel of this release was unpacked into, or ''."""
    for alias in FETCHED_KERNELS:
        k = _fetched(alias)
        if k.release == release:
            return k.root
    return ""


def canonical(name):
    """The alias for a --kernel value: an alias, or the release (or its
    major.minor) of a fetched kernel."""
    if name in LAB_KERNELS or name in FETCHED_KERNELS:
        return name
    for alias in FETCHED_KERNELS:
        k = _fetched(alias)
        if k.release and (name == k.release or k.release.startswith(name + ".")
                          or k.release.startswith(name + "+")):
            return alias
    return None


def describe(alias):
    """The installed kernel for a lab alias, with what is missing for it."""
    if alias in FETCHED_KERNELS:
        return _fetched(alias)
    spec = LAB_KERNELS[alias]
    releases = _releases(spec["pattern"])
    install = "apt-get install -y " + " ".join(spec["packages"])
    if not releases:
        return LabKernel(alias, "", "", "", "", ["kernel image (%s)" % install])
    release = releases[0]
    kernel = LabKernel(
        alias,
        release,
        image="/boot/vmlinuz-" + release,
        modules="/lib/modules/" + release,
        headers="/lib/modules/%s/build/include" % release,
    )
    if not os.path.exists(kernel.image):
        kernel.missing.append("%s (%s)" % (kernel.image, install))
    if not os.path.isdir(os.path.join(kernel.modules, "kernel")):
        kernel.missing.append("%s (%s)" % (kernel.modules, install))
    if not os.path.isdir(kernel.headers):
        kernel.missing.append("headers for bcc (%s)" % install)
    return kernel


def resolve(alias):
    """The usable LabKernel for alias, or LabError saying how to install it."""
    name = canonical(alias)
    if name is None:
        raise LabError("unknown lab kernel %r (choose from %s)" % (alias, ", ".join(aliases())))
    kernel = describe(name)
    if not kernel.usable:
        raise LabError("lab kernel %s is not usable: missing %s"
                       % (alias, "; ".join(kernel.missing)))
    return kernel


# --- vmlinux extraction -------------------------------------------------------

# x86 boot protocol (Documentation/arch/x86/boot.rst): setup_sects at 0x1f1,
# payload_offset/payload_length at 0x248/0x24c, relative to the start of the
# protected-mode code, which follows (setup_sects + 1) * 512 bytes.
_SETUP_SECTS = 0x1F1
_PAYLOAD = 0x248


def _payload(bzimage):
    setup_sects = bzimage[_SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", bzimage, _PAYLOAD)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start:start + length]


def _decompress(payload):
    if payload[:6] == b"\xfd7zXZ\x00":
        # The kernel appends its size after the stream; lzma stops at the end
        # of the first stream when asked for a raw decompressor per stream.
        return lzma.LZMADecompressor().decompress(payload)
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        proc = subprocess.run(
            ["zstd", "-d", "-c", "-q"], input=payload, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, check=False
        )
        if proc.returncode != 0 and not proc.stdout.startswith(b"\x7fELF"):
            raise LabError("zstd could not unpack the kernel (apt-get install -y zstd)")
        return proc.stdout
    raise LabError("unknown kernel compression (magic %s)" % payload[:6].hex())


def vmlinux(kernel):
    """Path of the uncompressed vmlinux for kernel, unpacking it on first use."""
    out = os.path.join(lab_cache.CACHE, "lab", kernel.release, "vmlinux")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(kernel.image):
        return out
    with open(kernel.image, "rb") as f:
        image = f.read()
    elf = _decompress(_payload(image))
    if elf[:4] != b"\x7fELF":
        raise LabError("%s did not unpack to an ELF vmlinux" % kernel.image)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, out)
    return out
