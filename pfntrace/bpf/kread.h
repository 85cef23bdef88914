/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading kernel structures from pfntrace's BPF program.
 *
 * Every field arrives as an offset from the running kernel's BTF (-D macros,
 * pfntrace/kernel/offsets.py).  READ() fetches one field with one
 * bpf_probe_read_kernel() call.  A helper call is cheap on hardware but
 * costs about 0.2 us under QEMU TCG, and a DAX write fault used to make
 * ~110 of them (do_wp_page twice, the handler once; bench/issue16-storm.md).
 * The fields one probe needs from a struct lie within a few dozen bytes of
 * each other, so each group is read as one span [LO, HI) onto the stack and
 * picked out there with SPAN_GET(): one call instead of four to six.
 *
 * A span's bounds are computed here by the preprocessor from the offsets,
 * every field counted as 8 bytes wide (the widest read; the narrower ones
 * then read within the span and the struct).  A kernel whose fields drift
 * further apart than SPAN_MAX fails to compile with the span's name rather
 * than overflowing the 512-byte BPF stack.
 */
#ifndef PFNTRACE_KREAD_H
#define PFNTRACE_KREAD_H

#define READ(dst, base, off) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((u64)(base) + (off)))

/*
 * Direct loads, for fentry/fexit programs only.  There a hook's arguments
 * are pointers whose type the verifier knows from BTF, and so is a pointer
 * loaded from one of their fields: each field is one load instruction,
 * which the JIT guards (a bad address reads 0).  Measured in one boot on
 * do_wp_page's fentry (6.12/ext4, TCG), 16 fields cost 3.85 us a call
 * through bpf_probe_read_kernel() and 1.19 us as loads, 0.50 us of it the
 * empty program.  Inline assembly, because bcc's rewriter would turn a C
 * dereference back into a helper call.  The verifier checks each load
 * against the member's BTF type: pointers are loaded whole, and a load of
 * a narrower integer must stay within it (LOAD32 for the u32s).  A
 * timestamp's nanoseconds are loaded as u32 on every layout: before 6.11
 * they were a long (tv_nsec) below 10^9, its low half on x86-64.
 */
#define LOAD_AS(width, dst, base, off) do {					\
	u64 _v;									\
	asm volatile("%[v] = *(" width " *)(%[b] + %[o])"			\
		     : [v] "=r"(_v) : [b] "r"(base), [o] "i"(off));		\
	(dst) = _v;								\
} while (0)
#define LOAD64(dst, base, off) LOAD_AS("u64", dst, base, off)
#define LOAD32(dst, base, off) LOAD_AS("u32", dst, base, off)
/* A u32 field either way: loaded where base is BTF-typed (direct), else read. */
#define READ32(direct, dst, base, off) do {					\
	if (direct)								\
		LOAD32(dst, base, off);						\
	else									\
		READ(dst, base, off);						\
} while (0)

#define SPAN_MAX 192
#define KR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KR_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A u64 array, so the stack copy is 8-byte aligned: clang then picks the
 * widest load each field's offset allows, and the verifier (which wants
 * aligned stack access) accepts every one. */
#define SPAN_BUF(name, lo, hi) u64 name[((hi) - (lo) + 7) / 8]
#define SPAN_READ(buf, base, lo, hi) \
	bpf_probe_read_kernel((buf), (hi) - (lo), (void *)((u64)(base) + (lo)))
#define SPAN_GET(dst, buf, lo, off) \
	__builtin_memcpy(&(dst), (char *)(buf) + ((off) - (lo)), sizeof(dst))

/* struct vm_fault: vma, pgoff, address, flags. */
#define VMF_LO KR_MIN(KR_MIN(VMF_VMA, VMF_PGOFF), KR_MIN(VMF_ADDRESS, VMF_FLAGS))
#define VMF_HI (KR_MAX(KR_MAX(VMF_VMA, VMF_PGOFF), KR_MAX(VMF_ADDRESS, VMF_FLAGS)) + 8)

/* struct vm_area_struct: vm_flags, vm_ops, vm_file. */
#define VMA_LO KR_MIN(VMA_VM_FLAGS, KR_MIN(VMA_VM_OPS, VMA_VM_FILE))
#define VMA_HI (KR_MAX(VMA_VM_FLAGS, KR_MAX(VMA_VM_OPS, VMA_VM_FILE)) + 8)

