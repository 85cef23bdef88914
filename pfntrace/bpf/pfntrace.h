/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one definition of what pfntrace's BPF program sends to user space.
 *
 * The BPF C side (pfntrace.bpf.c) includes this file; the Python side feeds
 * the very same text to cffi (pfntrace/layout.py), so the two can never
 * disagree about a field's offset or size.  Keep it to what cffi's cdef
 * parser understands: fixed-width types, plain integer #defines, no
 * expressions in #defines, no #if.
 */
#ifndef PFNTRACE_H
#define PFNTRACE_H

/* Event types. */
#define PFT_EV_WP            1  /* do_wp_page returned (write-protect fault) */
#define PFT_EV_HANDLER       2  /* a vm_ops fault handler of a traced file returned */
#define PFT_EV_DAX_FAULT     3  /* fs_dax:dax_pte_fault_done or dax_pmd_fault_done */
#define PFT_EV_DAX_WRITEBACK 4  /* fs_dax:dax_writeback_one: a page re-write-protected */
#define PFT_EV_DAX_MKWRITE   5  /* fs_dax:dax_insert_pfn_mkwrite (MAP_SYNC fault) */
#define PFT_EV_GETATTR       6  /* vfs_getattr_nosec returned 0: a process (any,
                                   not only the traced ones) was shown this
                                   inode's mtime and ctime, in mtime/ctime_*[0] */
#define PFT_EV_CLOSE         7  /* pages [pgoff, pgoff + arg) of a file a traced
                                   write fault made writable are read-only
                                   again, in every mapping (written back:
                                   fs_dax:dax_writeback_one) or in one
                                   (PFT_F_CLOSE_UNMAP: unmap_page_range); by
                                   any task.  Ends their write-exposure
                                   windows (pfntrace/exposure.py) */

/* Which vm_ops slots the handler's address filled (PFT_EV_HANDLER.roles);
 * one function may fill several: ext4_dax_fault is .fault, .page_mkwrite
 * and .pfn_mkwrite at once. */
#define PFT_ROLE_FAULT        1
#define PFT_ROLE_HUGE_FAULT   2
#define PFT_ROLE_PAGE_MKWRITE 4
#define PFT_ROLE_PFN_MKWRITE  8

/* pft_event.flags */
#define PFT_F_IN_WP            1   /* handler: ran inside do_wp_page of the same task */
#define PFT_F_INODE_DAX        2   /* the inode has S_DAX */
#define PFT_F_HAS_PFN_MKWRITE  4   /* the vma's vm_ops has ->pfn_mkwrite */
#define PFT_F_HAS_PAGE_MKWRITE 8   /* the vma's vm_ops has ->page_mkwrite */
#define PFT_F_HANDLER_RAN      16  /* wp: a traced handler ran inside this do_wp_page */
#define PFT_F_PMD              32  /* dax fault: the PMD (2 MiB) tracepoint */
#define PFT_F_FILE             64  /* the vma maps a file */
#define PFT_F_PFN_PATH         128 /* wp_pfn_shared itself was probed and ran (only
                                      where it is a symbol; else the path is inferred) */
#define PFT_F_HANDLER_FOLDED   256 /* wp (record): the traced handler this do_wp_page
                                      called sent no event of its own (it would be
                                      PFT_C_IN_WP); `handler` is its address */
#define PFT_F_CLOSE_UNMAP      512 /* close: unmapped from one address space (munmap,
                                      exit, exec, truncate...), not written back */
#define PFT_F_CLOSE_FOREIGN    1024 /* close by unmap: from an address space that is
                                      not the unmapping task's (truncate, the OOM
                                      reaper, a last mmput by another task) */

/* struct vm_fault.flags bits (include/linux/mm_types.h, stable 6.1..7.x) */
#define PFT_FAULT_FLAG_WRITE    1
#define PFT_FAULT_FLAG_MKWRITE  2
#define PFT_FAULT_FLAG_VMA_LOCK 4096

/* vm_area_struct.vm_flags bits (include/linux/mm.h) */
#define PFT_VM_SHARED   8
#define PFT_VM_PFNMAP   1024
#define PFT_VM_MIXEDMAP 268435456

/* vm_fault_t bits (include/linux/mm_types.h) */
#define PFT_VM_FAULT_NOPAGE    256
#define PFT_VM_FAULT_RETRY     1024
#define PFT_VM_FAULT_FALLBACK  2048
#define PFT_VM_FAULT_NEEDDSYNC 8192
/* VM_FAULT_ERROR = OOM | SIGBUS | SIGSEGV | HWPOISON | HWPOISON_LARGE | FALLBACK */
#define PFT_VM_FAULT_ERROR     2163

