"""The lab's initramfs: busybox, the modules that reach the host root, /init.

It holds just enough to load virtio + 9p + overlay and switch_root into the
host's own root filesystem (read-only over 9p, a tmpfs overlay for writes), so
the guest runs pfntrace's own interpreter (the venv), bcc and this checkout
at the same paths.  Stage 2 gets this busybox too, for its plumbing.
Everything else (nd_pmem, ext4, xfs...) is modprobed from there.
"""

import io
import lzma
import os
import shutil
import threading
import subprocess

from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

GUEST_DIR = os.path.join(os.path.dirname(__file__), "guest")

# The modules /init needs before the host root is reachable; their
# dependencies are added in modprobe's order.
ROOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]


def module_order(release, root=""):
    """insmod-able module paths for ROOT_MODULES on release, dependencies first.
    root: where a fetched kernel's modules are (ROOT/lib/modules/RELEASE)."""
    order = []
    for name in ROOT_MODULES:
        proc = subprocess.run(
            ["modprobe"] + (["-d", root] if root else []) + ["-S", release, "--show-depends",
                                                             name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if proc.returncode != 0:
            raise LabError("modprobe cannot resolve %s for %s: %s"
                           % (name, release, proc.stderr.strip()))
        for line in proc.stdout.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and words[1] not in order:
                path = words[1]
                if root and not path.startswith(root.rstrip("/") + "/"):
                    path = os.path.join(root, path.lstrip("/"))
                order.append(path)
    return order


class _Cpio:
    """A minimal writer of the 'newc' cpio format the kernel unpacks."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(head + name_b)
        self.out.write(b"\0" * (-(len(head) + len(name_b)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _module_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    # busybox insmod does not unpack 6.12's .ko.xz: store them plain.
    return lzma.decompress(data) if path.endswith(".xz") else data


def build(release, root=""):
    """Path of the initramfs for release, rebuilt when its inputs change.
    root: the cache root of a fetched kernel (module_order)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise LabError("busybox is not installed (apt-get install -y busybox-static)")
    init = os.path.join(GUEST_DIR, "init")
    modules = module_order(release, root)
    inputs = [busybox, init] + modules
    out = os.path.join(lab_cache.CACHE, "lab", release, "initramfs.cpio")
    if os.path.exists(out) and all(
        os.path.getmtime(out) >= os.path.getmtime(p) for p in inputs
    ):
        return out
    with open(busybox, "rb") as f:
        bb = f.read()
    if b"ld-linux" in bb[:4096] or b"/lib64/ld-linux" in bb:
        raise LabError("%s is dynamically linked: the initramfs needs busybox-static "
                       "(apt-get install -y busybox-static)" % busybox)
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "mnt", "mnt/lower", "mnt/upper", "mnt/root",
              "modules"):
        cpio.dir(d)
    cpio.file("bin/busybox", bb, 0o755)
    with open(init, "rb") as f:
        cpio.file("init", f.read(), 0o755)
    names = []
    for i, path in enumerate(modules):
        name = "modules/%02d-%s" % (i, os.path.basename(path).replace(".xz", ""))
        cpio.file(name, _module_bytes(path))
        names.append(name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # Per thread too: the lab tests boot several guests of one kernel at once.
    tmp = out + ".tmp.%d.%d" % (os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(cpio.finish())
    os.replace(tmp, out)
    return out
