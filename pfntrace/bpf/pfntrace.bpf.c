// SPDX-License-Identifier: GPL-2.0
/*
 * pfntrace's kernel side: probes on the write-protect fault path.
 *
 * Compiled by bcc with no kernel struct headers: every structure offset
 * arrives as a -D macro computed from the running kernel's BTF
 * (pfntrace/kernel/offsets.py), which keeps the compile at ~6 s under QEMU
 * TCG instead of ~26 s with <linux/fs.h> and <linux/mm.h>, and follows field
 * layouts that move between kernels (inode timestamps above all).
 *
 * Probes:
 *   kprobe/kretprobe do_wp_page       -> PFT_EV_WP
 *   kprobe/kretprobe <fs handlers>    -> PFT_EV_HANDLER (outermost call only)
 *   kprobe file_update_time           -> counts into the running WP/handler
 *   fs_dax tracepoints                -> PFT_EV_DAX_*
 *   sched:sched_process_fork          -> follows a command's descendants
 */
#include <uapi/linux/ptrace.h>
#include "pfntrace.h"

#define S_DAX 8192		/* include/linux/fs.h, CONFIG_FS_DAX */
#define MAX_DEVS 8
#define WAKEUP_EVERY 64		/* events per CPU between consumer wakeups */

struct pft_config {
	u32 follow;		/* 1: only tasks in the traced map */
	u32 all_files;		/* 0: DAX inodes only */
	u64 ino;		/* 0: any inode */
	u32 ndevs;
	u32 devs[MAX_DEVS];	/* kernel dev_t of watched mounts; 0 devs: any */
};

BPF_ARRAY(config, struct pft_config, 1);
BPF_HASH(traced, u32, u8, 65536);		/* tgids being followed */
BPF_HASH(wpstate, u32, struct pft_event, 4096);	/* per tid: inside do_wp_page */
BPF_HASH(hstate, u32, struct pft_event, 4096);	/* per tid: inside a handler */
BPF_PERCPU_ARRAY(blank, struct pft_event, 1);	/* all-zero, to seed the hashes */
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(pending, u32, 1);		/* events since the last wakeup */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(names, struct pft_file_key, struct pft_name, 4096);
BPF_PERCPU_ARRAY(namebuf, struct pft_name, 1);	/* scratch: too big for the stack */

#define READ(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((u64)(base) + (off)))

#ifdef PFT_AGGREGATE
/* ---- In-kernel aggregation (pfntrace top) -----------------------------------
 * Every event emit() sees is classified and judged here with the rules of
 * pfntrace/correlate.py (_analyse), and counted per file, per process and
 * globally.  With PFT_NO_STREAM nothing goes to the ring buffer at all. */
#define AGG_FILES 10240
#define AGG_PROCS 4096
#if HUGE_FAULT_ARG_IS_ORDER
#define AGG_PMD_ARG 9
#define AGG_PUD_ARG 18
#else
#define AGG_PMD_ARG 1
#define AGG_PUD_ARG 2
#endif
#define AGG_ROLE_FAULTS (PFT_ROLE_FAULT | PFT_ROLE_HUGE_FAULT)
/* VM_FAULT_ERROR = OOM | SIGBUS | SIGSEGV | HWPOISON | HWPOISON_LARGE | FALLBACK */
#define AGG_VM_FAULT_ERROR (0x0001 | 0x0002 | 0x0040 | 0x0010 | 0x0020 | 0x0800)
#define AGG_NS 1000000000ULL

struct agg_nest {
	u64 start;
	u64 end;
	u64 pgoff;
};

BPF_ARRAY(aggconfig, struct pft_agg_config, 1);
BPF_HASH(aggfiles, struct pft_file_key, struct pft_agg_stats, AGG_FILES);
BPF_HASH(aggprocs, u32, struct pft_proc_stats, AGG_PROCS);
BPF_PERCPU_ARRAY(aggtotal, struct pft_agg_stats, 1);
BPF_ARRAY(aggrate, struct pft_rate_slot, PFT_AGG_RATE_SLOTS);
BPF_PERCPU_ARRAY(aggzero, struct pft_agg_stats, 1);	/* all-zero seeds */
BPF_PERCPU_ARRAY(aggzproc, struct pft_proc_stats, 1);
BPF_HASH(aggnest, u32, struct agg_nest, 4096);	/* per tid: last PTE ->huge_fault */

