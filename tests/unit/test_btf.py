"""The BTF reader, over small synthetic blobs and over this host's vmlinux BTF.

BtfBuilder is a tiny BTF encoder (Documentation/bpf/btf.rst) so each layout
case the reader must handle can be written down exactly; test_offsets.py
reuses it.
"""

import os
import struct
import time

import pytest

from pfntrace.kernel.btf import (ARRAY, CONST, ENUM, ENUM64, FUNC, FUNC_PROTO, INT, PTR,
                                 STRUCT, TYPEDEF, UNION, Btf, BtfError)

HOST_BTF = "/sys/kernel/btf/vmlinux"


class BtfBuilder:
    """base: another builder, whose BTF this one is split BTF on top of (a
    module's): type ids count on from the base's, and names the base has
    point at the base's strings."""

    def __init__(self, base=None):
        self._strings = bytearray(b"\0")
        self._offsets = {"": 0}
        self._types = []
        self._base = base

    def _str(self, name):
        if self._base is not None and name in self._base._offsets:
            return self._base._offsets[name]
        if name not in self._offsets:
            self._offsets[name] = len(self._strings)
            self._strings += name.encode() + b"\0"
        return self._offsets[name] + (len(self._base._strings) if self._base else 0)

    def _add(self, name, kind, vlen, size_or_type, extra=(), kind_flag=0):
        info = (kind_flag << 31) | (kind << 24) | vlen
        self._types.append(struct.pack("<III", self._str(name), info, size_or_type)
                           + b"".join(struct.pack("<I", w) for w in extra))
        return len(self._types) + (len(self._base._types) if self._base else 0)

    def int(self, name, size, signed=False):
        return self._add(name, INT, 0, size, [(1 if signed else 0) << 24 | size * 8])

    def ptr(self, target=0):
        return self._add("", PTR, 0, target)

    def typedef(self, name, target):
        return self._add(name, TYPEDEF, 0, target)

    def const(self, target):
        return self._add("", CONST, 0, target)

    def array(self, elem, index, nelems):
        return self._add("", ARRAY, 0, 0, [elem, index, nelems])

    def struct(self, name, size, members, union=False):
        """members: (name, type id, bit offset[, bitfield bits])."""
        bitfields = any(len(m) > 3 for m in members)
        extra = []
        for m in members:
            offset = m[2] | (m[3] << 24 if len(m) > 3 else 0)
            extra += [self._str(m[0]), m[1], offset]
        return self._add(name, UNION if union else STRUCT, len(members), size, extra,
                         kind_flag=int(bitfields))

    def enum(self, name, values):
        extra = []
        for value_name, value in values:
            extra += [self._str(value_name), value]
        return self._add(name, ENUM, len(values), 4, extra)

    def func(self, name):
        proto = self._add("", FUNC_PROTO, 0, 0)
        return self._add(name, FUNC, 0, proto)

    def build(self):
        types = b"".join(self._types)
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                             len(self._strings))
        return header + types + bytes(self._strings)


def small_btf():
    b = BtfBuilder()
    u64 = b.int("long unsigned int", 8)
    u32 = b.int("unsigned int", 4)
    vm_flags_t = b.typedef("vm_flags_t", u64)
    flags_union = b.struct("", 8, [("vm_flags", b.const(vm_flags_t), 0),
                                   ("__vm_flags", vm_flags_t, 0)], union=True)
    b.struct("vm_area_struct", 96, [("vm_start", u64, 0), ("vm_end", u64, 64),
                                    ("", flags_union, 256), ("vm_file", b.ptr(), 704)])
    # vm_fault starts with an anonymous *const* struct.
    head = b.struct("", 16, [("vma", b.ptr(), 0), ("pgoff", u64, 64)])
    b.struct("vm_fault", 32, [("", b.const(head), 0), ("flags", u32, 128)])
    # A bitfield struct: three flags packed into one int, then a plain int.
    b.struct("packed", 8, [("a", u32, 0, 1), ("b", u32, 1, 3), ("c", u32, 12, 4),
                           ("d", u32, 32, 0)])
    b.struct("arrays", 40, [("name", b.array(b.int("char", 1), u32, 16), 0),
                            ("tail", u64, 256)])
    b.func("do_wp_page")
    b.enum("page_entry_size", [("PE_SIZE_PTE", 0), ("PE_SIZE_PMD", 1)])
    # A 64-bit enum (kernels built with a newer pahole): each value in two words.
    wide = []
    for value_name, value in (("LOW", 5), ("HIGH", (7 << 32) | 9)):
        wide += [b._str(value_name), value & 0xFFFFFFFF, value >> 32]
    b._add("wide", ENUM64, 2, 8, wide)
    return Btf(b.build())


def test_plain_and_anonymous_union_members():
    btf = small_btf()
    assert btf.member_offset("vm_area_struct", "vm_start") == 0
    assert btf.member_offset("vm_area_struct", "vm_flags") == 32
    assert btf.member_size("vm_area_struct", "vm_flags") == 8
    assert btf.member_offset("vm_area_struct", "vm_file") == 88


def test_anonymous_const_struct_is_looked_through():
    btf = small_btf()
    assert btf.member_offset("vm_fault", "vma") == 0
    assert btf.member_offset("vm_fault", "pgoff") == 8
    assert btf.member_offset("vm_fault", "flags") == 16


def test_kind_flag_bitfield_offsets():
    btf = small_btf()
    assert btf.member_offset("packed", "a") == 0
    assert btf.member_offset("packed", "b") == 0
    assert btf.member_offset("packed", "c") == 1  # bit 12 is in byte 1
    assert btf.member_offset("packed", "d") == 4
    assert btf.member_size("packed", "c") == 4