/*
 * What an event is, as verdict.h's pft_classify() says (correlate.py follows
 * the same table, tests/unit/verdict_spec.py).  0..4 are the kinds of write
 * fault, in correlate.KINDS order; the rest say why an event is not one.
 */
#define PFT_C_PFN_MKWRITE  0   /* do_wp_page took the pfn path to ->pfn_mkwrite */
#define PFT_C_PAGE_MKWRITE 1   /* do_wp_page took the page path (page cache) */
#define PFT_C_PMD          2   /* a PMD/PUD write fault through ->huge_fault */
#define PFT_C_FAULT        3   /* a first-touch write through ->fault */
#define PFT_C_NO_NOTIFIER  4   /* the pfn path with no ->pfn_mkwrite to call */
#define PFT_C_KINDS        5
#define PFT_C_RETRY        5   /* returned VM_FAULT_RETRY: the fault comes again */
#define PFT_C_FALLBACK     6   /* ->huge_fault fell back to PTEs */
#define PFT_C_ERROR        7   /* the fault failed (SIGBUS, OOM...) */
#define PFT_C_READ         8   /* a read fault */
#define PFT_C_IN_WP        9   /* a handler inside do_wp_page: that fault is the unit */
#define PFT_C_NESTED       10  /* a handler inside another handler's fault */
#define PFT_C_PRIVATE      11  /* not a shared file mapping: copy-on-write */
#define PFT_C_OTHER        12  /* not a fault event (tracepoints) */

/* Verdicts (correlate.VERDICTS order); verdict.h's pft_judge(). */
#define PFT_V_UPDATED     0
#define PFT_V_CURRENT     1
#define PFT_V_MISSED      2
#define PFT_V_NO_NOTIFIER 3
#define PFT_V_UNDECIDED   4

#define PFT_COMM_LEN 16

/* bit 31 of i_ctime_nsec on 6.13+ (multigrain timestamps): a stat saw this
 * ctime, so the next change must get a fine-grained, distinct stamp. */
#define PFT_I_CTIME_QUERIED 2147483648

/* The `ringfill` slots: bytes the BPF side has sent into the ring, and the
 * ring's consumer position as the consumer wrote it back.  Their difference
 * is what waits to be read (the kernel's BPF_RB_AVAIL_DATA). */
#define PFT_RING_SENT  0
#define PFT_RING_TAKEN 1

/* Why an event or a fault was not seen (the `blind` per-CPU counters; each
 * also counts into `lost`).  Nothing may go unseen silently. */
#define PFT_BLIND_RING           0  /* the ring buffer was full */
#define PFT_BLIND_STATE          1  /* no per-thread state could be made (task storage) */
#define PFT_BLIND_WP_RETURN      2  /* a do_wp_page whose return probe never ran */
#define PFT_BLIND_HANDLER_RETURN 3  /* a handler whose return probe never ran */
#define PFT_BLIND_COUNTERS       4  /* an in-kernel counter map was full (top's, or
                                       record's per-file counts) */
#define PFT_BLIND_GETATTR_RETURN 5  /* a getattr whose return probe never ran: an
                                       observation not seen */
#define PFT_BLIND_RETRY_GUESS    6  /* top took a do_wp_page for the per-VMA lock's
                                       VM_FAULT_RETRY, and it was not one */
#define PFT_BLIND_SLOTS          7

/*
 * One event.  Fields are ordered largest first so the struct has no holes
 * on any ABI the kernel side runs on; sizeof is asserted on both sides.
 */