/* Kind of a write fault (correlate.K_*), or -1 when the event is not one. */
static __always_inline int agg_kind(struct pft_event *ev)
{
	if (ev->type == PFT_EV_HANDLER) {
		if (ev->ret & (PFT_VM_FAULT_RETRY | AGG_VM_FAULT_ERROR))
			return -1;
		if (ev->flags & PFT_F_IN_WP) {
			if (ev->roles & PFT_ROLE_PFN_MKWRITE) {
				if ((ev->roles & PFT_ROLE_PAGE_MKWRITE) && !(ev->flags & PFT_F_INODE_DAX))
					return 1;
				return 0;
			}
			if (ev->roles & PFT_ROLE_PAGE_MKWRITE)
				return 1;
			return -1;	/* nested handler */
		}
		if (!(ev->fault_flags & PFT_FAULT_FLAG_WRITE))
			return -1;	/* a read fault */
		if ((ev->roles & PFT_ROLE_HUGE_FAULT) &&
		    (ev->arg == AGG_PMD_ARG || ev->arg == AGG_PUD_ARG))
			return 2;
		if ((ev->fault_flags & PFT_FAULT_FLAG_MKWRITE) || !(ev->roles & AGG_ROLE_FAULTS))
			return -1;
		/* First-touch write.  A PTE-size ->huge_fault enclosed by a ->fault
		 * of the same task at the same pgoff is that same fault. */
		u32 tid = ev->tid;
		if (ev->roles & PFT_ROLE_HUGE_FAULT) {
			struct agg_nest n = {};
			n.start = ev->ts_ns;
			n.end = ev->ts_ns + ev->duration_ns;
			n.pgoff = ev->pgoff;
			aggnest.update(&tid, &n);
		} else {
			struct agg_nest *n = aggnest.lookup(&tid);
			if (n) {
				int inner = ev->ts_ns <= n->start &&
					    n->end <= ev->ts_ns + ev->duration_ns &&
					    n->pgoff == ev->pgoff;
				aggnest.delete(&tid);
				if (inner)
					return -1;
			}
		}
		return 3;
	}
	if (ev->type == PFT_EV_WP) {
		if (ev->flags & PFT_F_HANDLER_RAN)
			return -1;
		if (ev->ret & PFT_VM_FAULT_RETRY)
			return -1;
		if ((ev->vm_flags & PFT_VM_SHARED) &&
		    (ev->vm_flags & (PFT_VM_PFNMAP | PFT_VM_MIXEDMAP)) &&
		    !(ev->flags & PFT_F_HAS_PFN_MKWRITE) && !(ev->ret & AGG_VM_FAULT_ERROR))
			return 4;
	}
	return -1;
}

/* Verdict (correlate.V_*) of a write fault of a handler kind. */
static __always_inline int agg_verdict(struct pft_event *ev, struct pft_agg_config *c)
{
	u64 m0 = ev->mtime_sec[0] * AGG_NS + ev->mtime_nsec[0];
	u64 m1 = ev->mtime_sec[1] * AGG_NS + ev->mtime_nsec[1];
	u64 c0 = ev->ctime_sec[0] * AGG_NS + (ev->ctime_nsec[0] & 0x7FFFFFFF);
	u64 c1 = ev->ctime_sec[1] * AGG_NS + (ev->ctime_nsec[1] & 0x7FFFFFFF);

	if (m0 != m1)
		return c0 != c1 ? 0 : 2;
	if (c0 != c1)
		return 2;
	if (ev->ftu_calls)
		return 1;
	s64 tick = 0, tol = 0, off = 0;
	if (c) {
		off = c->wall_offset_ns;
		tick = c->tick_ns;
		tol = c->tolerance_ns;
	}
	if ((s64)m1 >= (s64)ev->ts_ns + off - tick - tol)
		return 1;
	if (!(m0 | m1 | c0 | c1))
		return 4;
	return 2;
}

static __always_inline u32 agg_bucket(u64 d)
{
	u32 b = d ? bpf_log2l(d) : 0;	/* bit_length(d) */
	return b > PFT_AGG_LAT_BUCKETS - 1 ? PFT_AGG_LAT_BUCKETS - 1 : b;
}

