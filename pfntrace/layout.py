"""The event layout, read by cffi from the same header the BPF C includes.

There is no second, hand-written copy of struct pft_event: the header text is
fed to cffi's cdef parser, and every offset Python uses comes from there.
"""

import os
import re

import cffi

HEADER = os.path.join(os.path.dirname(__file__), "bpf", "pfntrace.h")

# Kernel-style fixed-width types the header uses; the BPF side gets them from
# <linux/types.h>.
_TYPEDEFS = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;
typedef uint64_t __u64; typedef int32_t __s32; typedef int64_t __s64;
"""


def _cdef_text(path=HEADER):
    with open(path) as f:
        text = f.read()
    # cffi's cdef knows plain integer #defines but not include guards.
    text = re.sub(r"^#(ifndef|endif|include).*$", "", text, flags=re.M)
    text = re.sub(r"^#define\s+\w+_H\s*$", "", text, flags=re.M)
    return _TYPEDEFS + text


ffi = cffi.FFI()
ffi.cdef(_cdef_text())
_lib = ffi.dlopen(None)

EVENT_SIZE = ffi.sizeof("struct pft_event")
# The header promises a hole-free, 8-byte-multiple struct: check it here so a
# careless edit fails at import rather than as garbage on the wire.
assert EVENT_SIZE % 8 == 0, EVENT_SIZE


def const(name):
    """The value of a PFT_* #define from the header."""
    return getattr(_lib, name)


def constants(prefix):
    """{name_without_prefix: value} for every #define starting with prefix."""
    out = {}
    for name in dir(_lib):
        if name.startswith(prefix):
            out[name[len(prefix):]] = getattr(_lib, name)
    return out


EVENT_TYPES = {v: k for k, v in constants("PFT_EV_").items()}

FIELDS = [name for name, _ in ffi.typeof("struct pft_event").fields]

# What record counts per (file, process) in the kernel instead of sending
# events (struct pft_file_counts): each is the name of a correlate.FileStats
# counter.
FILE_COUNTERS = [name for name, _ in ffi.typeof("struct pft_file_counts").fields
                 if name != "comm"]


def encode(**fields):
    """Build one raw event from keyword fields (the rest zero).

    Used by tests to make hand-built event streams and by nothing on the hot
    path.
    """
    ev = ffi.new("struct pft_event *")
    for name, value in fields.items():
        if name == "comm":
            raw = value.encode()[: const("PFT_COMM_LEN") - 1]
            ffi.memmove(ev.comm, raw, len(raw))
        elif isinstance(value, (list, tuple)):
            arr = getattr(ev, name)
            for i, v in enumerate(value):
                arr[i] = v
        else:
            setattr(ev, name, value)
    return bytes(ffi.buffer(ev))
