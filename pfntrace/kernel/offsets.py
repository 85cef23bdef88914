"""The struct offsets pfntrace's BPF C program needs, as -D macros.

bcc compiles the program with no kernel headers (our machines have none, and
headers of another kernel give wrong offsets), so each field the program reads
is located in the running kernel's BTF.  Layout differences between kernels
are detected by which member names exist, never by version number: distros
backport, and the name is what the layout really depends on.
"""

from pfntrace.kernel.btf import BtfError

# (macro, struct, member): fields whose name is the same on every kernel
# pfntrace supports (6.1 onwards).
_FIXED_FIELDS = (
    ("VMF_VMA", "vm_fault", "vma"),
    ("VMF_PGOFF", "vm_fault", "pgoff"),
    ("VMF_ADDRESS", "vm_fault", "address"),
    ("VMF_FLAGS", "vm_fault", "flags"),
    ("VMA_VM_START", "vm_area_struct", "vm_start"),
    ("VMA_VM_FLAGS", "vm_area_struct", "vm_flags"),
    ("VMA_VM_OPS", "vm_area_struct", "vm_ops"),
    ("VMA_VM_FILE", "vm_area_struct", "vm_file"),
    # unmap_page_range(tlb, vma, addr, end): which file pages, whose mm.
    ("VMA_VM_PGOFF", "vm_area_struct", "vm_pgoff"),
    ("VMA_VM_MM", "vm_area_struct", "vm_mm"),
    ("TASK_MM", "task_struct", "mm"),
    ("VMOPS_FAULT", "vm_operations_struct", "fault"),
    ("VMOPS_HUGE_FAULT", "vm_operations_struct", "huge_fault"),
    ("VMOPS_MAP_PAGES", "vm_operations_struct", "map_pages"),
    ("VMOPS_PAGE_MKWRITE", "vm_operations_struct", "page_mkwrite"),
    ("VMOPS_PFN_MKWRITE", "vm_operations_struct", "pfn_mkwrite"),
    ("FILE_F_INODE", "file", "f_inode"),
    ("INODE_I_INO", "inode", "i_ino"),
    ("INODE_I_SB", "inode", "i_sb"),
    ("INODE_I_FLAGS", "inode", "i_flags"),
    ("SB_S_DEV", "super_block", "s_dev"),
    ("SB_S_TIME_GRAN", "super_block", "s_time_gran"),
    # getattr: vfs_getattr_nosec(path, stat): path->dentry->d_inode, and the
    # struct kstat it fills.
    ("PATH_DENTRY", "path", "dentry"),
    ("DENTRY_D_INODE", "dentry", "d_inode"),
)

# Member names a timestamp has had, newest layout first.  6.11+ split each
# timestamp into i_<t>_sec / i_<t>_nsec; before that it was a struct
# timespec64 named __i_<t> (6.7-6.10; ctime alone already in 6.6) or i_<t>.
_TIMESPEC_NAMES = {"mtime": ("__i_mtime", "i_mtime"), "ctime": ("__i_ctime", "i_ctime")}


class OffsetError(Exception):
    """A struct or member the BPF program needs is not in the kernel's BTF."""


def _timestamp_defines(btf, which):
    """INODE_<WHICH>_SEC / _NSEC offsets for 'mtime' or 'ctime'."""
    prefix = "INODE_%s_" % which.upper()
    if btf.has_member("inode", "i_%s_sec" % which):
        return {
            prefix + "SEC": btf.member_offset("inode", "i_%s_sec" % which),
            prefix + "NSEC": btf.member_offset("inode", "i_%s_nsec" % which),
        }
    for member in _TIMESPEC_NAMES[which]:
        if btf.has_member("inode", member):
            base = btf.member_offset("inode", member)
            return {
                prefix + "SEC": base + btf.member_offset("timespec64", "tv_sec"),
                prefix + "NSEC": base + btf.member_offset("timespec64", "tv_nsec"),
            }
    tried = ["i_%s_sec" % which] + list(_TIMESPEC_NAMES[which])
    raise OffsetError("struct inode has none of the %s members %s in the kernel's BTF"
                      % (which, ", ".join(tried)))