/* An index the verifier can see is in range right where it is used: the
 * 6.1 verifier loses the bound of a spilled register, and clang drops a
 * mask it can prove redundant unless the value is hidden from it. */
static __always_inline u32 agg_idx(u32 i)
{
	asm volatile("" : "+r"(i));
	return i & (PFT_AGG_LAT_BUCKETS - 1);
}

static __always_inline void agg_account(struct pft_event *ev)
{
	u32 zero = 0;
	int kind = agg_kind(ev);
	if (kind < 0 || kind >= PFT_AGG_KINDS)
		return;
	struct pft_agg_config *c = aggconfig.lookup(&zero);
	int verdict = kind == 4 ? 3 : agg_verdict(ev, c);
	if (verdict < 0 || verdict >= PFT_AGG_VERDICTS)
		return;
	u32 b = agg_bucket(ev->duration_ns);
	int timed = kind != 4;	/* latency is the handler's */

	struct pft_agg_stats *zs = aggzero.lookup(&zero);
	if (!zs)
		return;
	struct pft_file_key key = {};
	key.ino = ev->ino;
	key.dev = ev->dev;
	struct pft_agg_stats *f = aggfiles.lookup_or_try_init(&key, zs);
	if (f) {
		__sync_fetch_and_add(&f->kinds[kind], 1);
		__sync_fetch_and_add(&f->verdicts[verdict], 1);
		if (timed)
			__sync_fetch_and_add(&f->lat[agg_idx(b)], 1);
		__sync_fetch_and_add(&f->total, 1);
		f->last_ts = ev->ts_ns;
		f->last_pid = ev->pid;
	} else {
		u64 *l = lost.lookup(&zero);	/* no ring buffer here: lost = not counted */
		if (l)
			*l += 1;
	}

	struct pft_proc_stats *zp = aggzproc.lookup(&zero);
	if (!zp)
		return;
	u32 pid = ev->pid;
	struct pft_proc_stats *p = aggprocs.lookup_or_try_init(&pid, zp);
	if (p) {
		__sync_fetch_and_add(&p->kinds[kind], 1);
		__sync_fetch_and_add(&p->verdicts[verdict], 1);
		__sync_fetch_and_add(&p->total, 1);
		p->last_ts = ev->ts_ns;
		__builtin_memcpy(p->comm, ev->comm, sizeof(p->comm));
	}

	struct pft_agg_stats *t = aggtotal.lookup(&zero);	/* per CPU: no atomics */
	if (t) {
		t->kinds[kind] += 1;
		t->verdicts[verdict] += 1;
		if (timed)
			t->lat[agg_idx(b)] += 1;
		t->total += 1;
		t->last_ts = ev->ts_ns;
	}

	u64 interval = c && c->interval_ns ? c->interval_ns : AGG_NS;
	u64 epoch = ev->ts_ns / interval;
	u32 slot = epoch % PFT_AGG_RATE_SLOTS;
	struct pft_rate_slot *r = aggrate.lookup(&slot);
	if (r) {
		if (r->epoch != epoch) {
			/* First fault of a new interval here (racy by a few counts
			 * at the boundary; a rate, not a tally). */
			r->epoch = epoch;
			r->count = 0;
		}
		__sync_fetch_and_add(&r->count, 1);
	}
}
#endif /* PFT_AGGREGATE */

static __always_inline void emit(struct pft_event *ev)
{
#ifdef PFT_AGGREGATE
	agg_account(ev);
#endif
#ifndef PFT_NO_STREAM
	u32 zero = 0;
	u64 flags = BPF_RB_NO_WAKEUP;
	u32 *n = pending.lookup(&zero);

	/* A wakeup per event costs the faulting task more than the probe
	 * itself: wake the consumer once per WAKEUP_EVERY events; it also
	 * polls on a short timeout for the rest. */
	if (n) {
		*n += 1;
		if (*n >= WAKEUP_EVERY) {
			*n = 0;
			flags = 0;
		}
	}
	if (events.ringbuf_output(ev, sizeof(*ev), flags) != 0) {
		u64 *l = lost.lookup(&zero);
		if (l)
			*l += 1;
	}
#endif /* PFT_NO_STREAM */
}

