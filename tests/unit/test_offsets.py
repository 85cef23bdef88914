"""bpf_defines over synthetic kernels (one per timestamp layout) and over the
real BTF of this host and of the lab kernels (installed, or fetched)."""

import os
import re

import pytest

from test_btf import HOST_BTF, BtfBuilder

from pfntrace.kernel.btf import Btf
from pfntrace.kernel.offsets import OffsetError, bpf_defines

NSEC = 1  # marker: the timestamp is a timespec64


def synthetic_kernel(timestamps, page_entry_size=False, drop=None, vma_lock=False):
    """A BTF with every struct bpf_defines reads.

    timestamps: [(member name, byte offset, NSEC)] for timespec64 members or
    [(member name, byte offset, size)] for plain integers.  drop removes one
    (struct, member) to test the error.
    """
    b = BtfBuilder()
    u64 = b.int("long unsigned int", 8)
    s64 = b.int("long long int", 8, signed=True)
    u32 = b.int("unsigned int", 4)
    long_ = b.int("long int", 8, signed=True)
    ptr = b.ptr()
    timespec64 = b.struct("timespec64", 16, [("tv_sec", s64, 0), ("tv_nsec", long_, 64)])

    def members(*fields):
        return [(name, typ, off * 8) for name, typ, off in fields if drop != name]

    head = b.struct("", 40, members(("vma", ptr, 0), ("gfp_mask", u32, 8), ("pgoff", u64, 16),
                                    ("address", u64, 24), ("real_address", u64, 32)))
    b.struct("vm_fault", 48, [("", b.const(head), 0)] + members(("flags", u32, 40)))
    flags = b.struct("", 8, members(("vm_flags", u64, 0), ("__vm_flags", u64, 0)), union=True)
    b.struct("vm_area_struct", 136, members(("vm_start", u64, 0), ("vm_mm", ptr, 16),
                                            ("vm_ops", ptr, 72), ("vm_pgoff", u64, 80),
                                            ("vm_file", ptr, 88)) + [("", flags, 32 * 8)])
    b.struct("task_struct", 4096, members(("mm", ptr, 2744)))
    b.struct("vm_operations_struct", 96, members(
        ("fault", ptr, 40), ("huge_fault", ptr, 48), ("map_pages", ptr, 56),
        ("page_mkwrite", ptr, 72),
        ("pfn_mkwrite", ptr, 80)))
    path = b.struct("path", 16, members(("mnt", ptr, 0), ("dentry", ptr, 8)))
    b.struct("file", 64, members(("f_path", path, 16), ("f_inode", ptr, 32)))
    hash_len = b.struct("", 8, members(("hash_len", u64, 0)), union=True)
    qstr = b.struct("qstr", 16, [("", hash_len, 0)] + members(("name", ptr, 8)))
    b.struct("dentry", 64, members(("d_parent", ptr, 24), ("d_name", qstr, 32),
                                   ("d_inode", ptr, 48)))
    b.struct("kstat", 160, members(("mtime", timespec64, 80), ("ctime", timespec64, 96)))
    stamp_members = [(name, timespec64 if kind == NSEC else (u32 if kind == 4 else s64), off)
                     for name, off, kind in timestamps]
    b.struct("inode", 256, members(("i_flags", u32, 12), ("i_sb", ptr, 40), ("i_ino", u64, 64),
                                   *stamp_members))
    b.struct("super_block", 64, members(("s_dev", u32, 16), ("s_time_gran", u32, 24)))
    flags = [("FAULT_FLAG_WRITE", 1), ("FAULT_FLAG_MKWRITE", 2)]
    b.enum("fault_flag", flags + ([("FAULT_FLAG_VMA_LOCK", 1 << 12)] if vma_lock else []))
    if page_entry_size:
        b.enum("page_entry_size", [("PE_SIZE_PTE", 0), ("PE_SIZE_PMD", 1), ("PE_SIZE_PUD", 2)])
    return Btf(b.build())