struct pft_event {
	__u64 ts_ns;            /* CLOCK_MONOTONIC at entry (bpf_ktime_get_ns) */
	/* There is no coarse_ns: bpf_ktime_get_coarse_ns() is refused for
	 * kprobe/tracepoint programs.  The coarse clock inode timestamps come
	 * from lags ts_ns by less than one tick; the recording's header gives
	 * the tick as header["clock"]["tick_ns"] (1e9 / CONFIG_HZ). */
	__u64 duration_ns;      /* entry to return */
	__u64 ino;
	__u64 pgoff;            /* file page offset of the fault */
	__u64 address;          /* faulting user address */
	__u64 vm_flags;
	__u64 handler;          /* HANDLER: the handler function's address; WP with
	                           PFT_F_HANDLER_FOLDED: the handler it called */
	__u64 ops_pfn_mkwrite;  /* the vma's vm_ops->pfn_mkwrite (0 if none) */
	__u64 ops_page_mkwrite; /* the vma's vm_ops->page_mkwrite (0 if none) */
	__s64 mtime_sec[2];     /* [0] at entry, [1] at return */
	__s64 ctime_sec[2];
	__u32 mtime_nsec[2];
	__u32 ctime_nsec[2];    /* raw: bit 31 is I_CTIME_QUERIED on 6.13+ */
	__u32 type;             /* PFT_EV_* */
	__u32 pid;              /* thread group id */
	__u32 tid;
	__u32 dev;              /* kernel dev_t: major << 20 | minor */
	__u32 fault_flags;      /* struct vm_fault.flags (tracepoints: their flags field) */
	__u32 ret;              /* vm_fault_t returned */
	__u32 roles;            /* PFT_ROLE_* */
	__u32 flags;            /* PFT_F_* */
	__u32 ftu_calls;        /* file_update_time() calls made during this event */
	__u32 arg;              /* HANDLER huge_fault: size argument; WRITEBACK: pglen */
	__u32 cpu;
	__u32 time_gran;        /* the superblock's s_time_gran: timestamps are
	                           truncated to multiples of it (ns); 0: unread */
	__s64 clock_ns[2];      /* the kernel's timestamp clock (CLOCK_REALTIME ns)
	                           at entry and return, read as current_time()
	                           reads it: the coarse clock, and on 6.13+ the
	                           multigrain floor; 0: not readable here */
	char comm[16];
};

/* A traced file, as map key: its device and inode. */
struct pft_file_key {
	__u64 ino;
	__u32 dev;              /* kernel dev_t */
	__u32 pad;              /* zero */
};

/*
 * The names map (struct pft_file_key -> struct pft_name), filled in the
 * kernel the first time a file is traced: the dentry's name and its
 * parents' names, leaf first, up to PFT_NAME_DEPTH; "/" is the filesystem's
 * root, an empty component means the walk ended before it.  A process that
 * exits before user space reads its /proc/PID/maps (xfs_io, short tests)
 * leaves its files nameable all the same.
 */
#define PFT_NAME_DEPTH 6
#define PFT_NAME_LEN   48
struct pft_name {
	/* PFT_NAME_DEPTH slots of PFT_NAME_LEN bytes.  One dimension only:
	 * bcc 0.26 sizes two-dimensional map values wrongly in Python, and
	 * the kernel then writes past the buffer it was given. */
	char comp[288];
};

/* ---- What record counts in the kernel instead of sending ----
 * Events that are no write fault only add to counters of their file and
 * process: the do_wp_page attempt the per-VMA lock gives up on
 * (VM_FAULT_RETRY, 6.4+; the fault comes again) and the fs_dax
 * tracepoints.  record keeps them per (file, process) in rows of
 * PFT_ROWS_COUNTS (struct pft_count_row) and writes them into the
 * recording (COUNTS blocks), so a write fault costs one event; `record
 * --every-event` sends them as events instead.  Each counter's name is the
 * report's (correlate.FileStats). */
struct pft_count_key {
	__u64 ino;
	__u32 dev;              /* kernel dev_t */
	__u32 pid;              /* thread group id */
};

struct pft_file_counts {
	__u64 retries;          /* do_wp_page returned VM_FAULT_RETRY (PFT_C_RETRY) */
	__u64 dax_pte_faults;   /* fs_dax:dax_pte_fault_done */
	__u64 dax_pmd_faults;   /* fs_dax:dax_pmd_fault_done */
	__u64 dax_write_faults; /* either, with FAULT_FLAG_WRITE */
	__u64 reprotects;       /* fs_dax:dax_writeback_one */
	__u64 reprotect_pages;  /* the pages those wrote back (pglen) */
	__u64 map_sync;         /* fs_dax:dax_insert_pfn_mkwrite */
	char comm[16];          /* the process's name when first counted */
};


/* The `blind` counters, per CPU (index cpu * PFT_BLIND_STRIDE + reason),
 * each CPU's total at PFT_BLIND_LOST: read through memory (see "Rows user
 * space reads through memory" below). */
#define PFT_BLIND_LOST           7
#define PFT_BLIND_STRIDE         8