static __always_inline struct pft_config *cfg(void)
{
	u32 zero = 0;
	return config.lookup(&zero);
}

static __always_inline int task_wanted(struct pft_config *c)
{
	if (!c->follow)
		return 1;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return traced.lookup(&tgid) != 0;
}

static __always_inline int dev_wanted(struct pft_config *c, u32 dev)
{
	if (c->ndevs == 0)
		return 1;
#pragma unroll
	for (int i = 0; i < MAX_DEVS; i++) {
		if (i < c->ndevs && c->devs[i] == dev)
			return 1;
	}
	return 0;
}

static __always_inline void read_times(struct pft_event *ev, u64 inode, int i)
{
	READ(ev->mtime_sec[i], inode, INODE_MTIME_SEC);
	READ(ev->mtime_nsec[i], inode, INODE_MTIME_NSEC);
	READ(ev->ctime_sec[i], inode, INODE_CTIME_SEC);
	READ(ev->ctime_nsec[i], inode, INODE_CTIME_NSEC);
}

/* Name a file once, in the kernel (see struct pft_name). */
static __always_inline void remember_name(u64 file, u32 dev, u64 ino)
{
	struct pft_file_key key = {};
	u32 zero = 0;
	u64 d = 0, parent = 0, name = 0;

	key.ino = ino;
	key.dev = dev;
	if (names.lookup(&key))
		return;
	struct pft_name *n = namebuf.lookup(&zero);
	if (!n)
		return;
	READ(d, file, FILE_F_PATH_DENTRY);
#pragma unroll
	for (int i = 0; i < PFT_NAME_DEPTH; i++) {
		char *slot = n->comp + i * PFT_NAME_LEN;
		slot[0] = 0;
		if (!d)
			continue;
		READ(name, d, DENTRY_D_NAME_NAME);
		bpf_probe_read_kernel_str(slot, PFT_NAME_LEN, (void *)name);
		READ(parent, d, DENTRY_D_PARENT);
		d = parent == d ? 0 : parent;	/* the root is its own parent */
	}
	names.update(&key, n);
}

/*
 * Fill the fault's identity from struct vm_fault.  Returns the inode pointer,
 * or 0 when the fault is not one we trace (no file, filtered out).
 */
static __always_inline u64 fill_fault(struct pft_event *ev, u64 vmf, struct pft_config *c)
{
	u64 vma = 0, file = 0, inode = 0, sb = 0, ops = 0, p = 0;
	u32 i_flags = 0;

	READ(vma, vmf, VMF_VMA);
	if (!vma)
		return 0;
	READ(file, vma, VMA_VM_FILE);
	if (!file)
		return 0;	/* anonymous memory: COW faults are not our business */
	READ(ev->vm_flags, vma, VMA_VM_FLAGS);
	READ(inode, file, FILE_F_INODE);
	READ(i_flags, inode, INODE_I_FLAGS);
	READ(ops, vma, VMA_VM_OPS);
	if (ops) {
		READ(ev->ops_pfn_mkwrite, ops, VMOPS_PFN_MKWRITE);
		READ(ev->ops_page_mkwrite, ops, VMOPS_PAGE_MKWRITE);
	}
	ev->flags = PFT_F_FILE;
	if (i_flags & S_DAX)
		ev->flags |= PFT_F_INODE_DAX;
	if (ev->ops_pfn_mkwrite)
		ev->flags |= PFT_F_HAS_PFN_MKWRITE;
	if (ev->ops_page_mkwrite)
		ev->flags |= PFT_F_HAS_PAGE_MKWRITE;

	if (!c->all_files && !(i_flags & S_DAX)) {
		/* Non-DAX files are skipped by default, except the case the
		 * tool exists for: a shared pfn mapping with no ->pfn_mkwrite,
		 * whose writes nobody hears of. */
		u64 pfnmap = ev->vm_flags & (PFT_VM_PFNMAP | PFT_VM_MIXEDMAP);
		if (!(pfnmap && (ev->vm_flags & PFT_VM_SHARED) && !ev->ops_pfn_mkwrite))
			return 0;
	}
	READ(sb, inode, INODE_I_SB);
	READ(ev->dev, sb, SB_S_DEV);
	if (!dev_wanted(c, ev->dev))
		return 0;
	READ(ev->ino, inode, INODE_I_INO);
	if (c->ino && c->ino != ev->ino)
		return 0;
	remember_name(file, ev->dev, ev->ino);
	READ(ev->pgoff, vmf, VMF_PGOFF);
	READ(ev->address, vmf, VMF_ADDRESS);
	READ(ev->fault_flags, vmf, VMF_FLAGS);
	u64 id = bpf_get_current_pid_tgid();
	ev->pid = id >> 32;
	ev->tid = (u32)id;
	ev->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
	ev->ts_ns = bpf_ktime_get_ns();
	return inode;
}

