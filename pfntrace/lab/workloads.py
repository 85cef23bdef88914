"""Known workloads for the lab: exact page counts, so tests can assert exact faults.

Each workload maps a file on the DAX mount and touches pages in a given way;
`python -m pfntrace.lab.workloads NAME FILE PAGES` runs one from a shell.
"""

import json
import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE


def _prepare(path, pages):
    """A file of `pages` zero-filled, allocated pages (no holes), fsynced.

    A file that already has that size is used as it is, timestamps and all,
    so a caller can set its mtime beforehand and watch the faults move it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size == pages * PAGE:
        return fd
    os.ftruncate(fd, pages * PAGE)
    os.pwrite(fd, b"\0" * (pages * PAGE), 0)
    os.fsync(fd)
    return fd


def read_then_write(path, pages):
    """Map MAP_SHARED, read every page, then write every page: with DAX each
    write is a write-protect fault that must reach ->pfn_mkwrite."""
    fd = _prepare(path, pages)
    m = mmap.mmap(fd, pages * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    total = 0
    for i in range(pages):
        total += m[i * PAGE]
    for i in range(pages):
        m[i * PAGE] = 1
    m.close()
    os.close(fd)
    return total


def write_sync_write(path, pages):
    """Write every page, msync(MS_SYNC) (re-write-protects them), write again."""
    fd = _prepare(path, pages)
    m = mmap.mmap(fd, pages * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for i in range(pages):
        m[i * PAGE] = 1
    m.flush()
    for i in range(pages):
        m[i * PAGE] = 2
    m.close()
    os.close(fd)


def private_write(path, pages):
    """Read, then write every page of a MAP_PRIVATE mapping: copy-on-write,
    never the file's business."""
    fd = _prepare(path, pages)
    m = mmap.mmap(fd, pages * PAGE, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
    for i in range(pages):
        _ = m[i * PAGE]
    for i in range(pages):
        m[i * PAGE] = 1
    m.close()
    os.close(fd)


def first_touch_write(path, pages):
    """Write every page with no read before: the fault goes through ->fault
    with FAULT_FLAG_WRITE, not through do_wp_page."""
    fd = _prepare(path, pages)
    m = mmap.mmap(fd, pages * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for i in range(pages):
        m[i * PAGE] = 1
    m.close()
    os.close(fd)


# mmap(2) flags Python's mmap module does not name (asm-generic/mman*.h):
# MAP_SYNC asks for a mapping whose metadata is durable at each write fault
# (DAX only), the way persistent-memory programs map their pools.
MAP_SHARED_VALIDATE, MAP_SYNC = 0x03, 0x80000


def map_sync_write(path, pages):
    """Write every allocated page through a MAP_SHARED_VALIDATE|MAP_SYNC
    mapping: each write fault must commit metadata first (VM_FAULT_NEEDDSYNC,
    the dax_insert_pfn_mkwrite tracepoint)."""
    import ctypes

    fd = _prepare(path, pages)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, pages * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap MAP_SYNC: %s" % os.strerror(ctypes.get_errno()))
    for i in range(pages):
        ctypes.c_char.from_address(addr + i * PAGE).value = b"\x01"
    libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(pages * PAGE))
    os.close(fd)


def random_read_write(path, pages, ops=3000, seed=80):
    """fio-style: a seeded random mix of page reads (45%), writes (45%) and
    msync(MS_SYNC) re-protects (10%) over one MAP_SHARED mapping of an
    allocated file.  Which writes fault is up to the kernel (a write to a
    page already writable does not; first touches go through ->fault, writes
    after a read or a re-protect through ->pfn_mkwrite): tests count them
    against the kernel's own fs_dax tracepoints, not against the plan."""
    import random

    rng = random.Random(seed)
    fd = _prepare(path, pages)
    m = mmap.mmap(fd, pages * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for _ in range(ops):
        r = rng.random()
        page = rng.randrange(pages) * PAGE
        if r < 0.45:
            _ = m[page]
        elif r < 0.9:
            m[page] = rng.randrange(1, 256)
        else:
            m.flush()
    m.close()
    os.close(fd)


SETTLE_S = 0.05     # past a clock tick (HZ=250 in the lab: 4 ms)


def _stat_write_loop(path, rounds, stat_before):
    """One allocated page mapped MAP_SHARED and read, then `rounds` times:
    msync(MS_SYNC) (re-write-protects the page), [stat], one mmap write (a
    write-protect fault through ->pfn_mkwrite), [stat].  Prints the oracle as
    one JSON line: per round, whether the stat before and the stat after the
    write showed the same mtime (and ctime) -- a write a tool comparing
    timestamps with its last stat cannot see.  Without stat_before nothing
    stats the file after mmap's own fstat, which happens a tick before the
    first write, so nobody observed a timestamp that a write left alone."""
    fd = _prepare(path, 1)
    time.sleep(SETTLE_S)
    m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    _ = m[0]
    time.sleep(SETTLE_S)
    same_mtime, same_both = [], []
    for i in range(rounds):
        m.flush()
        if stat_before:
            before = os.stat(path)
        m[0] = i % 255 + 1
        if stat_before:
            after = os.stat(path)
            same_mtime.append(after.st_mtime_ns == before.st_mtime_ns)
            same_both.append(same_mtime[-1] and after.st_ctime_ns == before.st_ctime_ns)
    m.close()
    st = os.fstat(fd)
    os.close(fd)
    print(json.dumps({"oracle": "stat-write-loop" if stat_before else "sync-write-loop",
                      "rounds": rounds, "ino": st.st_ino, "pid": os.getpid(),
                      "same_mtime": same_mtime, "same_mtime_and_ctime": same_both}),
          flush=True)


def stat_write_loop(path, rounds):
    """msync, stat, write, stat: see _stat_write_loop."""
    _stat_write_loop(path, rounds, True)


def sync_write_loop(path, rounds):
    """The same loop with no stat at all: msync, write."""
    _stat_write_loop(path, rounds, False)


def exposure_loop(path, rounds, store_after=True, before_stat=None, observe=True):
    """The write-exposure workload: one allocated page, `rounds` times:
    msync(MS_SYNC); a store (a write fault: it stamps mtime); [msync |
    munmap, by before_stat]; stat (the observer); [a second store into the
    same page: no fault, no stamp]; msync; stat.  Prints the oracle as one
    JSON line: per round, whether the data changed after the observer's stat
    while the mtime the next stat shows is still the one it saw -- a change
    a tool trusting mtime cannot see."""
    fd = _prepare(path, 1)
    flags, prot = mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
    m = mmap.mmap(fd, PAGE, flags, prot)
    hidden = []
    for i in range(rounds):
        m.flush()
        m[0] = (2 * i) % 250 + 1
        if before_stat == "msync":
            m.flush()
        elif before_stat == "munmap":
            m.close()
        # observe=False: the same writes, and nobody looks until the end.
        seen = os.stat(path) if observe else None
        data = os.pread(fd, 1, 0)     # (open() would fstat: a second observer)
        if before_stat == "munmap":
            m = mmap.mmap(fd, PAGE, flags, prot)
        if store_after:
            m[0] = (2 * i + 1) % 250 + 1
        m.flush()
        changed = os.pread(fd, 1, 0) != data
        if observe:
            now = os.stat(path)
            hidden.append(changed and now.st_mtime_ns == seen.st_mtime_ns)
    m.close()
    st = os.fstat(fd)
    os.close(fd)
    print(json.dumps({"oracle": "exposure-loop", "rounds": rounds, "ino": st.st_ino,
                      "pid": os.getpid(), "store_after": store_after,
                      "before_stat": before_stat, "hidden": hidden}), flush=True)


# How soon the kernel's background writeback takes a dirty inode, while
# exposure_background() runs (/proc/sys/vm, centiseconds; defaults 3000/500).
BACKGROUND_SYSCTLS = {"dirty_expire_centisecs": 50, "dirty_writeback_centisecs": 50}


def exposure_background(path, rounds, map_sync=False, wait_s=2.0):
    """The write-exposure workload with no msync, left to the kernel's
    background writeback (told to come within wait_s: vm.dirty_*, restored
    at the end; on DAX it never writes a mapping back, only fsync, msync
    and sync do): one page, per round a store, a stat (the observer), a
    second store, wait_s, a stat.  map_sync: mapped MAP_SYNC, the way a
    persistent-memory program maps its pool (it makes its stores durable
    itself).  Prints the oracle as exposure_loop() does: per round, whether
    the data changed after the observer's stat under the mtime it saw."""
    saved = {}
    try:
        for name, value in BACKGROUND_SYSCTLS.items():
            with open("/proc/sys/vm/" + name, "r+") as f:
                saved[name] = f.read().strip()
                f.seek(0)
                f.write(str(value))
        fd = _prepare(path, 1)
        flags = MAP_SHARED_VALIDATE | MAP_SYNC if map_sync else mmap.MAP_SHARED
        m = mmap.mmap(fd, PAGE, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        hidden = []
        for i in range(rounds):
            m[0] = (2 * i) % 250 + 1
            seen = os.stat(path)
            data = os.pread(fd, 1, 0)
            m[0] = (2 * i + 1) % 250 + 1
            time.sleep(wait_s)
            now = os.stat(path)
            hidden.append(os.pread(fd, 1, 0) != data and now.st_mtime_ns == seen.st_mtime_ns)
        m.close()
        st = os.fstat(fd)
        os.close(fd)
    finally:
        for name, value in saved.items():
            with open("/proc/sys/vm/" + name, "w") as f:
                f.write(value)
    print(json.dumps({"oracle": "exposure-background", "rounds": rounds, "ino": st.st_ino,
                      "pid": os.getpid(), "map_sync": map_sync, "wait_s": wait_s,
                      "hidden": hidden}), flush=True)


def ivshmem_bar():
    """sysfs path of the lab's ivshmem shared-memory BAR (QEMU's 1af4:1110)."""
    import glob

    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        with open(dev + "/vendor") as v, open(dev + "/device") as d:
            if (v.read().strip(), d.read().strip()) == ("0x1af4", "0x1110"):
                return dev + "/resource2"
    raise FileNotFoundError("no ivshmem device (the lab adds one)")


def pfnmap_write(path, pages):
    """Map a PCI BAR read-only through sysfs (VM_PFNMAP, vm_ops without
    ->pfn_mkwrite), read every page, mprotect it writable, write every page:
    each write is a write-protect fault that tells nobody.  Prints the
    mapping's address (tests match it against the kernel's own fault trace)."""
    import ctypes

    if path == "ivshmem":
        path = ivshmem_bar()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fd = os.open(path, os.O_RDWR)
    size = pages * PAGE
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap %s" % path)
    for i in range(pages):
        ctypes.c_char.from_address(addr + i * PAGE).value
    if libc.mprotect(ctypes.c_void_p(addr), size, mmap.PROT_READ | mmap.PROT_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    for i in range(pages):
        ctypes.c_char.from_address(addr + i * PAGE).value = b"\x01"
    print("mapped %s at 0x%x" % (path, addr))
    os.close(fd)


WORKLOADS = {
    "pfnmap-write": pfnmap_write,
    "map-sync-write": map_sync_write,
    "read-then-write": read_then_write,
    "write-sync-write": write_sync_write,
    "private-write": private_write,
    "first-touch-write": first_touch_write,
    "random-read-write": random_read_write,
    "stat-write-loop": stat_write_loop,     # PAGES is the number of rounds
    "sync-write-loop": sync_write_loop,
    "exposure-loop": exposure_loop,           # PAGES is the number of rounds
    "exposure-no-store": lambda p, n: exposure_loop(p, n, store_after=False),
    "exposure-msync-first": lambda p, n: exposure_loop(p, n, before_stat="msync"),
    "exposure-munmap-first": lambda p, n: exposure_loop(p, n, before_stat="munmap"),
    "exposure-unobserved": lambda p, n: exposure_loop(p, n, observe=False),
    "exposure-background": exposure_background,  # PAGES: rounds, 2 s each
    "exposure-map-sync": lambda p, n: exposure_background(p, n, map_sync=True),
}


# --- the C fault storm (bench/storm.c), shared by bench/bench_storm.py and
# tests/lab/test_load.py: Python cannot write-fault fast enough for a storm.

STORM_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench", "storm.c")


def build_storm(directory):
    """Compile bench/storm.c into directory (gcc -O2 -pthread); its path."""
    import subprocess

    exe = os.path.join(directory, "storm")
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", exe, STORM_SOURCE], check=True)
    return exe


def main(argv):
    if len(argv) != 3 or argv[0] not in WORKLOADS or not argv[2].isdigit():
        sys.stderr.write("usage: python -m pfntrace.lab.workloads {%s} FILE PAGES\n"
                         % "|".join(WORKLOADS))
        return 2
    WORKLOADS[argv[0]](argv[1], int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