def test_sizes_through_arrays_and_typedefs():
    btf = small_btf()
    assert btf.member_size("arrays", "name") == 16
    assert btf.member_size("vm_area_struct", "vm_file") == 8
    assert btf.struct_size("vm_area_struct") == 96


def test_enum_values_32_and_64_bit():
    btf = small_btf()
    assert btf.enum_value("page_entry_size", "PE_SIZE_PMD") == 1
    assert btf.enum_value("wide", "LOW") == 5
    assert btf.enum_value("wide", "HIGH") == (7 << 32) | 9
    assert btf.has_enum("wide")
    # Absent enumerator, an enumerator of another enum, absent enum.
    assert btf.enum_value("page_entry_size", "PE_SIZE_PUD") is None
    assert btf.enum_value("wide", "PE_SIZE_PTE") is None
    assert btf.enum_value("fault_flag", "LOW") is None


def test_presence_queries():
    btf = small_btf()
    assert btf.has_struct("vm_fault")
    assert not btf.has_struct("vm_flags_t")  # a typedef, not a struct
    assert btf.has_func("do_wp_page")
    assert not btf.has_func("wp_pfn_shared")
    assert btf.has_enum("page_entry_size")
    assert btf.has_member("vm_area_struct", "vm_flags")
    assert not btf.has_member("vm_area_struct", "vm_mm")
    # A string that exists, but only as a member name, is not a struct.
    assert not btf.has_struct("vm_start")


def test_missing_names_give_one_line_errors():
    btf = small_btf()
    with pytest.raises(BtfError, match="struct inode is not in"):
        btf.member_offset("inode", "i_ino")
    with pytest.raises(BtfError, match="struct vm_fault has no member address"):
        btf.member_offset("vm_fault", "address")


def test_bad_data_is_rejected():
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="too short"):
        Btf(b"\x9f\xeb")
    blob = bytearray(BtfBuilder().build())
    struct.pack_into("<I", blob, 12, 4096)  # type_len past the end
    with pytest.raises(BtfError, match="past the end"):
        Btf(bytes(blob))
    with pytest.raises(BtfError, match="cannot read BTF"):
        Btf.load("/nonexistent/btf")


def test_btf_inside_an_elf_file(tmp_path):
    blob = BtfBuilder()
    blob.struct("s", 4, [("x", blob.int("int", 4), 0)])
    btf_bytes = blob.build()
    names = b"\0.BTF\0.shstrtab\0"
    # ELF header, then the section data, then 3 section headers (null, .BTF,
    # .shstrtab): just enough of an ELF for the reader.
    data_off = 64
    names_off = data_off + len(btf_bytes)
    shoff = names_off + len(names)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)

    def section_header(name, offset, size):
        sh = bytearray(64)
        struct.pack_into("<I", sh, 0, name)
        struct.pack_into("<QQ", sh, 0x18, offset, size)
        return bytes(sh)

    elf = (bytes(header) + btf_bytes + names + bytes(64)
           + section_header(1, data_off, len(btf_bytes))
           + section_header(6, names_off, len(names)))
    path = tmp_path / "vmlinux"
    path.write_bytes(elf)
    assert Btf.load(str(path)).member_offset("s", "x") == 0


host = pytest.mark.skipif(not os.path.exists(HOST_BTF), reason="no %s" % HOST_BTF)


@host
def test_host_btf_loads_fast():
    start = time.monotonic()
    btf = Btf.load(HOST_BTF)
    btf.member_offset("vm_area_struct", "vm_file")
    # Emulated lab CPUs are 10-20x slower; 2 s there means ~0.15 s here.
    assert time.monotonic() - start < 0.15 * 2
    assert btf.type_count > 10000


@host
def test_host_btf_layout():
    btf = Btf.load(HOST_BTF)
    release = os.uname().release
    if not release.startswith("6.18."):
        pytest.skip("layout values are for 6.18, this is %s" % release)
    assert btf.member_offset("vm_area_struct", "vm_file") == 88
    assert btf.member_offset("vm_area_struct", "vm_flags") == 32
    assert btf.member_offset("vm_fault", "flags") == 40
    assert btf.has_member("inode", "i_mtime_sec")
    assert not btf.has_member("inode", "i_mtime")
    assert btf.has_func("do_wp_page")
    assert not btf.has_func("wp_pfn_shared")
    assert not btf.has_enum("page_entry_size")


def test_a_modules_split_btf_gives_func_ids_counting_on_from_vmlinux():
    """A module's BTF (/sys/kernel/btf/ext4) is split BTF: its type ids
    follow vmlinux's and its names are its own strings or, deduplicated,
    vmlinux's.  func_id() gives the id a BPF trampoline program is loaded
    against."""
    base = BtfBuilder()
    base.int("int", 4)
    base.func("do_wp_page")         # ids 2 (proto), 3
    base.func("filemap_fault")      # 4, 5: a name the module also uses
    vmlinux = Btf(base.build())
    mod = BtfBuilder(base=base)
    mod.int("unsigned int", 4)      # 6
    mod.func("ext4_dax_fault")      # 7, 8
    mod.func("filemap_fault")       # 9, 10: its name is vmlinux's string
    ext4 = Btf(mod.build(), source="ext4", base=vmlinux)
    assert vmlinux.func_id("do_wp_page") == 3
    assert ext4.func_id("ext4_dax_fault") == 8
    assert ext4.func_id("filemap_fault") == 10
    assert ext4.func_id("do_wp_page") is None       # vmlinux's, not the module's
    assert vmlinux.func_id("ext4_dax_fault") is None
    assert ext4.func_id("no_such_function") is None
