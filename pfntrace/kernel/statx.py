"""statx(2) through cffi: the one stat that says whether a file is DAX.

os.stat has neither STATX_ATTR_DAX nor the nanosecond-exact timestamps as
the kernel stores them, and the mount option alone does not prove DAX (ext4
falls back silently when the device cannot do it).
"""

import os

import cffi

_ffi = cffi.FFI()
_ffi.cdef("""
struct statx_timestamp { int64_t tv_sec; uint32_t tv_nsec; int32_t __reserved; };
struct statx {
    uint32_t stx_mask; uint32_t stx_blksize; uint64_t stx_attributes;
    uint32_t stx_nlink; uint32_t stx_uid; uint32_t stx_gid; uint16_t stx_mode;
    uint16_t __spare0; uint64_t stx_ino; uint64_t stx_size; uint64_t stx_blocks;
    uint64_t stx_attributes_mask;
    struct statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major; uint32_t stx_rdev_minor;
    uint32_t stx_dev_major; uint32_t stx_dev_minor;
    uint64_t __spare2[14];
};
int statx(int dirfd, const char *pathname, int flags, unsigned int mask,
          struct statx *statxbuf);
""")
_libc = _ffi.dlopen(None)

AT_FDCWD = -100
STATX_BASIC_STATS = 0x7FF
STATX_ATTR_DAX = 0x200000

# The kernel writes 256 bytes; a cdef mistake would corrupt memory, so fail
# at import instead.
assert _ffi.sizeof("struct statx") == 256


def _ns(ts):
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


def statx(path):
    """{mtime_ns, ctime_ns, ino, dev_major, dev_minor, dax, size}; dax is
    None when the kernel or filesystem does not report the attribute."""
    buf = _ffi.new("struct statx *")
    if _libc.statx(AT_FDCWD, os.fsencode(path), 0, STATX_BASIC_STATS, buf) != 0:
        err = _ffi.errno
        raise OSError(err, os.strerror(err), path)
    known = bool(buf.stx_attributes_mask & STATX_ATTR_DAX)
    return {
        "mtime_ns": _ns(buf.stx_mtime),
        "ctime_ns": _ns(buf.stx_ctime),
        "ino": buf.stx_ino,
        "dev_major": buf.stx_dev_major,
        "dev_minor": buf.stx_dev_minor,
        "dax": bool(buf.stx_attributes & STATX_ATTR_DAX) if known else None,
        "size": buf.stx_size,
    }