def test_no_timekeeper_in_btf_means_no_clock_not_an_error():
    defines = bpf_defines(synthetic_kernel([("i_mtime", 104, NSEC), ("i_ctime", 120, NSEC)]))
    assert defines["TKC_LAYOUT"] == 0 and defines["SB_S_TIME_GRAN"] == 24


def stamps(defines):
    return tuple(defines["INODE_%s" % k] for k in
                 ("MTIME_SEC", "MTIME_NSEC", "CTIME_SEC", "CTIME_NSEC"))


def test_6_1_layout_i_mtime_timespec64_and_page_entry_size():
    btf = synthetic_kernel([("i_mtime", 104, NSEC), ("i_ctime", 120, NSEC)],
                           page_entry_size=True)
    defines = bpf_defines(btf)
    assert stamps(defines) == (104, 112, 120, 128)
    assert defines["HUGE_FAULT_ARG_IS_ORDER"] == 0
    assert defines["VMF_FLAG_VMA_LOCK"] == 0     # no per-VMA locks before 6.4


def test_6_6_layout_i_mtime_and___i_ctime():
    btf = synthetic_kernel([("i_mtime", 96, NSEC), ("__i_ctime", 112, NSEC)])
    defines = bpf_defines(btf)
    assert stamps(defines) == (96, 104, 112, 120)
    assert defines["HUGE_FAULT_ARG_IS_ORDER"] == 1


def test_6_7_layout___i_mtime_and___i_ctime():
    btf = synthetic_kernel([("__i_atime", 80, NSEC), ("__i_mtime", 96, NSEC),
                            ("__i_ctime", 112, NSEC)])
    assert stamps(bpf_defines(btf)) == (96, 104, 112, 120)


def test_6_11_layout_split_sec_and_nsec():
    btf = synthetic_kernel([("i_atime_sec", 88, 8), ("i_mtime_sec", 96, 8),
                            ("i_ctime_sec", 104, 8), ("i_atime_nsec", 112, 4),
                            ("i_mtime_nsec", 116, 4), ("i_ctime_nsec", 120, 4)],
                           vma_lock=True)
    defines = bpf_defines(btf)
    assert stamps(defines) == (96, 116, 104, 120)
    assert defines["VMF_FLAG_VMA_LOCK"] == 4096 and defines["VMOPS_MAP_PAGES"] == 56


def test_fixed_fields_through_anonymous_members():
    defines = bpf_defines(synthetic_kernel([("i_mtime_sec", 96, 8), ("i_mtime_nsec", 116, 4),
                                            ("i_ctime_sec", 104, 8), ("i_ctime_nsec", 120, 4)]))
    assert defines["VMF_VMA"] == 0 and defines["VMF_PGOFF"] == 16
    assert defines["VMF_ADDRESS"] == 24 and defines["VMF_FLAGS"] == 40
    assert defines["VMA_VM_FLAGS"] == 32 and defines["VMA_VM_FILE"] == 88
    assert defines["VMOPS_PFN_MKWRITE"] == 80 and defines["SB_S_DEV"] == 16
    assert defines["VMA_VM_PGOFF"] == 80 and defines["VMA_VM_MM"] == 16
    assert defines["TASK_MM"] == 2744


def test_missing_member_names_struct_and_member():
    btf = synthetic_kernel([("i_mtime", 104, NSEC), ("i_ctime", 120, NSEC)], drop="vm_file")
    with pytest.raises(OffsetError, match="struct vm_area_struct has no member vm_file"):
        bpf_defines(btf)


def test_missing_timestamps_name_what_was_tried():
    btf = synthetic_kernel([("i_mtime", 104, NSEC)])
    with pytest.raises(OffsetError, match="ctime members i_ctime_sec, __i_ctime, i_ctime"):
        bpf_defines(btf)


@pytest.mark.skipif(not os.path.exists(HOST_BTF), reason="no %s" % HOST_BTF)
def test_host_defines():
    if not os.uname().release.startswith("6.18."):
        pytest.skip("expected values are for 6.18")
    defines = bpf_defines(Btf.load(HOST_BTF))
    assert defines["VMA_VM_FILE"] == 88
    assert stamps(defines) == (96, 116, 104, 120)
    assert defines["HUGE_FAULT_ARG_IS_ORDER"] == 1


