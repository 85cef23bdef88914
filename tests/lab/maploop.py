"""A process that only makes bpf(2) map lookups, for as long as asked.

    python tests/lab/maploop.py SECONDS

It makes its own one-entry array map and looks it up in a loop: the
pattern of a BPF tool's user side that reads its maps by syscall while
tracing (bcc's items() and lookups; pfntrace's own before it read through
memory).  It prints "ready" once the loop runs, and at the end how many
lookups it made.  No compile, no bcc: ctypes and the raw syscall.
"""

import ctypes
import os
import sys
import time

SYS_BPF = 321            # x86_64
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_TYPE_ARRAY = 2

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class _CreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 108)]


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad0", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("pad", ctypes.c_uint8 * 96)]


def _bpf(cmd, attr):
    r = libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r


def main(seconds):
    fd = _bpf(BPF_MAP_CREATE, _CreateAttr(map_type=BPF_MAP_TYPE_ARRAY, key_size=4,
                                          value_size=8, max_entries=1))
    key, value = ctypes.c_uint32(0), ctypes.c_uint64()
    attr = _ElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    print("ready", flush=True)
    n, end = 0, time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for _ in range(1000):
            _bpf(BPF_MAP_LOOKUP_ELEM, attr)
        n += 1000
    print(n, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
