/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What a write fault is, and whether the file's timestamps came out right:
 * the rules, in C, for the BPF side (pfntrace top counts in the kernel) and
 * compiled for user space by the unit tests, which hold it and
 * pfntrace/verdict.py (what report and check use) to one table of cases
 * (tests/unit/verdict_spec.py).  Pure functions of one event: no maps, no
 * helpers, no loops, so the same text is valid BPF C and plain C.
 *
 * Needs pfntrace.h, and __always_inline, __u32, __s64 from the includer.
 */
#ifndef PFNTRACE_VERDICT_H
#define PFNTRACE_VERDICT_H

#define PFT_NS 1000000000LL

/* Is ->huge_fault's size argument (arg) a PMD or a PUD?  pmd_arg/pud_arg:
 * what it is for each (6.1: enum page_entry_size 1/2; 6.6+: an order, 9/18). */
static __always_inline int pft_huge_size(__u32 arg, __u32 pmd_arg, __u32 pud_arg)
{
	return arg == pmd_arg || arg == pud_arg;
}

/*
 * The kind of write fault an event is (PFT_C_PFN_MKWRITE..PFT_C_NO_NOTIFIER),
 * or why it is not one (PFT_C_RETRY..PFT_C_OTHER).
 *
 * A write-protect fault is judged where do_wp_page returns, whatever handler
 * it called or failed to call: a handler that pfntrace did not probe, or the
 * absence of any, cannot hide it.  Its path follows from the page: fs-dax
 * pages take wp_pfn_shared on every kernel (6.15+ through is_fsdax_page()),
 * and so do VM_PFNMAP/VM_MIXEDMAP mappings, where no ->pfn_mkwrite means
 * nobody is told.  Page-cache pages take wp_page_shared, which calls
 * file_update_time itself when there is no ->page_mkwrite.
 *
 * Handlers are judged themselves only outside do_wp_page: first-touch
 * writes through ->fault and PMD writes through ->huge_fault.
 * pmd_arg/pud_arg: as pft_huge_size() takes them.
 */
static __always_inline int pft_classify(const struct pft_event *ev, __u32 pmd_arg,
					__u32 pud_arg)
{
	if (ev->type == PFT_EV_WP) {
		if (ev->ret & PFT_VM_FAULT_RETRY)
			return PFT_C_RETRY;
		if (!(ev->flags & PFT_F_FILE) || !(ev->vm_flags & PFT_VM_SHARED))
			return PFT_C_PRIVATE;
		if (ev->ret & PFT_VM_FAULT_ERROR)
			return PFT_C_ERROR;
		if ((ev->flags & (PFT_F_PFN_PATH | PFT_F_INODE_DAX)) ||
		    (ev->vm_flags & (PFT_VM_PFNMAP | PFT_VM_MIXEDMAP)))
			return ev->ops_pfn_mkwrite ? PFT_C_PFN_MKWRITE : PFT_C_NO_NOTIFIER;
		return PFT_C_PAGE_MKWRITE;
	}
	if (ev->type != PFT_EV_HANDLER)
		return PFT_C_OTHER;
	if (ev->flags & PFT_F_IN_WP)
		return PFT_C_IN_WP;
	if (ev->ret & PFT_VM_FAULT_RETRY)
		return PFT_C_RETRY;
	if (ev->ret & PFT_VM_FAULT_FALLBACK)
		return PFT_C_FALLBACK;
	if (ev->ret & PFT_VM_FAULT_ERROR)
		return PFT_C_ERROR;
	if (!(ev->fault_flags & PFT_FAULT_FLAG_WRITE))
		return PFT_C_READ;
	if (!(ev->vm_flags & PFT_VM_SHARED))
		return PFT_C_PRIVATE;
	if ((ev->roles & PFT_ROLE_HUGE_FAULT) && pft_huge_size(ev->arg, pmd_arg, pud_arg))
		return PFT_C_PMD;
	if ((ev->fault_flags & PFT_FAULT_FLAG_MKWRITE) ||
	    !(ev->roles & (PFT_ROLE_FAULT | PFT_ROLE_HUGE_FAULT)))
		return PFT_C_NESTED;
	return PFT_C_FAULT;
}

/*
 * Is a handler call no write fault of its own, whatever else its event
 * would say?  Yes when its vm_fault has FAULT_FLAG_MKWRITE and its size
 * (arg, as pft_classify() gets it) is no PMD/PUD: pft_classify() can then
 * only find IN_WP, RETRY, FALLBACK, ERROR, READ, PRIVATE or NESTED, never
 * a kind.  The kernel sets FAULT_FLAG_MKWRITE where it calls ->pfn_mkwrite
 * (wp_pfn_shared) and ->page_mkwrite (do_page_mkwrite): on a DAX file,
 * every handler call inside do_wp_page, which do_wp_page's own event
 * judges.  pfntrace top, which counts kinds only, lets such a call's
 * programs stop at one load of the flags.
 */