/* struct vm_operations_struct: the four handlers a fault may call, and
 * ->map_pages (whether do_wp_page may call them under the per-VMA lock). */
#define VMOPS_LO KR_MIN(KR_MIN(KR_MIN(VMOPS_FAULT, VMOPS_HUGE_FAULT), VMOPS_MAP_PAGES), \
			KR_MIN(VMOPS_PAGE_MKWRITE, VMOPS_PFN_MKWRITE))
#define VMOPS_HI (KR_MAX(KR_MAX(KR_MAX(VMOPS_FAULT, VMOPS_HUGE_FAULT), VMOPS_MAP_PAGES), \
			 KR_MAX(VMOPS_PAGE_MKWRITE, VMOPS_PFN_MKWRITE)) + 8)

/* struct inode: i_flags, i_sb, i_ino. */
#define INODE_LO KR_MIN(INODE_I_FLAGS, KR_MIN(INODE_I_SB, INODE_I_INO))
#define INODE_HI (KR_MAX(INODE_I_FLAGS, KR_MAX(INODE_I_SB, INODE_I_INO)) + 8)

/* struct inode: mtime and ctime, seconds and nanoseconds. */
#define ITIMES_LO KR_MIN(KR_MIN(INODE_MTIME_SEC, INODE_MTIME_NSEC), \
			 KR_MIN(INODE_CTIME_SEC, INODE_CTIME_NSEC))
#define ITIMES_HI (KR_MAX(KR_MAX(INODE_MTIME_SEC, INODE_MTIME_NSEC), \
			  KR_MAX(INODE_CTIME_SEC, INODE_CTIME_NSEC)) + 8)

/* struct kstat: the mtime and ctime a stat returns. */
#define KSTAT_LO KR_MIN(KR_MIN(KSTAT_MTIME_SEC, KSTAT_MTIME_NSEC), \
			KR_MIN(KSTAT_CTIME_SEC, KSTAT_CTIME_NSEC))
#define KSTAT_HI (KR_MAX(KR_MAX(KSTAT_MTIME_SEC, KSTAT_MTIME_NSEC), \
			 KR_MAX(KSTAT_CTIME_SEC, KSTAT_CTIME_NSEC)) + 8)

/* The timekeeper (tk_core): sequence count first, then what
 * ktime_get_coarse_real_ts64() reads.  The sequence count must be the
 * span's first field: it is copied before the fields it guards. */
#define TKC_LO TKC_SEQ
#define TKC_HI (KR_MAX(KR_MAX(TKC_XTIME_SEC, TKC_XTIME_NSEC), \
		       KR_MAX(TKC_SHIFT, TKC_OFFS_REAL)) + 8)

#if VMF_HI - VMF_LO > SPAN_MAX
#error "struct vm_fault: vma, pgoff, address and flags are too far apart for one span"
#endif
#if VMA_HI - VMA_LO > SPAN_MAX
#error "struct vm_area_struct: vm_flags, vm_ops and vm_file are too far apart for one span"
#endif
#if VMOPS_HI - VMOPS_LO > SPAN_MAX
#error "struct vm_operations_struct: the fault handlers are too far apart for one span"
#endif
#if INODE_HI - INODE_LO > SPAN_MAX
#error "struct inode: i_flags, i_sb and i_ino are too far apart for one span"
#endif
#if ITIMES_HI - ITIMES_LO > SPAN_MAX
#error "struct inode: the timestamps are too far apart for one span"
#endif
#if KSTAT_HI - KSTAT_LO > SPAN_MAX
#error "struct kstat: mtime and ctime are too far apart for one span"
#endif
#if TKC_LAYOUT && (TKC_HI - TKC_LO > SPAN_MAX || \
		   TKC_SEQ > KR_MIN(KR_MIN(TKC_XTIME_SEC, TKC_XTIME_NSEC), \
				    KR_MIN(TKC_SHIFT, TKC_OFFS_REAL)))
#error "the timekeeper's fields do not follow its sequence count within one span"
#endif

#endif /* PFNTRACE_KREAD_H */