/* The inode pointer rides in ev->reserved-free space: keep it in .handler
 * for WP state (WP events carry no handler address). */

int wp_entry(struct pt_regs *ctx)
{
	struct pft_config *c = cfg();
	u32 zero = 0;
	if (!c || !task_wanted(c))
		return 0;
	struct pft_event *seed = blank.lookup(&zero);
	if (!seed)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	wpstate.update(&tid, seed);
	struct pft_event *ev = wpstate.lookup(&tid);
	if (!ev)
		return 0;
	u64 inode = fill_fault(ev, PT_REGS_PARM1(ctx), c);
	if (!inode) {
		wpstate.delete(&tid);
		return 0;
	}
	ev->type = PFT_EV_WP;
	ev->handler = inode;	/* parked here until return; cleared before emit */
	read_times(ev, inode, 0);
	return 0;
}

int wp_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pft_event *ev = wpstate.lookup(&tid);
	if (!ev)
		return 0;
	read_times(ev, ev->handler, 1);
	ev->handler = 0;
	ev->ret = PT_REGS_RC(ctx);
	ev->duration_ns = bpf_ktime_get_ns() - ev->ts_ns;
	emit(ev);
	wpstate.delete(&tid);
	return 0;
}

/* Only where wp_pfn_shared is a symbol (not on Debian 6.1, 6.12 or 6.18,
 * where it is inlined): mark the running do_wp_page as taking the pfn path. */
int wp_pfn_entry(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pft_event *wp = wpstate.lookup(&tid);
	if (wp)
		wp->flags |= PFT_F_PFN_PATH;
	return 0;
}

int handler_entry(struct pt_regs *ctx)
{
	struct pft_config *c = cfg();
	u32 zero = 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pft_event *ev = hstate.lookup(&tid);

	if (ev) {
		/* ext4_dax_fault calls ext4_dax_huge_fault: report the
		 * outermost handler only, count the nesting depth. */
		ev->reserved += 1;
		return 0;
	}
	if (!c || !task_wanted(c))
		return 0;
	struct pft_event *seed = blank.lookup(&zero);
	if (!seed)
		return 0;
	hstate.update(&tid, seed);
	ev = hstate.lookup(&tid);
	if (!ev)
		return 0;
	u64 vmf = PT_REGS_PARM1(ctx);
	u64 inode = fill_fault(ev, vmf, c);
	if (!inode) {
		/* Keep a marker so nested calls of a filtered fault stay quiet. */
		ev->type = 0;
		return 0;
	}
	ev->type = PFT_EV_HANDLER;
	ev->handler = bpf_get_func_ip(ctx);
	ev->arg = PT_REGS_PARM2(ctx);	/* huge_fault's size; unused by the others */
	ev->address = inode;		/* parked: the real address is re-read at return */

	u64 vma = 0, ops = 0, fault = 0, huge = 0;
	READ(vma, vmf, VMF_VMA);
	READ(ops, vma, VMA_VM_OPS);
	if (ops) {
		READ(fault, ops, VMOPS_FAULT);
		READ(huge, ops, VMOPS_HUGE_FAULT);
	}
	if (ev->handler == fault)
		ev->roles |= PFT_ROLE_FAULT;
	if (ev->handler == huge)
		ev->roles |= PFT_ROLE_HUGE_FAULT;
	if (ev->handler == ev->ops_page_mkwrite)
		ev->roles |= PFT_ROLE_PAGE_MKWRITE;
	if (ev->handler == ev->ops_pfn_mkwrite)
		ev->roles |= PFT_ROLE_PFN_MKWRITE;

	struct pft_event *wp = wpstate.lookup(&tid);
	if (wp) {
		ev->flags |= PFT_F_IN_WP | (wp->flags & PFT_F_PFN_PATH);
		wp->flags |= PFT_F_HANDLER_RAN;
	}
	/* vmf itself, for the address at return. */
	ev->duration_ns = vmf;
	read_times(ev, inode, 0);
	return 0;
}