# The lab kernels' BTF, extracted from the Debian bzImages the lab boots.  By
# hand this was:
#   python3 -c 'read setup_sects at 0x1f1, payload_offset/length at 0x248'
#     -> payload (6.1: xz, 6.12: zstd); xz -dc / zstd -dcq > vmlinux
#   objcopy -O binary --only-section=.BTF vmlinux btf
# The test unpacks with the lab's code (Btf reads .BTF from the ELF itself).
# Keyed by kernel series: a Debian point release (6.1.0-56 -> -57) keeps these
# layouts, and the test checks whichever release of the series setup put here.
LAB_KERNELS = {
    "6.1": {
        "VMF_VMA": 0, "VMF_PGOFF": 16, "VMF_ADDRESS": 24, "VMF_FLAGS": 40,
        "VMA_VM_START": 0, "VMA_VM_FLAGS": 32, "VMA_VM_OPS": 96, "VMA_VM_FILE": 112,
        "VMA_VM_PGOFF": 104, "VMA_VM_MM": 16, "TASK_MM": 2272,
        "VMOPS_FAULT": 40, "VMOPS_HUGE_FAULT": 48, "VMOPS_MAP_PAGES": 56, "VMOPS_PAGE_MKWRITE": 72,
        "VMOPS_PFN_MKWRITE": 80, "FILE_F_INODE": 32, "INODE_I_INO": 64, "INODE_I_SB": 40,
        "INODE_I_FLAGS": 12, "SB_S_DEV": 16, "INODE_MTIME_SEC": 104, "INODE_MTIME_NSEC": 112,
        "INODE_CTIME_SEC": 120, "INODE_CTIME_NSEC": 128, "HUGE_FAULT_ARG_IS_ORDER": 0,
        "VMF_FLAG_VMA_LOCK": 0,
        "FILE_F_PATH_DENTRY": 24, "DENTRY_D_PARENT": 24, "DENTRY_D_NAME_NAME": 40,
        "SB_S_TIME_GRAN": 928, "PATH_DENTRY": 8, "DENTRY_D_INODE": 48,
        "KSTAT_MTIME_SEC": 80, "KSTAT_MTIME_NSEC": 88, "KSTAT_CTIME_SEC": 96,
        "KSTAT_CTIME_NSEC": 104,
        "TKC_LAYOUT": 1, "TKC_SEQ": 0, "TKC_XTIME_SEC": 120, "TKC_XTIME_NSEC": 40,
        "TKC_SHIFT": 36, "TKC_OFFS_REAL": 152,
    },
    "6.12": {
        "VMF_VMA": 0, "VMF_PGOFF": 16, "VMF_ADDRESS": 24, "VMF_FLAGS": 40,
        "VMA_VM_START": 0, "VMA_VM_FLAGS": 32, "VMA_VM_OPS": 112, "VMA_VM_FILE": 128,
        "VMA_VM_PGOFF": 120, "VMA_VM_MM": 16, "TASK_MM": 2304,
        "VMOPS_FAULT": 40, "VMOPS_HUGE_FAULT": 48, "VMOPS_MAP_PAGES": 56, "VMOPS_PAGE_MKWRITE": 72,
        "VMOPS_PFN_MKWRITE": 80, "FILE_F_INODE": 40, "INODE_I_INO": 64, "INODE_I_SB": 40,
        "INODE_I_FLAGS": 12, "SB_S_DEV": 16, "INODE_MTIME_SEC": 96, "INODE_MTIME_NSEC": 116,
        "INODE_CTIME_SEC": 104, "INODE_CTIME_NSEC": 120, "HUGE_FAULT_ARG_IS_ORDER": 1,
        "VMF_FLAG_VMA_LOCK": 4096,
        "FILE_F_PATH_DENTRY": 72, "DENTRY_D_PARENT": 24, "DENTRY_D_NAME_NAME": 40,
        "SB_S_TIME_GRAN": 920, "PATH_DENTRY": 8, "DENTRY_D_INODE": 48,
        "KSTAT_MTIME_SEC": 80, "KSTAT_MTIME_NSEC": 88, "KSTAT_CTIME_SEC": 96,
        "KSTAT_CTIME_NSEC": 104,
        "TKC_LAYOUT": 1, "TKC_SEQ": 0, "TKC_XTIME_SEC": 120, "TKC_XTIME_NSEC": 40,
        "TKC_SHIFT": 36, "TKC_OFFS_REAL": 152,
    },
    # The newest kernel (pfntrace.lab.newest), tested when the one fetched
    # into the cache is of this series.  i_flags moved to 4, vm_area_struct shrank,
    # vm_operations_struct grew a member before ->fault, and the
    # timekeeper is struct tk_data (timekeeper_data[], no tk_core).
    "7.3": {
        "VMF_VMA": 0, "VMF_PGOFF": 16, "VMF_ADDRESS": 24, "VMF_FLAGS": 40,
        "VMA_VM_START": 0, "VMA_VM_FLAGS": 32, "VMA_VM_OPS": 72, "VMA_VM_FILE": 88,
        "VMA_VM_PGOFF": 80, "VMA_VM_MM": 16, "TASK_MM": 2744,
        "VMOPS_FAULT": 48, "VMOPS_HUGE_FAULT": 56, "VMOPS_MAP_PAGES": 64, "VMOPS_PAGE_MKWRITE": 80,
        "VMOPS_PFN_MKWRITE": 88, "FILE_F_INODE": 32, "INODE_I_INO": 64, "INODE_I_SB": 40,
        "INODE_I_FLAGS": 4, "SB_S_DEV": 16, "INODE_MTIME_SEC": 96, "INODE_MTIME_NSEC": 116,
        "INODE_CTIME_SEC": 104, "INODE_CTIME_NSEC": 120, "HUGE_FAULT_ARG_IS_ORDER": 1,
        "VMF_FLAG_VMA_LOCK": 4096,
        "FILE_F_PATH_DENTRY": 72, "DENTRY_D_PARENT": 24, "DENTRY_D_NAME_NAME": 40,
        "SB_S_TIME_GRAN": 928,
        "TKC_LAYOUT": 1, "TKC_SEQ": 0, "TKC_XTIME_SEC": 64, "TKC_XTIME_NSEC": 40,
        "TKC_SHIFT": 36, "TKC_OFFS_REAL": 96,
        "PATH_DENTRY": 8, "DENTRY_D_INODE": 48,
        "KSTAT_MTIME_SEC": 80, "KSTAT_MTIME_NSEC": 88, "KSTAT_CTIME_SEC": 96,
        "KSTAT_CTIME_NSEC": 104,
    },
}