static __always_inline int pft_handler_uncounted(__u32 fault_flags, __u32 arg, __u32 pmd_arg,
						 __u32 pud_arg)
{
	return (fault_flags & PFT_FAULT_FLAG_MKWRITE) && !pft_huge_size(arg, pmd_arg, pud_arg);
}

/* A timestamp in ns; nsec of a ctime loses the I_CTIME_QUERIED bit. */
static __always_inline __s64 pft_ts(__s64 sec, __u32 nsec)
{
	return sec * PFT_NS + (nsec & ~PFT_I_CTIME_QUERIED);
}

/*
 * Did the fault leave mtime and ctime where the kernel must leave them?
 *
 * After a write fault both timestamps must equal the kernel's timestamp
 * clock at some moment of the fault: file_update_time() stamps whichever
 * differs from current_time(), and leaves alone what already equals it.
 * clock_ns[0..1] is that clock read at the fault's entry and return (the
 * coarse clock, and on 6.13+ the multigrain floor, as current_time() reads
 * them); timestamps are truncated to the superblock's s_time_gran.
 *
 *   NO_NOTIFIER  the pfn path with no ->pfn_mkwrite: the filesystem was never told.
 *   UNDECIDED    the data cannot decide: no timestamps were read, or the
 *                kernel's clock was not readable and the timestamps did not
 *                both move.
 *   MISSED       the ctime had been queried (6.13+, I_CTIME_QUERIED) and
 *                did not move: the kernel owed the fault a distinct stamp;
 *                or a timestamp after the fault lies outside the clock's range
 *                during it: older (stale) or newer (future).
 *   UPDATED      both inside the range, at least one moved (without a
 *                readable clock: both moved).
 *   CURRENT      both inside the range, neither moved: they already were now.
 */
static __always_inline int pft_judge(const struct pft_event *ev, int kind)
{
	if (kind == PFT_C_NO_NOTIFIER)
		return PFT_V_NO_NOTIFIER;
	if (!(ev->mtime_sec[0] | ev->mtime_sec[1] | ev->ctime_sec[0] | ev->ctime_sec[1]))
		return PFT_V_UNDECIDED;
	__s64 m0 = pft_ts(ev->mtime_sec[0], ev->mtime_nsec[0]);
	__s64 m1 = pft_ts(ev->mtime_sec[1], ev->mtime_nsec[1]);
	__s64 c0 = pft_ts(ev->ctime_sec[0], ev->ctime_nsec[0]);
	__s64 c1 = pft_ts(ev->ctime_sec[1], ev->ctime_nsec[1]);
	int moved = (m0 != m1) + (c0 != c1);

	if (c0 == c1 && (ev->ctime_nsec[0] & PFT_I_CTIME_QUERIED))
		return PFT_V_MISSED;
	__s64 lo = ev->clock_ns[0], hi = ev->clock_ns[1];
	if (lo <= 0 || hi < lo)
		return moved == 2 ? PFT_V_UPDATED : PFT_V_UNDECIDED;
	if (ev->time_gran > 1)
		lo -= lo % ev->time_gran;	/* timestamp_truncate() */
	if (m1 < lo || m1 > hi || c1 < lo || c1 > hi)
		return PFT_V_MISSED;
	return moved ? PFT_V_UPDATED : PFT_V_CURRENT;
}

/*
 * Was the write fault invisible to the last process that looked?
 *
 * obs is the last getattr of the same inode (PFT_EV_GETATTR: the mtime and
 * ctime it returned in [0]).  If it ended before the fault began and the
 * fault left both timestamps equal to what it returned, a tool comparing
 * mtime (or ctime) with its last stat can never see this write: the kernel
 * followed its rules (a coarse clock tick, CURRENT) or did not (MISSED), the
 * observer cannot tell either way.  A property next to the verdict, not a
 * verdict.  ctime is compared without 6.13+'s I_CTIME_QUERIED bit; on a
 * multigrain kernel the queried ctime forces a distinct stamp, so there this
 * never happens unless the kernel is wrong.
 */
static __always_inline int pft_invisible(const struct pft_event *f, const struct pft_event *obs)
{
	if (obs->type != PFT_EV_GETATTR || obs->ret)
		return 0;
	if (obs->ts_ns + obs->duration_ns > f->ts_ns)
		return 0;	/* looked during or after the fault: no order to judge */
	__s64 m1 = pft_ts(f->mtime_sec[1], f->mtime_nsec[1]);
	__s64 c1 = pft_ts(f->ctime_sec[1], f->ctime_nsec[1]);
	if (!m1 && !c1)
		return 0;	/* no timestamps read */
	return m1 == pft_ts(obs->mtime_sec[0], obs->mtime_nsec[0]) &&
	       c1 == pft_ts(obs->ctime_sec[0], obs->ctime_nsec[0]);
}

#endif /* PFNTRACE_VERDICT_H */