/* ---- In-kernel aggregation (pfntrace top; compiled with -DPFT_AGGREGATE) ----
 * Per-file, per-process and global counters kept in BPF maps, so a live view
 * reads a few maps per refresh instead of receiving every event.  The array
 * lengths are literals (cffi cdef takes no macros there); they must equal
 * the PFT_AGG_* counts, which pfntrace/aggregate.py asserts. */
#define PFT_AGG_KINDS      5   /* pfn_mkwrite, page_mkwrite, pmd, fault, no_notifier
                                  (PFT_C_* order) */
#define PFT_AGG_VERDICTS   5   /* UPDATED, CURRENT, MISSED, NO_NOTIFIER, UNDECIDED
                                  (PFT_V_* order) */
#define PFT_AGG_LAT_BUCKETS 32 /* [b]: handler durations with bit_length b (ns) */
#define PFT_AGG_RATE_SLOTS 64  /* ring of per-interval write fault counts */


/* Per file (a row of PFT_ROWS_FILES) and global (array, [0]). */
struct pft_agg_stats {
	__u64 kinds[5];         /* write faults by kind */
	__u64 verdicts[5];      /* write faults by verdict */
	__u64 lat[32];          /* log2 histogram of handler duration, ns */
	__u64 total;            /* write faults */
	__u64 last_ts;          /* CLOCK_MONOTONIC of the latest write fault */
	__u32 last_pid;         /* who faulted last: /proc/PID/maps names the file */
	__u32 pad;
	__u64 invisible;        /* write faults invisible to the last getattr before
	                           them (verdict.h pft_invisible) */
	__u64 lat_sum;          /* sum of the durations counted in lat, ns (the
	                           exporter's histogram _sum) */
};

/* Per process (a row of PFT_ROWS_PROCS). */
struct pft_proc_stats {
	__u64 kinds[5];
	__u64 verdicts[5];
	__u64 total;
	__u64 last_ts;
	__u64 files;            /* reserved: 0 */
	char comm[16];
	__u64 invisible;        /* as in struct pft_agg_stats */
};

/* One slot of the rate ring: write faults in interval `epoch`
 * (ts_ns / interval_ns), stored at [epoch % PFT_AGG_RATE_SLOTS]. */
struct pft_rate_slot {
	__u64 epoch;
	__u64 count;
};

/* Set by user space (array, [0]). */
struct pft_agg_config {
	__u64 interval_ns;      /* rate ring slot length; 0: 1 s */
};

/* ---- Rows user space reads through memory ----
 * What pfntrace reads while the workload runs, it reads through memory,
 * with no bpf(2) call.  A map syscall holds the CPU's bpf_prog_active from
 * start to end (bpf_disable_instrumentation()), and on a kernel that
 * preempts kernel code (Debian's 7.x, preempt=lazy) the task can be
 * preempted inside it: every kprobe and tracepoint program that fires on
 * that CPU meanwhile, any task's, is skipped.  So counters keyed by file or
 * process live in rows of arrays user space maps (BPF_F_MMAPABLE): a table's
 * rows are claimed in order (`rownext`, one counter a table) and found by
 * key through a hash only BPF reads (`rowof`).  A row's `ready` is written
 * last; a row user space sees without it is being claimed: it reads it
 * again later (and once more when the probes are gone). */
#define PFT_ROWS_COUNTS   0     /* record's per (file, process) counts */
#define PFT_ROWS_FILES    1     /* top: per file */
#define PFT_ROWS_PROCS    2     /* top: per process */
#define PFT_ROW_TABLES    3
#define PFT_COUNT_ROWS    10240
/* Files whose write-exposure windows record follows (the `written` map). */
#define PFT_WRITTEN_FILES 10240
#define PFT_AGG_FILE_ROWS 10240
#define PFT_AGG_PROC_ROWS 4096

struct pft_row_key {
	__u64 ino;
	__u32 dev;
	__u32 pid;
	__u32 table;            /* PFT_ROWS_* */
	__u32 pad;              /* zero */
};

struct pft_count_row {
	struct pft_count_key key;
	struct pft_file_counts counts;
	__u64 ready;
};

struct pft_agg_file_row {
	struct pft_file_key key;
	struct pft_agg_stats stats;
	__u64 ready;
};

struct pft_agg_proc_row {
	__u32 pid;
	__u32 pad;
	struct pft_proc_stats stats;
	__u64 ready;
};

#endif /* PFNTRACE_H */
