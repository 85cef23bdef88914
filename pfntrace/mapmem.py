"""BPF array maps read and written through memory (BPF_F_MMAPABLE).

A bpf(2) map syscall holds its CPU's bpf_prog_active from start to end, and
on a kernel that preempts kernel code (Debian's 7.x: preempt=lazy) the task
can be preempted inside it: meanwhile the kernel skips every kprobe and
tracepoint program that fires on that CPU, any task's (pfntrace.h has the
details).  What pfntrace reads or writes while a workload runs therefore
goes through a shared mapping of the map, never through a syscall.
"""

import mmap
import struct

_U64 = struct.Struct("=Q")
_S64 = struct.Struct("=q")


class MappedArray:
    """One array map created with BPF_F_MMAPABLE, mapped read-write.

    The kernel lays its values out back to back, each rounded up to 8
    bytes, from the start of the mapping (kernel/bpf/arraymap.c)."""

    def __init__(self, map_fd, value_size, entries):
        """map_fd -1: anonymous memory of the same layout (for tests)."""
        self.stride = (value_size + 7) & ~7
        self.entries = entries
        size = self.stride * entries
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self.mem = mmap.mmap(map_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def put(self, i, data):
        """Write a value's bytes at index i (a test's stand-in for the BPF side)."""
        self.mem[self.stride * i:self.stride * i + len(data)] = data

    def u64(self, i):
        return _U64.unpack_from(self.mem, self.stride * i)[0]

    def s64(self, i):
        return _S64.unpack_from(self.mem, self.stride * i)[0]

    def set_u64(self, i, value):
        _U64.pack_into(self.mem, self.stride * i, value)

    def u64s(self):
        """Every value as an unsigned 64-bit number (an array of u64)."""
        return list(struct.unpack_from("=%dQ" % self.entries, self.mem, 0))

    def rows(self, ffi, ctype, count):
        """The first `count` values as cdata `ctype *`, each copied out of
        the mapping (so it can be closed while they live)."""
        size = ffi.sizeof(ctype)
        out = []
        for i in range(min(count, self.entries)):
            row = ffi.new(ctype + " *")
            ffi.memmove(row, self.mem[self.stride * i:self.stride * i + size], size)
            out.append(row)
        return out

    def close(self):
        self.mem.close()