def vmlinux_from_bzimage(path):
    """The uncompressed vmlinux ELF inside a bzImage (the lab's own unpacking)."""
    from pfntrace.lab import kernels

    with open(path, "rb") as f:
        image = f.read()
    try:
        return kernels._decompress(kernels._payload(image))
    except kernels.LabError as e:
        pytest.skip(str(e))


def lab_image(series):
    """(release, bzImage) of the lab kernel of this series that setup
    installed or fetched; skips, saying why, when there is none."""
    from pfntrace.lab import kernels

    alias = series if series in kernels.LAB_KERNELS else "newest"
    k = kernels.describe(alias)
    if not k.release:
        pytest.skip("no %s lab kernel here: %s" % (alias, "; ".join(k.missing)))
    if not re.match(r"%s[.+-]" % re.escape(series), k.release):
        pytest.skip("the %s lab kernel here is %s, not of the %s series these layouts are for"
                    % (alias, k.release, series))
    if not os.path.exists(k.image):
        pytest.skip("no %s" % k.image)
    return k.release, k.image


@pytest.mark.parametrize("series", sorted(LAB_KERNELS))
def test_lab_kernel_defines(series, tmp_path):
    _release, image = lab_image(series)
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(vmlinux_from_bzimage(image))
    assert bpf_defines(Btf.load(str(vmlinux))) == LAB_KERNELS[series]