int handler_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pft_event *ev = hstate.lookup(&tid);
	if (!ev)
		return 0;
	if (ev->reserved) {
		ev->reserved -= 1;
		return 0;
	}
	if (ev->type == PFT_EV_HANDLER) {
		u64 inode = ev->address;
		u64 vmf = ev->duration_ns;
		read_times(ev, inode, 1);
		READ(ev->address, vmf, VMF_ADDRESS);
		ev->ret = PT_REGS_RC(ctx);
		ev->duration_ns = bpf_ktime_get_ns() - ev->ts_ns;
		emit(ev);
	}
	hstate.delete(&tid);
	return 0;
}

int ftu_entry(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pft_event *ev = hstate.lookup(&tid);
	if (ev)
		ev->ftu_calls += 1;
	ev = wpstate.lookup(&tid);
	if (ev)
		ev->ftu_calls += 1;
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	u32 child = args->child_pid;
	u8 one = 1;
	if (traced.lookup(&parent))
		traced.update(&child, &one);
	return 0;
}

/* fs_dax tracepoints: the kernel's own account of DAX faults. */
static __always_inline struct pft_event *tp_event(u32 type, u32 dev, u64 ino)
{
	struct pft_config *c = cfg();
	u32 zero = 0;
	if (!c || !task_wanted(c) || !dev_wanted(c, dev))
		return 0;
	if (c->ino && c->ino != ino)
		return 0;
	struct pft_event *ev = blank.lookup(&zero);
	if (!ev)
		return 0;
	/* The per-CPU seed is scratch space here: reset what we set. */
	__builtin_memset(ev, 0, sizeof(*ev));
	u64 id = bpf_get_current_pid_tgid();
	ev->type = type;
	ev->dev = dev;
	ev->ino = ino;
	ev->pid = id >> 32;
	ev->tid = (u32)id;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_ns = bpf_ktime_get_ns();
	ev->flags = PFT_F_FILE | PFT_F_INODE_DAX;
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
	return ev;
}

static __always_inline void tp_done(struct pft_event *ev)
{
	emit(ev);
	__builtin_memset(ev, 0, sizeof(*ev));
}

/* The fault tracepoints share these fields (fs_dax.h); each has its own
 * args type, hence a macro rather than a function. */
#define COPY_FAULT_FIELDS(ev, args) do {	\
	(ev)->pgoff = (args)->pgoff;		\
	(ev)->address = (args)->address;	\
	(ev)->vm_flags = (args)->vm_flags;	\
	(ev)->fault_flags = (args)->flags;	\
	(ev)->ret = (args)->result;		\
} while (0)

#ifdef HAVE_TP_DAX_PTE_FAULT_DONE
TRACEPOINT_PROBE(fs_dax, dax_pte_fault_done)
{
	struct pft_event *ev = tp_event(PFT_EV_DAX_FAULT, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	tp_done(ev);
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_PMD_FAULT_DONE
TRACEPOINT_PROBE(fs_dax, dax_pmd_fault_done)
{
	struct pft_event *ev = tp_event(PFT_EV_DAX_FAULT, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	ev->flags |= PFT_F_PMD;
	tp_done(ev);
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_INSERT_PFN_MKWRITE
TRACEPOINT_PROBE(fs_dax, dax_insert_pfn_mkwrite)
{
	struct pft_event *ev = tp_event(PFT_EV_DAX_MKWRITE, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	tp_done(ev);
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_WRITEBACK_ONE
TRACEPOINT_PROBE(fs_dax, dax_writeback_one)
{
	struct pft_event *ev = tp_event(PFT_EV_DAX_WRITEBACK, args->dev, args->ino);
	if (!ev)
		return 0;
	ev->pgoff = args->pgoff;
	ev->arg = args->pglen;
	tp_done(ev);
	return 0;
}
#endif