def _clock_defines(btf):
    """TKC_* offsets, relative to the timekeeper's data (tk_core), of what
    ktime_get_coarse_real_ts64() reads: the sequence count, xtime_sec,
    tkr_mono.xtime_nsec and .shift, and offs_real (for the 6.13+ multigrain
    floor, kept in monotonic time).  Newer kernels name the container
    struct tk_data; before it was an anonymous {seqcount_raw_spinlock_t seq;
    struct timekeeper timekeeper;}, the timekeeper at the next 8-byte
    boundary.  TKC_LAYOUT is 0 when the kernel's BTF lacks any of it."""
    try:
        if btf.has_struct("tk_data"):
            seq = btf.member_offset("tk_data", "seq")
            tk = btf.member_offset("tk_data", "timekeeper")
        else:
            seq = 0
            tk = -(-btf.struct_size("seqcount_raw_spinlock") // 8) * 8
        tkr = tk + btf.member_offset("timekeeper", "tkr_mono")
        return {
            "TKC_LAYOUT": 1,
            "TKC_SEQ": seq,
            "TKC_XTIME_SEC": tk + btf.member_offset("timekeeper", "xtime_sec"),
            "TKC_XTIME_NSEC": tkr + btf.member_offset("tk_read_base", "xtime_nsec"),
            "TKC_SHIFT": tkr + btf.member_offset("tk_read_base", "shift"),
            "TKC_OFFS_REAL": tk + btf.member_offset("timekeeper", "offs_real"),
        }
    except BtfError:
        return {"TKC_LAYOUT": 0, "TKC_SEQ": 0, "TKC_XTIME_SEC": 0, "TKC_XTIME_NSEC": 0,
                "TKC_SHIFT": 0, "TKC_OFFS_REAL": 0}


def bpf_defines(btf):
    """{macro: value} for every offset the BPF program is compiled with."""
    try:
        defines = {macro: btf.member_offset(struct, member)
                   for macro, struct, member in _FIXED_FIELDS}
        # For naming files in the kernel (the names map): file->f_path.dentry,
        # dentry->d_parent, dentry->d_name.name.
        defines["FILE_F_PATH_DENTRY"] = (btf.member_offset("file", "f_path")
                                         + btf.member_offset("path", "dentry"))
        defines["DENTRY_D_PARENT"] = btf.member_offset("dentry", "d_parent")
        defines["DENTRY_D_NAME_NAME"] = (btf.member_offset("dentry", "d_name")
                                         + btf.member_offset("qstr", "name"))
        defines.update(_timestamp_defines(btf, "mtime"))
        defines.update(_timestamp_defines(btf, "ctime"))
        for which in ("mtime", "ctime"):
            base = btf.member_offset("kstat", which)
            defines["KSTAT_%s_SEC" % which.upper()] = (
                base + btf.member_offset("timespec64", "tv_sec"))
            defines["KSTAT_%s_NSEC" % which.upper()] = (
                base + btf.member_offset("timespec64", "tv_nsec"))
    except BtfError as e:
        raise OffsetError(str(e)) from None
    defines.update(_clock_defines(btf))
    # 6.1's ->huge_fault takes enum page_entry_size (PTE=0, PMD=1, PUD=2);
    # the enum went away in 6.6, replaced by an order (0, 9, 18).
    defines["HUGE_FAULT_ARG_IS_ORDER"] = 0 if btf.has_enum("page_entry_size") else 1
    # The per-VMA lock's fault flag (6.4+): under it, do_wp_page of a shared
    # mapping gives up with VM_FAULT_RETRY rather than call a handler.  0
    # where the kernel has no per-VMA locks.
    defines["VMF_FLAG_VMA_LOCK"] = btf.enum_value("fault_flag", "FAULT_FLAG_VMA_LOCK") or 0
    return defines
