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
 *   kprobe/kretprobe do_wp_page       -> PFT_EV_WP (or fentry/fexit)
 *   kprobe/kretprobe <fs handlers>    -> PFT_EV_HANDLER (outermost call only;
 *                                        inside do_wp_page, folded into its
 *                                        PFT_EV_WP: PFT_F_HANDLER_FOLDED)
 *                                        (or fentry/fexit, loaded by tracer.py)
 *   kprobe file_update_time           -> counts into the running WP/handler
 *                                        (or fentry)
 *   kprobe/kretprobe vfs_getattr_nosec -> PFT_EV_GETATTR: what stat showed whom
 *                                        (every stat, statx, fstat reaches it;
 *                                        vfs_getattr is inlined on Debian's kernels)
 *                                        (or fentry/fexit)
 *   fs_dax tracepoints                -> counted per file and process
 *                                        (filecounts), or with --every-event
 *                                        PFT_EV_DAX_*
 *   sched:sched_process_fork          -> follows a command's descendants
 *   fs_dax:dax_writeback_one, kprobe unmap_page_range
 *                                     -> PFT_EV_CLOSE (record): a written
 *                                        file's pages read-only again, the
 *                                        end of their write-exposure windows
 */
#include <uapi/linux/ptrace.h>
#include "pfntrace.h"
#include "verdict.h"
#include "kread.h"

/* bcc declares the tracepoints' argument structs from their tracefs format,
 * which names the kernel's own types: the fs_dax events' vm_flags field is
 * `vm_flags_t` on 7.x (`unsigned long` before), and nothing here includes
 * <linux/mm_types.h>.  The same typedef as the kernel's, so a header that
 * brings it too is harmless. */
typedef unsigned long vm_flags_t;

#define S_DAX 8192		/* include/linux/fs.h, CONFIG_FS_DAX */
#define MAX_DEVS 8
#define ONE_SECOND_NS 1000000000ULL
/* A ring buffer record: an 8-byte header, the data rounded up to 8 bytes. */
#define RING_RECORD_BYTES ((sizeof(struct pft_event) + 8 + 7) & ~7UL)
/* RING_WAKEUP_BYTES: -D by tracer.py, a share of the ring's size. */

struct pft_config {
	u32 follow;		/* 1: only tasks in the traced map */
	u32 all_files;		/* 0: DAX inodes only */
	u64 ino;		/* 0: any inode */
	u32 ndevs;
	u32 devs[MAX_DEVS];	/* kernel dev_t of watched mounts; 0 devs: any */
	u64 tk_base;		/* the timekeeper's data (tk_core), for the kernel's
				   timestamp clock; 0: unknown (clock_ns stays 0) */
	u64 mg_floor;		/* &mg_floor (6.13+ multigrain floor); 0: none */
	u32 self_tgid;		/* pfntrace itself: its stats observe nothing */
	u32 armed;		/* written last by user space; until then (the
				   tracepoints and the fentry/fexit shims run
				   from the moment bcc loads the program) the
				   zeroed config would mean "every task, every
				   device": every probe stays quiet */
};

/*
 * Per-thread state between a probe's entry and its return: the event being
 * built, and what the return needs that the event does not carry.  It lives
 * in the task's own storage (BPF_TASK_STORAGE): found through the task
 * instead of by hashing a tid, made once for a thread and reused for each of
 * its faults, freed with the thread, never full.  `active` says a state is
 * in use (before, a hash entry's presence did).
 */
struct wp_state {
	struct pft_event ev;
	u64 inode;
	u64 vmf;
	u32 active;
};

struct handler_state {
	struct pft_event ev;
	u64 inode;
	u64 vmf;
	u64 sp;			/* stack pointer at the outermost entry */
	u64 start;		/* CLOCK_MONOTONIC at the outermost entry */
	u32 depth;		/* nested handler calls (ext4_dax_fault -> ext4_dax_huge_fault) */
	u32 traced;		/* 0: a fault we do not trace (its nested calls stay quiet) */
	u32 active;
};

/* Between vfs_getattr_nosec's entry and return: the event being built, and
 * where the kernel writes what it shows (struct kstat), for a return probe
 * without the arguments (kretprobe). */
struct getattr_state {
	struct pft_event ev;
	u64 stat;
	u32 active;
};

BPF_ARRAY(config, struct pft_config, 1);
BPF_HASH(traced, u32, u8, 65536);		/* tgids being followed */
BPF_TASK_STORAGE(wpstate, struct wp_state);	/* inside do_wp_page */
BPF_TASK_STORAGE(hstate, struct handler_state);	/* inside a handler */
BPF_TASK_STORAGE(gastate, struct getattr_state);	/* inside a getattr */
/* Traced states in use: faults whose return is awaited ([0], atomic; read
 * through memory, pfntrace.h says why). */
BPF_F_TABLE("array", u32, s64, inflight, 1, BPF_F_MMAPABLE);
/*
 * Per-CPU scratch is safe only where the program cannot be preempted:
 * tracepoint and kprobe programs run with preemption off, but fentry/fexit
 * programs only with migration off, and a kernel with CONFIG_PREEMPT_LAZY
 * (Debian's 7.x) preempts them; a program of another task on the same CPU
 * would then write into the scratch half-way through.  So what an fentry
 * program builds lives in per-thread state (the task storage above, a hash
 * keyed by tid for names); the per-CPU arrays below are only read (all-zero
 * seeds), written by tracepoints (blank), or counted atomically.
 */
BPF_PERCPU_ARRAY(blank, struct pft_event, 1);	/* scratch for tracepoint events */
BPF_PERCPU_ARRAY(nameseed, struct pft_name, 1);
/* Everything not seen, per CPU and PFT_BLIND_* reason, each CPU's total at
 * PFT_BLIND_LOST; user space reads it through memory (pfntrace.h says why).
 * Counted atomically: two tasks' fentry programs can interleave on a CPU.
 * PFT_NCPUS: -D by tracer.py, the possible CPUs. */
BPF_F_TABLE("array", u32, u64, blind, PFT_NCPUS * PFT_BLIND_STRIDE, BPF_F_MMAPABLE);
/* How much waits in the ring for the consumer (PFT_RING_SENT, PFT_RING_TAKEN);
 * the consumer writes TAKEN through memory, never by a map syscall. */
BPF_F_TABLE("array", u32, u64, ringfill, 2, BPF_F_MMAPABLE);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* Rows user space reads through memory (pfntrace.h): each table's next row,
 * and where a key's row is. */
BPF_F_TABLE("array", u32, u64, rownext, PFT_ROW_TABLES, BPF_F_MMAPABLE);
BPF_HASH(rowof, struct pft_row_key, u32, PFT_COUNT_ROWS + PFT_AGG_FILE_ROWS + PFT_AGG_PROC_ROWS);
BPF_HASH(names, struct pft_file_key, struct pft_name, 4096);
#ifndef PFT_NO_STREAM
/* Files a traced write fault made writable (record).  Their pages stay
 * writable, with no fault and no timestamp update for later stores, until
 * written back or unmapped (pfntrace/exposure.py: write-exposure windows);
 * that is often done by another task (a sync, a truncate, the exit of a
 * child), so for these files it is sent whoever does it (PFT_EV_CLOSE). */
BPF_HASH(written, struct pft_file_key, u8, PFT_WRITTEN_FILES);
#endif
BPF_HASH(namebuf, u32, struct pft_name, 1024);	/* per tid: a name being read */

/* Something was not seen: count it, by reason and in the total. */
static __always_inline void count_blind(u32 reason)
{
	u32 cpu = bpf_get_smp_processor_id();
	if (cpu >= PFT_NCPUS)
		cpu = PFT_NCPUS - 1;
	u32 at = cpu * PFT_BLIND_STRIDE + reason;
	u32 total = cpu * PFT_BLIND_STRIDE + PFT_BLIND_LOST;
	u64 *b = blind.lookup(&at);
	if (b)
		__sync_fetch_and_add(b, 1);
	u64 *l = blind.lookup(&total);
	if (l)
		__sync_fetch_and_add(l, 1);
}

/* The row of key->table that holds key, claimed when it has none; -1 when
 * the table (rows entries) is full.  *fresh: claimed here, so the caller
 * writes the row's key, then row_ready().  Two CPUs claiming one key at
 * once each take a row number; the hash keeps the first, and the other
 * number's row stays unused (never ready). */
static __always_inline s64 row_of(struct pft_row_key *key, u32 rows, int *fresh)
{
	*fresh = 0;
	u32 *at = rowof.lookup(key);
	if (at)
		return *at;
	u32 table = key->table;
	u64 *next = rownext.lookup(&table);
	if (!next)
		return -1;
	u32 i = __sync_fetch_and_add(next, 1);
	if (i >= rows)
		return -1;
	if (rowof.insert(key, &i) == 0) {
		*fresh = 1;
		return i;
	}
	at = rowof.lookup(key);
	return at ? *at : -1;
}

/* A claimed row's key is written: let user space read it.  (A compiler
 * barrier: BPF has no fence; x86 keeps stores in order, and user space
 * reads every row again once the probes are gone.) */
static __always_inline void row_ready(u64 *ready)
{
	asm volatile("" ::: "memory");
	*ready = 1;
}

static __always_inline void inflight_add(s64 n)
{
	u32 zero = 0;
	s64 *f = inflight.lookup(&zero);
	if (f)
		__sync_fetch_and_add(f, n);
}

/*
 * This thread's state of each kind: *_state(0) finds it (0 when the thread
 * never had one), *_state(BPF_LOCAL_STORAGE_GET_F_CREATE) makes it too;
 * *_active() is the state only while in use.  Made only for what is
 * traced: the machine's other faults cost one lookup.
 */
static __always_inline struct wp_state *wp_state(u64 flags)
{
	return wpstate.task_storage_get(bpf_get_current_task_btf(), 0, flags);
}

static __always_inline struct handler_state *h_state(u64 flags)
{
	return hstate.task_storage_get(bpf_get_current_task_btf(), 0, flags);
}

static __always_inline struct getattr_state *ga_state(u64 flags)
{
	return gastate.task_storage_get(bpf_get_current_task_btf(), 0, flags);
}

/* (bcc allows no map function inside a macro: the lookups stay above.)
 * in_flight: a state of this kind is a traced fault from its beginning, so
 * beginning one counts it in flight (wp); a handler's is counted only once
 * known to be traced, a getattr's never. */
#define TASK_STATE(name, type, in_flight)					\
static __always_inline type *name##_active(void)				\
{										\
	type *st = name##_state(0);						\
	return st && st->active ? st : 0;					\
}										\
/* Begin using st (made when 0): all fields zero, active. */			\
static __always_inline type *name##_begin(type *st)				\
{										\
	if (!st)								\
		st = name##_state(BPF_LOCAL_STORAGE_GET_F_CREATE);		\
	if (!st) {								\
		count_blind(PFT_BLIND_STATE);					\
		return 0;							\
	}									\
	__builtin_memset(st, 0, sizeof(*st));					\
	st->active = 1;								\
	if (in_flight)								\
		inflight_add(1);						\
	return st;								\
}
TASK_STATE(wp, struct wp_state, 1)
TASK_STATE(h, struct handler_state, 0)
TASK_STATE(ga, struct getattr_state, 0)

/* A wp state is always a traced fault; a handler's only when traced. */
static __always_inline void wp_end(struct wp_state *st)
{
	st->active = 0;
	inflight_add(-1);
}

static __always_inline void h_end(struct handler_state *st)
{
	if (st->traced)
		inflight_add(-1);
	st->active = 0;
}

/* A getattr's state is no fault: it is never counted in flight. */
static __always_inline void ga_end(struct getattr_state *st)
{
	st->active = 0;
}

#ifdef PFT_COUNT_IN_KERNEL
/* record: what is no write fault, counted per (file, process) instead of
 * sent, in rows user space reads through memory (pfntrace.h).  The counts
 * only grow. */
BPF_F_TABLE("array", u32, struct pft_count_row, countrows, PFT_COUNT_ROWS, BPF_F_MMAPABLE);

/* id: bpf_get_current_pid_tgid(), as the caller read it. */
static __always_inline struct pft_file_counts *counts_of(u32 dev, u64 ino, u64 id)
{
	struct pft_row_key key = {};
	int fresh;
	key.ino = ino;
	key.dev = dev;
	key.pid = id >> 32;
	key.table = PFT_ROWS_COUNTS;
	s64 at = row_of(&key, PFT_COUNT_ROWS, &fresh);
	u32 i = at;
	struct pft_count_row *row = at < 0 ? 0 : countrows.lookup(&i);
	if (!row) {
		count_blind(PFT_BLIND_COUNTERS);
		return 0;
	}
	if (fresh) {
		row->key.ino = ino;
		row->key.dev = dev;
		row->key.pid = key.pid;
		bpf_get_current_comm(&row->counts.comm, sizeof(row->counts.comm));
		row_ready(&row->ready);
	}
	return &row->counts;
}

#define COUNT_ADD(n, field, v) __sync_fetch_and_add(&(n)->field, (v))
#endif

#ifdef PFT_AGGREGATE
/* ---- In-kernel aggregation (pfntrace top) -----------------------------------
 * Every event emit() sees is classified and judged here by verdict.h, the
 * rules correlate.py applies to a recording, and counted per file, per
 * process and globally.  With PFT_NO_STREAM nothing goes to the ring buffer. */
#if HUGE_FAULT_ARG_IS_ORDER
#define AGG_PMD_ARG 9
#define AGG_PUD_ARG 18
#else
#define AGG_PMD_ARG 1
#define AGG_PUD_ARG 2
#endif
#define AGG_NS 1000000000ULL

struct agg_nest {
	u64 start;
	u64 end;
	u64 pgoff;
};

BPF_ARRAY(aggconfig, struct pft_agg_config, 1);
/* Read by top and the exporter through memory while the workload runs
 * (pfntrace.h: rows user space reads through memory). */
BPF_F_TABLE("array", u32, struct pft_agg_file_row, aggfiles, PFT_AGG_FILE_ROWS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct pft_agg_proc_row, aggprocs, PFT_AGG_PROC_ROWS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct pft_agg_stats, aggtotal, 1, BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct pft_rate_slot, aggrate, PFT_AGG_RATE_SLOTS, BPF_F_MMAPABLE);
BPF_HASH(aggnest, u32, struct agg_nest, 4096);	/* per tid: last PTE ->huge_fault */
/* Per file: its last getattr (PFT_EV_GETATTR), for verdict.h's pft_invisible(). */
BPF_HASH(observed, struct pft_file_key, struct pft_event, PFT_AGG_FILE_ROWS);

/* A file's counters (its row, claimed at its first write fault); 0: full. */
static __always_inline struct pft_agg_stats *agg_file(u32 dev, u64 ino)
{
	struct pft_row_key key = {};
	int fresh;
	key.ino = ino;
	key.dev = dev;
	key.table = PFT_ROWS_FILES;
	s64 at = row_of(&key, PFT_AGG_FILE_ROWS, &fresh);
	u32 i = at;
	struct pft_agg_file_row *row = at < 0 ? 0 : aggfiles.lookup(&i);
	if (!row)
		return 0;
	if (fresh) {
		row->key.ino = ino;
		row->key.dev = dev;
		row_ready(&row->ready);
	}
	return &row->stats;
}

/* A process's counters, likewise. */
static __always_inline struct pft_proc_stats *agg_proc(u32 pid)
{
	struct pft_row_key key = {};
	int fresh;
	key.pid = pid;
	key.table = PFT_ROWS_PROCS;
	s64 at = row_of(&key, PFT_AGG_PROC_ROWS, &fresh);
	u32 i = at;
	struct pft_agg_proc_row *row = at < 0 ? 0 : aggprocs.lookup(&i);
	if (!row)
		return 0;
	if (fresh) {
		row->pid = pid;
		row_ready(&row->ready);
	}
	return &row->stats;
}

/* The kind of write fault (verdict.h), or -1: not one, or the inner half of
 * a first-touch fault already counted.  A PTE-size ->huge_fault enclosed by
 * a ->fault of the same task at the same pgoff (ext4_dax_fault calls
 * ext4_dax_huge_fault) is that same fault: correlate.py drops it the same way. */
static __always_inline int agg_kind(struct pft_event *ev)
{
	int kind = pft_classify(ev, AGG_PMD_ARG, AGG_PUD_ARG);
	if (kind != PFT_C_FAULT)
		return kind < PFT_C_KINDS ? kind : -1;
	u32 tid = ev->tid;
	if (ev->roles & PFT_ROLE_HUGE_FAULT) {
		struct agg_nest n = {};
		n.start = ev->ts_ns;
		n.end = ev->ts_ns + ev->duration_ns;
		n.pgoff = ev->pgoff;
		aggnest.update(&tid, &n);
		return kind;
	}
	struct agg_nest *n = aggnest.lookup(&tid);
	if (n) {
		int inner = ev->ts_ns <= n->start && n->end <= ev->ts_ns + ev->duration_ns &&
			    n->pgoff == ev->pgoff;
		aggnest.delete(&tid);
		if (inner)
			return -1;
	}
	return kind;
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
	int verdict = pft_judge(ev, kind);
	if (verdict < 0 || verdict >= PFT_AGG_VERDICTS)
		return;
	u32 b = agg_bucket(ev->duration_ns);
	int timed = kind != PFT_C_NO_NOTIFIER;	/* the fault's own latency */

	struct pft_file_key key = {};
	key.ino = ev->ino;
	key.dev = ev->dev;
	struct pft_event *obs = observed.lookup(&key);
	int invisible = obs ? pft_invisible(ev, obs) : 0;
	struct pft_agg_stats *f = agg_file(ev->dev, ev->ino);
	if (f) {
		if (invisible)
			__sync_fetch_and_add(&f->invisible, 1);
		__sync_fetch_and_add(&f->kinds[kind], 1);
		__sync_fetch_and_add(&f->verdicts[verdict], 1);
		if (timed) {
			__sync_fetch_and_add(&f->lat[agg_idx(b)], 1);
			__sync_fetch_and_add(&f->lat_sum, ev->duration_ns);
		}
		__sync_fetch_and_add(&f->total, 1);
		f->last_ts = ev->ts_ns;
		f->last_pid = ev->pid;
	} else {
		count_blind(PFT_BLIND_COUNTERS);
	}

	struct pft_proc_stats *p = agg_proc(ev->pid);
	if (!p)
		count_blind(PFT_BLIND_COUNTERS);
	if (p) {
		if (invisible)
			__sync_fetch_and_add(&p->invisible, 1);
		__sync_fetch_and_add(&p->kinds[kind], 1);
		__sync_fetch_and_add(&p->verdicts[verdict], 1);
		__sync_fetch_and_add(&p->total, 1);
		/* The task's name, a helper call: at most once a second while
		 * it faults (an exec renames it), not at every fault. */
		if (ev->ts_ns / ONE_SECOND_NS != p->last_ts / ONE_SECOND_NS)
			bpf_get_current_comm(p->comm, sizeof(p->comm));
		p->last_ts = ev->ts_ns;
	}

	/* Atomic: an fexit program can be preempted between the read and the
	 * write of a plain increment (see the scratch note). */
	struct pft_agg_stats *t = aggtotal.lookup(&zero);
	if (t) {
		__sync_fetch_and_add(&t->kinds[kind], 1);
		__sync_fetch_and_add(&t->verdicts[verdict], 1);
		if (timed) {
			__sync_fetch_and_add(&t->lat[agg_idx(b)], 1);
			__sync_fetch_and_add(&t->lat_sum, ev->duration_ns);
		}
		__sync_fetch_and_add(&t->total, 1);
		if (invisible)
			__sync_fetch_and_add(&t->invisible, 1);
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

#ifndef PFT_NO_STREAM
/* A write fault's file: its windows' closes are sent from now on. */
static __always_inline void mark_written(struct pft_event *ev)
{
	if ((ev->type != PFT_EV_WP && ev->type != PFT_EV_HANDLER) ||
	    !(ev->fault_flags & PFT_FAULT_FLAG_WRITE))
		return;
	struct pft_file_key key = {.ino = ev->ino, .dev = ev->dev};
	u8 one = 1;
	if (!written.lookup_or_try_init(&key, &one))
		count_blind(PFT_BLIND_COUNTERS);	/* its closes would go unseen */
}
#endif

static __always_inline void emit(struct pft_event *ev)
{
#ifdef PFT_AGGREGATE
	agg_account(ev);
#endif
#ifndef PFT_NO_STREAM
	mark_written(ev);
	u32 sent_i = PFT_RING_SENT, taken_i = PFT_RING_TAKEN;
	u64 *sent = ringfill.lookup(&sent_i), *taken = ringfill.lookup(&taken_i);
	u64 flags = BPF_RB_NO_WAKEUP;

	/* A wakeup costs the faulting task more than the probe itself, and a
	 * consumer woken for every few events spends its CPU on them while the
	 * workload runs: it drains every POLL_MS (tracer.py) and is woken
	 * sooner only when RING_WAKEUP_BYTES are waiting (the kernel's
	 * BPF_RB_AVAIL_DATA, counted here: bcc 0.26 has no ringbuf_query). */
	if (sent && taken && (s64)(*sent - *taken) >= RING_WAKEUP_BYTES)
		flags = BPF_RB_FORCE_WAKEUP;
	if (events.ringbuf_output(ev, sizeof(*ev), flags) != 0)
		count_blind(PFT_BLIND_RING);
	else if (sent)
		__sync_fetch_and_add(sent, RING_RECORD_BYTES);
#endif /* PFT_NO_STREAM */
}

static __always_inline struct pft_config *cfg(void)
{
	u32 zero = 0;
	struct pft_config *c = config.lookup(&zero);
	return c && c->armed ? c : 0;
}

/* id: bpf_get_current_pid_tgid(), read once by each program that needs it
 * (a helper call is ~0.2 us under TCG). */
static __always_inline int task_wanted(struct pft_config *c, u64 id)
{
	if (!c->follow)
		return 1;
	u32 tgid = id >> 32;
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

/*
 * The kernel's timestamp clock now, as current_time() reads it: the
 * timekeeper's coarse realtime (xtime: ktime_get_coarse_real_ts64), and on
 * 6.13+ the multigrain floor when that is later (ktime_get_coarse_real_ts64_mg).
 * The TKC_* offsets are relative to tk_base and come from BTF; the
 * timekeeper's sequence count is checked so a torn read is never used.
 * 0 when the clock cannot be read.
 */
static __always_inline s64 kernel_clock(struct pft_config *c)
{
	u64 base = c->tk_base;
	u32 seq0 = 0, seq1 = 0, shift = 0;
	s64 sec = 0, offs = 0, floor = 0, now = 0;
	u64 nsec = 0;
	SPAN_BUF(tk, TKC_LO, TKC_HI);

	if (!base)
		return 0;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		/* The span starts with the sequence count (kread.h). */
		SPAN_READ(tk, base, TKC_LO, TKC_HI);
		SPAN_GET(seq0, tk, TKC_LO, TKC_SEQ);
		SPAN_GET(sec, tk, TKC_LO, TKC_XTIME_SEC);
		SPAN_GET(nsec, tk, TKC_LO, TKC_XTIME_NSEC);
		SPAN_GET(shift, tk, TKC_LO, TKC_SHIFT);
		SPAN_GET(offs, tk, TKC_LO, TKC_OFFS_REAL);
		READ(seq1, base, TKC_SEQ);
		if (seq0 == seq1 && !(seq0 & 1) && shift < 64) {
			now = sec * PFT_NS + (s64)(nsec >> shift);
			break;
		}
	}
	if (now && c->mg_floor) {
		READ(floor, c->mg_floor, 0);
		if (floor && floor + offs > now)
			now = floor + offs;
	}
	return now;
}

/* Timestamps and the clock, at entry (i = 0) or return (i = 1).
 * direct: inode is a BTF-typed pointer (kread.h, LOAD64). */
static __always_inline void read_times(struct pft_event *ev, u64 inode, int i,
				       struct pft_config *c, int direct)
{
	SPAN_BUF(t, ITIMES_LO, ITIMES_HI);

	if (direct) {
		LOAD64(ev->mtime_sec[i], inode, INODE_MTIME_SEC);
		LOAD32(ev->mtime_nsec[i], inode, INODE_MTIME_NSEC);
		LOAD64(ev->ctime_sec[i], inode, INODE_CTIME_SEC);
		LOAD32(ev->ctime_nsec[i], inode, INODE_CTIME_NSEC);
	} else {
		SPAN_READ(t, inode, ITIMES_LO, ITIMES_HI);
		SPAN_GET(ev->mtime_sec[i], t, ITIMES_LO, INODE_MTIME_SEC);
		SPAN_GET(ev->mtime_nsec[i], t, ITIMES_LO, INODE_MTIME_NSEC);
		SPAN_GET(ev->ctime_sec[i], t, ITIMES_LO, INODE_CTIME_SEC);
		SPAN_GET(ev->ctime_nsec[i], t, ITIMES_LO, INODE_CTIME_NSEC);
	}
	ev->clock_ns[i] = kernel_clock(c);
}

/* Name a file once, in the kernel (see struct pft_name). */
static __always_inline void remember_name(u64 file, u32 dev, u64 ino, u32 tid)
{
	struct pft_file_key key = {};
	u32 zero = 0;
	u64 d = 0, parent = 0, name = 0;

	key.ino = ino;
	key.dev = dev;
	if (names.lookup(&key))
		return;
	/* Too big for the stack: built in this thread's slot (not per-CPU
	 * scratch: wp_enter may run as a preemptible fentry program). */
	struct pft_name *seed = nameseed.lookup(&zero);
	if (!seed || namebuf.update(&tid, seed) != 0)
		return;
	struct pft_name *n = namebuf.lookup(&tid);
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
	namebuf.delete(&tid);
}

/*
 * What a fault's probes need from struct vm_fault, its vma, the vma's vm_ops
 * and the file's inode, read once into these fields and judged here on the
 * stack, so that a fault pfntrace does not trace (anonymous copy-on-write,
 * page cache, another device) costs those reads and no per-thread state.
 * A kprobe reads each struct as one span (kread.h), which does not outlive
 * its reading (the BPF stack is 512 bytes); an fentry/fexit program
 * (direct) loads each field (kread.h, LOAD64), and the pointers here stay
 * BTF-typed for the loads that follow.
 */
struct fault_facts {
	u64 pgoff;
	u64 address;
	u64 vm_flags;
	u64 ops;		/* vm_ops */
	u64 file;
	u64 fault;		/* vm_ops slots, once ops_read */
	u64 huge_fault;
	u64 map_pages;
	u64 page_mkwrite;
	u64 pfn_mkwrite;
	u64 inode;		/* once fault_wanted() read it */
	u64 sb;
	u64 ino;
	u32 fault_flags;	/* struct vm_fault.flags */
	u32 i_flags;
	u32 dev;
	u32 ops_read;
};

static __always_inline void read_ops(struct fault_facts *x, int direct)
{
	SPAN_BUF(o, VMOPS_LO, VMOPS_HI);

	if (!x->ops || x->ops_read)
		return;
	x->ops_read = 1;
	if (direct) {
		LOAD64(x->fault, x->ops, VMOPS_FAULT);
		LOAD64(x->huge_fault, x->ops, VMOPS_HUGE_FAULT);
		LOAD64(x->map_pages, x->ops, VMOPS_MAP_PAGES);
		LOAD64(x->page_mkwrite, x->ops, VMOPS_PAGE_MKWRITE);
		LOAD64(x->pfn_mkwrite, x->ops, VMOPS_PFN_MKWRITE);
		return;
	}
	SPAN_READ(o, x->ops, VMOPS_LO, VMOPS_HI);
	SPAN_GET(x->fault, o, VMOPS_LO, VMOPS_FAULT);
	SPAN_GET(x->huge_fault, o, VMOPS_LO, VMOPS_HUGE_FAULT);
	SPAN_GET(x->map_pages, o, VMOPS_LO, VMOPS_MAP_PAGES);
	SPAN_GET(x->page_mkwrite, o, VMOPS_LO, VMOPS_PAGE_MKWRITE);
	SPAN_GET(x->pfn_mkwrite, o, VMOPS_LO, VMOPS_PFN_MKWRITE);
}

/* struct vm_fault and its vma: the vma's file, 0 for anonymous memory
 * (copy-on-write faults are not our business). */
static __always_inline u64 read_fault_vma(struct fault_facts *x, u64 vmf, int direct)
{
	u64 vma = 0;
	SPAN_BUF(f, VMF_LO, VMF_HI);
	SPAN_BUF(v, VMA_LO, VMA_HI);

	if (direct) {
		LOAD64(vma, vmf, VMF_VMA);
		LOAD64(x->pgoff, vmf, VMF_PGOFF);
		LOAD64(x->address, vmf, VMF_ADDRESS);
		LOAD32(x->fault_flags, vmf, VMF_FLAGS);
		if (!vma)
			return 0;
		LOAD64(x->file, vma, VMA_VM_FILE);
		LOAD64(x->ops, vma, VMA_VM_OPS);
		LOAD64(x->vm_flags, vma, VMA_VM_FLAGS);
		return x->file;
	}
	SPAN_READ(f, vmf, VMF_LO, VMF_HI);
	SPAN_GET(vma, f, VMF_LO, VMF_VMA);
	SPAN_GET(x->pgoff, f, VMF_LO, VMF_PGOFF);
	SPAN_GET(x->address, f, VMF_LO, VMF_ADDRESS);
	SPAN_GET(x->fault_flags, f, VMF_LO, VMF_FLAGS);
	if (!vma)
		return 0;
	SPAN_READ(v, vma, VMA_LO, VMA_HI);
	SPAN_GET(x->file, v, VMA_LO, VMA_VM_FILE);
	SPAN_GET(x->ops, v, VMA_LO, VMA_VM_OPS);
	SPAN_GET(x->vm_flags, v, VMA_LO, VMA_VM_FLAGS);
	return x->file;
}

/*
 * The file's inode, and the filters: returns the inode pointer, or 0 when
 * the fault is not one we trace (not DAX unless --all-files, another
 * device, another inode).
 */
static __always_inline u64 fault_wanted(struct fault_facts *x, struct pft_config *c,
					int direct)
{
	SPAN_BUF(in, INODE_LO, INODE_HI);

	if (direct) {
		LOAD64(x->inode, x->file, FILE_F_INODE);
		LOAD32(x->i_flags, x->inode, INODE_I_FLAGS);
		LOAD64(x->sb, x->inode, INODE_I_SB);
		LOAD64(x->ino, x->inode, INODE_I_INO);
	} else {
		READ(x->inode, x->file, FILE_F_INODE);
		SPAN_READ(in, x->inode, INODE_LO, INODE_HI);
		SPAN_GET(x->i_flags, in, INODE_LO, INODE_I_FLAGS);
		SPAN_GET(x->sb, in, INODE_LO, INODE_I_SB);
		SPAN_GET(x->ino, in, INODE_LO, INODE_I_INO);
	}
	if (!c->all_files && !(x->i_flags & S_DAX)) {
		/* Non-DAX files are skipped by default, except the case the
		 * tool exists for: a shared pfn mapping with no ->pfn_mkwrite,
		 * whose writes nobody hears of. */
		read_ops(x, direct);
		u64 pfnmap = x->vm_flags & (PFT_VM_PFNMAP | PFT_VM_MIXEDMAP);
		if (!(pfnmap && (x->vm_flags & PFT_VM_SHARED) && !x->pfn_mkwrite))
			return 0;
	}
	READ32(direct, x->dev, x->sb, SB_S_DEV);
	if (!dev_wanted(c, x->dev))
		return 0;
	if (c->ino && c->ino != x->ino)
		return 0;
	return x->inode;
}

/*
 * Fill the event of a wanted fault (fault_wanted) from its facts, and what
 * only its first probe reads: the task, the clock, the file's name (record).
 */
static __always_inline void fill_fault(struct pft_event *ev, struct fault_facts *x,
				       u64 id, int direct)
{
	read_ops(x, direct);
	ev->vm_flags = x->vm_flags;
	ev->ops_pfn_mkwrite = x->pfn_mkwrite;
	ev->ops_page_mkwrite = x->page_mkwrite;
	ev->flags = PFT_F_FILE;
	if (x->i_flags & S_DAX)
		ev->flags |= PFT_F_INODE_DAX;
	if (ev->ops_pfn_mkwrite)
		ev->flags |= PFT_F_HAS_PFN_MKWRITE;
	if (ev->ops_page_mkwrite)
		ev->flags |= PFT_F_HAS_PAGE_MKWRITE;
	ev->dev = x->dev;
	ev->ino = x->ino;
	READ32(direct, ev->time_gran, x->sb, SB_S_TIME_GRAN);
#ifndef PFT_NO_STREAM
	/* top finds a file's path through the process that faulted last. */
	remember_name(x->file, ev->dev, ev->ino, (u32)id);
#endif
	ev->pgoff = x->pgoff;
	ev->address = x->address;
	ev->fault_flags = x->fault_flags;
	ev->pid = id >> 32;
	ev->tid = (u32)id;
	ev->cpu = bpf_get_smp_processor_id();
#ifndef PFT_NO_STREAM
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));	/* top: agg_account() */
#endif
	ev->ts_ns = bpf_ktime_get_ns();
}

/*
 * Each function hook is one body (wp_enter, wp_exit, wp_pfn_mark, ftu_count)
 * with thin shims per attach mechanism: a kprobe/kretprobe program always,
 * and an fentry/fexit program (bcc's KFUNC_PROBE/KRETFUNC_PROBE, a BPF
 * trampoline: no int3, no kretprobe instance pool) where the probe plan
 * chose one, -DPFT_FENTRY_<FUNCTION>.  bcc attaches the fentry programs
 * when it loads them; tracer.py attaches the kprobes.  A body's `direct`
 * argument is 1 in the fentry/fexit shims only: their arguments are
 * BTF-typed, so the fields are loaded directly (kread.h, LOAD64), where a
 * kprobe reads them with helper calls.
 */

#if (defined(PFT_NO_STREAM) || defined(PFT_COUNT_IN_KERNEL)) && VMF_FLAG_VMA_LOCK
/*
 * top, and record without --every-event: will this do_wp_page give up with
 * VM_FAULT_RETRY before calling anything?  Under the per-VMA lock (6.4+) a
 * shared mapping's do_wp_page may not call ->page_mkwrite or ->pfn_mkwrite
 * unless the vm_ops have ->map_pages (vmf_can_call_fault()): it returns
 * VM_FAULT_RETRY, and the fault is done again under mmap_lock.  That first
 * attempt is PFT_C_RETRY, which top counts nowhere and record only counts
 * (per file), so neither keeps state for it: it is half of the do_wp_page
 * calls on a DAX file.  The outcome is certain only when the vm_ops have
 * both handlers, whichever of wp_page_shared and wp_pfn_shared the page
 * takes.  The return checks the guess (retry_guess_check).
 */
#define WP_GUESS_RETRY 1
BPF_PERCPU_ARRAY(retryguess, u32, 1);	/* the tid whose do_wp_page was guessed */

static __always_inline int wp_will_retry(struct fault_facts *x, int direct)
{
	if (!(x->fault_flags & VMF_FLAG_VMA_LOCK) || !(x->vm_flags & PFT_VM_SHARED))
		return 0;
	read_ops(x, direct);
	return x->ops_read && !x->map_pages && x->page_mkwrite && x->pfn_mkwrite;
}

static __always_inline void guess_retry(u32 tid)
{
	u32 zero = 0;
	u32 *g = retryguess.lookup(&zero);
	if (g)
		*g = tid;
}

/* The guessed retry's return: a do_wp_page that did more than give up would
 * be a write fault top (or record) never saw, so it is counted as one not
 * seen.  (record has counted it as a retry.)
 * Checked on the CPU it began on (a migrated one goes unchecked). */
static __always_inline void retry_guess_check(u32 tid, u32 ret)
{
	u32 zero = 0;
	u32 *g = retryguess.lookup(&zero);
	if (!g || *g != tid)
		return;
	*g = 0;
	if (!(ret & PFT_VM_FAULT_RETRY))
		count_blind(PFT_BLIND_RETRY_GUESS);
}
#endif

/* A do_wp_page of this thread whose return never came (the kretprobe ran
 * out of instances) leaves its state behind: count it, never reuse it.
 * The fault is judged from its fields (kread.h) before any state is made: the
 * machine's other write-protect faults (anonymous copy-on-write above all)
 * cost a few reads, not a hash update and delete. */
static __always_inline int wp_enter(u64 vmf, int direct)
{
	struct pft_config *c = cfg();
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	if (!c || !task_wanted(c, id))
		return 0;
	struct wp_state *st = wp_state(0);
	if (st && st->active) {
		count_blind(PFT_BLIND_WP_RETURN);
		wp_end(st);
	}
	struct fault_facts x = {};
	if (!read_fault_vma(&x, vmf, direct))
		return 0;
#if defined(WP_GUESS_RETRY) && defined(PFT_NO_STREAM)
	if (wp_will_retry(&x, direct)) {	/* top counts it nowhere: no need to know the file */
		guess_retry(tid);
		return 0;
	}
#endif
	u64 inode = fault_wanted(&x, c, direct);
	if (!inode)
		return 0;
#if defined(WP_GUESS_RETRY) && defined(PFT_COUNT_IN_KERNEL)
	if (wp_will_retry(&x, direct)) {	/* record counts it for its file */
		struct pft_file_counts *n = counts_of(x.dev, x.ino, id);
		if (n)
			COUNT_ADD(n, retries, 1);
		guess_retry(tid);
		return 0;
	}
#endif
	st = wp_begin(st);
	if (!st)
		return 0;
	fill_fault(&st->ev, &x, id, direct);
	st->ev.type = PFT_EV_WP;
	st->inode = inode;
	st->vmf = vmf;
	read_times(&st->ev, inode, 0, c, direct);
	return 0;
}

/* The inode behind a fault's vm_fault, for a return with the arguments
 * (fexit): three loads, where the inode kept in the state is only a number
 * to the verifier and would take a bpf_probe_read_kernel().  No NULL
 * checks: a guarded load through NULL reads 0, and a literal 0 would be no
 * pointer the verifier lets the next load use. */
static __always_inline u64 fault_inode(u64 vmf)
{
	u64 vma = 0, file = 0, inode = 0;

	LOAD64(vma, vmf, VMF_VMA);
	LOAD64(file, vma, VMA_VM_FILE);
	LOAD64(inode, file, FILE_F_INODE);
	return inode;
}

/* vmf: the fault's struct vm_fault when direct (fexit), else unused. */
static __always_inline int wp_exit(u32 ret, u64 vmf, int direct)
{
	struct pft_config *c = cfg();
	struct wp_state *st = wp_active();
	if (!st || !c) {
#ifdef WP_GUESS_RETRY
		retry_guess_check((u32)bpf_get_current_pid_tgid(), ret);
#endif
		return 0;
	}
#ifdef PFT_NO_STREAM
	/* VM_FAULT_RETRY (the per-VMA lock's first attempt at a DAX write
	 * fault, 6.4+) is PFT_C_RETRY, which top counts nowhere: the fault is
	 * the retry that follows. */
	if (ret & PFT_VM_FAULT_RETRY) {
		wp_end(st);
		return 0;
	}
#endif
	read_times(&st->ev, direct ? fault_inode(vmf) : st->inode, 1, c, direct);
	st->ev.ret = ret;
	st->ev.duration_ns = bpf_ktime_get_ns() - st->ev.ts_ns;
	emit(&st->ev);
	wp_end(st);
	return 0;
}

/* A hook's kprobe programs and its fentry shims are each a whole copy of
 * the inlined body: only the kind the plan attaches is compiled (tracer.py's
 * cflags), which took a third off a compile under QEMU TCG. */
#ifndef PFT_FENTRY_DO_WP_PAGE
int wp_entry(struct pt_regs *ctx) { return wp_enter(PT_REGS_PARM1(ctx), 0); }
int wp_return(struct pt_regs *ctx) { return wp_exit(PT_REGS_RC(ctx), 0, 0); }
#else
/* fexit has the arguments too, but the entry's timestamps still need the
 * per-thread state: the shims stay as thin as the kprobes'.  Their vm_fault
 * is BTF-typed: the fields are loaded directly (kread.h). */
KFUNC_PROBE(do_wp_page, u64 vmf) { return wp_enter(vmf, 1); }
KRETFUNC_PROBE(do_wp_page, u64 vmf, u64 ret) { return wp_exit(ret, vmf, 1); }
#endif

/* Only where wp_pfn_shared is a symbol (not on Debian 6.1, 6.12 or 6.18,
 * where it is inlined): mark the running do_wp_page as taking the pfn path. */
static __always_inline int wp_pfn_mark(void)
{
	struct wp_state *wp = wp_active();
	if (wp)
		wp->ev.flags |= PFT_F_PFN_PATH;
	return 0;
}

#ifndef PFT_FENTRY_WP_PFN_SHARED
int wp_pfn_entry(struct pt_regs *ctx) { return wp_pfn_mark(); }
#else
KFUNC_PROBE(wp_pfn_shared) { return wp_pfn_mark(); }
#endif

/*
 * A vm_ops handler's entry: ip is the handler's address, vmf its struct
 * vm_fault, arg its second argument (->huge_fault's size; 0 or unused for
 * the others), sp the stack pointer where the mechanism has one (a kprobe;
 * 0 on a trampoline, whose return program always runs).
 */
static __always_inline int handler_enter(u64 ip, u64 vmf, u64 arg, u64 sp, int direct)
{
	struct pft_config *c = cfg();
	u64 now = bpf_ktime_get_ns();
	struct wp_state *wp = wp_active();
	/* Called by the traced do_wp_page of this very fault (->pfn_mkwrite,
	 * ->page_mkwrite, and what those call in turn)?  Same vm_fault, and
	 * that do_wp_page began less than a second ago: vm_fault lives on the
	 * stack of handle_mm_fault, so a do_wp_page whose return probe never ran
	 * leaves a state with the very address the task's next fault gets. */
	int in_wp = wp && wp->vmf == vmf && now - wp->ev.ts_ns < ONE_SECOND_NS;

	/* The handler's own event would be PFT_C_IN_WP: the do_wp_page is the
	 * fault that is judged, and all the handler adds is that it ran (top
	 * counts it nowhere; a report counts it per file).  So it keeps no
	 * state and sends no event: the do_wp_page's event says it ran
	 * (PFT_F_HANDLER_FOLDED) and which (the outermost: ext4_dax_fault,
	 * not the ext4_dax_huge_fault it calls).  The return finds no state,
	 * unless one was left by a handler whose return probe never ran: no
	 * handler's call can enclose a do_wp_page, so that one is counted and
	 * dropped here, not finished by this handler's return. */
	if (in_wp) {
		struct handler_state *stale = h_active();
		if (stale) {
			if (stale->traced)
				count_blind(PFT_BLIND_HANDLER_RETURN);
			h_end(stale);
		}
#ifndef PFT_NO_STREAM
		if (!(wp->ev.flags & PFT_F_HANDLER_FOLDED)) {
			wp->ev.flags |= PFT_F_HANDLER_FOLDED;
			wp->ev.handler = ip;
		}
#endif
		wp->ev.flags |= PFT_F_HANDLER_RAN;
		return 0;
	}
	struct handler_state *st = h_state(0);
	if (st && st->active) {
		/* ext4_dax_fault calls ext4_dax_huge_fault (6.12: a tail call,
		 * at the same stack pointer): report the outermost handler
		 * only, count the nesting depth.  A nested call gets the same
		 * vm_fault, no higher in the stack, while the outer one runs
		 * (a second at most); anything else is a new fault after a
		 * return probe that never ran.  The stacks are compared only
		 * where both calls have a stack pointer: a trampoline passes
		 * none, and a late handler on a kprobe may nest in a planned
		 * one on a trampoline. */
		if (vmf == st->vmf && (!sp || !st->sp || sp <= st->sp) &&
		    now - st->start < ONE_SECOND_NS) {
			st->depth += 1;
			return 0;
		}
		if (st->traced)
			count_blind(PFT_BLIND_HANDLER_RETURN);
		h_end(st);
	}
	u64 id = bpf_get_current_pid_tgid();
	if (!c || !task_wanted(c, id))
		return 0;
	st = h_begin(st);
	if (!st)
		return 0;
	st->sp = sp;
	st->vmf = vmf;
	st->start = now;
	struct pft_event *ev = &st->ev;
	u64 inode = 0;

	struct fault_facts x = {};
	if (read_fault_vma(&x, vmf, direct))
		inode = fault_wanted(&x, c, direct);
	if (!inode)
		return 0;	/* the state stays, untraced: nested calls stay quiet */
	fill_fault(ev, &x, id, direct);
	if (wp) {	/* not the do_wp_page's own vm_fault: still inside it */
		ev->flags |= PFT_F_IN_WP | (wp->ev.flags & PFT_F_PFN_PATH);
		wp->ev.flags |= PFT_F_HANDLER_RAN;
	}
	st->traced = 1;
	inflight_add(1);
	st->inode = inode;
	ev->type = PFT_EV_HANDLER;
	ev->handler = ip;
	ev->arg = arg;	/* huge_fault's size; unused by the others */

	/* Which vm_ops slots this handler fills: x has them all (read_ops). */
	if (ev->handler == x.fault)
		ev->roles |= PFT_ROLE_FAULT;
	if (ev->handler == x.huge_fault)
		ev->roles |= PFT_ROLE_HUGE_FAULT;
	if (ev->handler == ev->ops_page_mkwrite)
		ev->roles |= PFT_ROLE_PAGE_MKWRITE;
	if (ev->handler == ev->ops_pfn_mkwrite)
		ev->roles |= PFT_ROLE_PFN_MKWRITE;
	read_times(ev, inode, 0, c, direct);
	return 0;
}

/* vmf: the handler's struct vm_fault when direct (fexit), else unused. */
static __always_inline int handler_exit(u64 ret, u64 vmf, int direct)
{
	struct pft_config *c = cfg();
	struct handler_state *st = h_active();
	if (!st || !c)
		return 0;
	if (st->depth) {
		st->depth -= 1;
		return 0;
	}
	if (st->traced) {
		struct pft_event *ev = &st->ev;
		if (direct) {
			read_times(ev, fault_inode(vmf), 1, c, 1);
			LOAD64(ev->address, vmf, VMF_ADDRESS);	/* set by the handler */
		} else {
			read_times(ev, st->inode, 1, c, 0);
			READ(ev->address, st->vmf, VMF_ADDRESS);
		}
		ev->ret = ret;
		ev->duration_ns = bpf_ktime_get_ns() - ev->ts_ns;
		emit(ev);
	}
	h_end(st);
	return 0;
}

#ifdef PFT_KPROBE_HANDLERS
int handler_entry(struct pt_regs *ctx)
{
	return handler_enter(bpf_get_func_ip(ctx), PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx),
			     PT_REGS_SP(ctx), 0);
}
int handler_return(struct pt_regs *ctx) { return handler_exit(PT_REGS_RC(ctx), 0, 0); }
#endif
#ifdef PFT_FENTRY_HANDLERS
/*
 * The handlers on BPF trampolines.  They live in modules (ext4.ko, xfs.ko),
 * where bcc 0.26 attaches no fentry, so these are plain functions that
 * tracer.py loads itself, once per handler and kind, each against its
 * function's BTF id (pfntrace/kernel/trampoline.py).  Every handler takes
 * its struct vm_fault first; bpf_get_func_arg() reads a second argument
 * only where the function has one (->huge_fault's size).
 */

/* top: a call verdict.h's pft_handler_uncounted() says is no write fault
 * of its own (every handler call inside a DAX do_wp_page) is counted
 * nowhere, so its fentry and fexit stop at one load, before the two
 * per-thread lookups that would only mark the do_wp_page.  Entry and exit
 * see the same flags and ARG (the handler's second argument), so both stop
 * or neither does. */
static __always_inline int handler_uncounted(u64 *ctx, u64 arg)
{
#ifdef PFT_AGGREGATE
	u32 flags = 0;
	LOAD32(flags, ctx[0], VMF_FLAGS);
	return pft_handler_uncounted(flags, (u32)arg, AGG_PMD_ARG, AGG_PUD_ARG);
#else
	return 0;	/* record: the do_wp_page's event names the handler it called */
#endif
}

int handler_fentry(u64 *ctx)
{
	u64 arg = 0;
	bpf_get_func_arg(ctx, 1, &arg);
	if (handler_uncounted(ctx, arg))
		return 0;
	return handler_enter(bpf_get_func_ip(ctx), ctx[0], arg, 0, 1);
}
int handler_fexit(u64 *ctx)
{
	u64 ret = 0;
#ifdef PFT_AGGREGATE
	u64 arg = 0;	/* record's exit has no use for it: not read there */
	bpf_get_func_arg(ctx, 1, &arg);
	if (handler_uncounted(ctx, arg))
		return 0;
#endif
	bpf_get_func_ret(ctx, &ret);
	return handler_exit(ret, ctx[0], 1);
}
#endif

static __always_inline int ftu_count(void)
{
	struct handler_state *h = h_active();
	if (h)
		h->ev.ftu_calls += 1;
	struct wp_state *wp = wp_active();
	if (wp)
		wp->ev.ftu_calls += 1;
	return 0;
}

#ifndef PFT_FENTRY_FILE_UPDATE_TIME
int ftu_entry(struct pt_regs *ctx) { return ftu_count(); }
#else
KFUNC_PROBE(file_update_time) { return ftu_count(); }
#endif

/*
 * What a process was shown of a file: vfs_getattr_nosec(path, stat, ...),
 * which every stat(2), fstat(2), statx(2) reaches.  Any process, not only
 * the followed ones (a backup tool is not the writer), pfntrace excepted;
 * only the files a fault would be traced for (DAX unless --all-files, the
 * --mount devices, the inode filter).
 */
static __always_inline int getattr_enter(u64 path, u64 stat, int direct)
{
	struct pft_config *c = cfg();
	u64 id = bpf_get_current_pid_tgid();
	u32 dev = 0;
	u64 dentry = 0, inode = 0, sb = 0, ino = 0;
	u32 i_flags = 0;
	SPAN_BUF(in, INODE_LO, INODE_HI);

	struct getattr_state *st = ga_state(0);
	if (st && st->active) {
		count_blind(PFT_BLIND_GETATTR_RETURN);
		ga_end(st);
	}
	if (!c || (id >> 32) == c->self_tgid)
		return 0;
	if (direct) {
		LOAD64(dentry, path, PATH_DENTRY);
		LOAD64(inode, dentry, DENTRY_D_INODE);	/* 0 through a NULL dentry */
		if (!inode)
			return 0;
		LOAD32(i_flags, inode, INODE_I_FLAGS);
		LOAD64(sb, inode, INODE_I_SB);
		LOAD64(ino, inode, INODE_I_INO);
	} else {
		READ(dentry, path, PATH_DENTRY);
		if (!dentry)
			return 0;
		READ(inode, dentry, DENTRY_D_INODE);
		if (!inode)
			return 0;
		SPAN_READ(in, inode, INODE_LO, INODE_HI);
		SPAN_GET(i_flags, in, INODE_LO, INODE_I_FLAGS);
		SPAN_GET(sb, in, INODE_LO, INODE_I_SB);
		SPAN_GET(ino, in, INODE_LO, INODE_I_INO);
	}
	if (!c->all_files && !(i_flags & S_DAX))
		return 0;
	READ32(direct, dev, sb, SB_S_DEV);
	if (!dev_wanted(c, dev))
		return 0;
	if (c->ino && c->ino != ino)
		return 0;
	st = ga_begin(st);
	if (!st)
		return 0;
	st->stat = stat;
	st->ev.type = PFT_EV_GETATTR;
	st->ev.ino = ino;
	st->ev.dev = dev;
	st->ev.flags = PFT_F_FILE | ((i_flags & S_DAX) ? PFT_F_INODE_DAX : 0);
	st->ev.ts_ns = bpf_ktime_get_ns();
	return 0;
}

/* stat: the struct kstat when direct (fexit; the state's copy is a number
 * to the verifier). */
static __always_inline int getattr_exit(u32 ret, u64 stat, int direct)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct getattr_state *st = ga_active();
	if (!st)
		return 0;
	struct pft_event *ev = &st->ev;
	ev->ret = ret;
	if (ret) {
		ga_end(st);		/* an error: nothing was shown */
		return 0;
	}
	SPAN_BUF(k, KSTAT_LO, KSTAT_HI);
	if (direct) {
		LOAD64(ev->mtime_sec[0], stat, KSTAT_MTIME_SEC);
		LOAD32(ev->mtime_nsec[0], stat, KSTAT_MTIME_NSEC);
		LOAD64(ev->ctime_sec[0], stat, KSTAT_CTIME_SEC);
		LOAD32(ev->ctime_nsec[0], stat, KSTAT_CTIME_NSEC);
	} else {
		SPAN_READ(k, st->stat, KSTAT_LO, KSTAT_HI);
		SPAN_GET(ev->mtime_sec[0], k, KSTAT_LO, KSTAT_MTIME_SEC);
		SPAN_GET(ev->mtime_nsec[0], k, KSTAT_LO, KSTAT_MTIME_NSEC);
		SPAN_GET(ev->ctime_sec[0], k, KSTAT_LO, KSTAT_CTIME_SEC);
		SPAN_GET(ev->ctime_nsec[0], k, KSTAT_LO, KSTAT_CTIME_NSEC);
	}
	ev->duration_ns = bpf_ktime_get_ns() - ev->ts_ns;
	ev->pid = id >> 32;
	ev->tid = tid;
	ev->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
#ifdef PFT_AGGREGATE
	struct pft_file_key key = {};
	key.ino = ev->ino;
	key.dev = ev->dev;
	observed.update(&key, ev);
#endif
	emit(ev);
	ga_end(st);
	return 0;
}

#ifndef PFT_FENTRY_VFS_GETATTR_NOSEC
int getattr_entry(struct pt_regs *ctx)
{
	return getattr_enter(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
}
int getattr_return(struct pt_regs *ctx) { return getattr_exit(PT_REGS_RC(ctx), 0, 0); }
#else
/* int vfs_getattr_nosec(const struct path *, struct kstat *, u32, unsigned int) */
KFUNC_PROBE(vfs_getattr_nosec, u64 path, u64 stat) { return getattr_enter(path, stat, 1); }
KRETFUNC_PROBE(vfs_getattr_nosec, u64 path, u64 stat, u32 mask, u32 qflags, int ret)
{
	return getattr_exit(ret, stat, 1);
}
#endif

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	u32 child = args->child_pid;
	u8 one = 1;
	if (traced.lookup(&parent))
		traced.update(&child, &one);
	return 0;
}

/* fs_dax tracepoints: the kernel's own account of DAX faults.  Each is
 * counted for its file (record; pfntrace.h, struct pft_file_counts) or,
 * with --every-event (no PFT_COUNT_IN_KERNEL), sent as an event. */
/* id: bpf_get_current_pid_tgid(), read once per tracepoint. */
static __always_inline int tp_wanted(u64 id, u32 dev, u64 ino)
{
	struct pft_config *c = cfg();
	if (!c || !task_wanted(c, id) || !dev_wanted(c, dev))
		return 0;
	return !c->ino || c->ino == ino;
}

#ifdef PFT_COUNT_IN_KERNEL
static __always_inline struct pft_file_counts *tp_counts(u32 dev, u64 ino)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!tp_wanted(id, dev, ino))
		return 0;
	return counts_of(dev, ino, id);
}

/* dax_pte_fault_done, dax_pmd_fault_done: flags is their vm_fault flags. */
static __always_inline void count_dax_fault(u32 dev, u64 ino, u32 flags, int pmd)
{
	struct pft_file_counts *n = tp_counts(dev, ino);
	if (!n)
		return;
	if (pmd)
		COUNT_ADD(n, dax_pmd_faults, 1);
	else
		COUNT_ADD(n, dax_pte_faults, 1);
	if (flags & PFT_FAULT_FLAG_WRITE)
		COUNT_ADD(n, dax_write_faults, 1);
}
#endif

/* The per-CPU scratch event of a tracepoint (or kprobe: both run with
 * preemption off), filled with who and when; 0 when unavailable. */
static __always_inline struct pft_event *scratch_event(u32 type, u32 dev, u64 ino, u64 id)
{
	u32 zero = 0;
	struct pft_event *ev = blank.lookup(&zero);
	if (!ev)
		return 0;
	/* The per-CPU seed is scratch space here: reset what we set. */
	__builtin_memset(ev, 0, sizeof(*ev));
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

static __always_inline struct pft_event *tp_event(u32 type, u32 dev, u64 ino)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!tp_wanted(id, dev, ino))
		return 0;
	return scratch_event(type, dev, ino, id);
}

static __always_inline void tp_done(struct pft_event *ev)
{
	emit(ev);
	__builtin_memset(ev, 0, sizeof(*ev));
}

#ifndef PFT_NO_STREAM
/* Pages [pgoff, pgoff + pages) of a file read-only again: a PFT_EV_CLOSE
 * when a traced write fault made the file writable, whichever task this is
 * (the windows are the file's, not the task's). */
static __always_inline void send_close(u32 dev, u64 ino, u64 pgoff, u64 pages, u64 address,
				       u32 flags)
{
	struct pft_file_key key = {.ino = ino, .dev = dev};
	if (!cfg() || !written.lookup(&key))
		return;
	struct pft_event *ev = scratch_event(PFT_EV_CLOSE, dev, ino, bpf_get_current_pid_tgid());
	if (!ev)
		return;
	ev->pgoff = pgoff;
	ev->arg = pages;
	ev->address = address;
	ev->flags |= flags;
	tp_done(ev);
}

/*
 * unmap_page_range(tlb, vma, addr, end, details): [addr, end) of one vma
 * unmapped, its PTEs gone: munmap, exit and exec (exit_mmap),
 * madvise(MADV_DONTNEED), truncate (unmap_mapping_range, every mapping of
 * the file).  A symbol on 6.1, 6.12 and 7.3 (mm/oom_kill.c calls it too).
 * The unmapping task's mm is NULL during its own exit (exit_mm clears it
 * before the last mmput): that is its own address space, not a foreign one.
 */
static __always_inline int unmap_range(u64 vma, u64 start, u64 end)
{
	u64 file = 0, vm_flags = 0, inode = 0, sb = 0, ino = 0, vm_start = 0, vm_pgoff = 0;
	u64 mm = 0, own = 0;
	u32 dev = 0;
	if (!cfg())
		return 0;
	READ(file, vma, VMA_VM_FILE);
	if (!file)
		return 0;
	READ(vm_flags, vma, VMA_VM_FLAGS);
	if (!(vm_flags & PFT_VM_SHARED))
		return 0;		/* a private mapping's writes are copies */
	READ(inode, file, FILE_F_INODE);
	READ(sb, inode, INODE_I_SB);
	READ(dev, sb, SB_S_DEV);
	READ(ino, inode, INODE_I_INO);
	struct pft_file_key key = {.ino = ino, .dev = dev};
	if (!written.lookup(&key))
		return 0;
	READ(vm_start, vma, VMA_VM_START);
	READ(vm_pgoff, vma, VMA_VM_PGOFF);
	READ(mm, vma, VMA_VM_MM);
	READ(own, bpf_get_current_task(), TASK_MM);
	u32 flags = PFT_F_CLOSE_UNMAP | (own && own != mm ? PFT_F_CLOSE_FOREIGN : 0);
	send_close(dev, ino, vm_pgoff + ((start - vm_start) >> 12), (end - start) >> 12, start,
		   flags);
	return 0;
}

int unmap_entry(struct pt_regs *ctx)
{
	return unmap_range(PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx), PT_REGS_PARM4(ctx));
}
#endif /* PFT_NO_STREAM */

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
#ifdef PFT_COUNT_IN_KERNEL
	count_dax_fault(args->dev, args->ino, args->flags, 0);
#else
	struct pft_event *ev = tp_event(PFT_EV_DAX_FAULT, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	tp_done(ev);
#endif
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_PMD_FAULT_DONE
TRACEPOINT_PROBE(fs_dax, dax_pmd_fault_done)
{
#ifdef PFT_COUNT_IN_KERNEL
	count_dax_fault(args->dev, args->ino, args->flags, 1);
#else
	struct pft_event *ev = tp_event(PFT_EV_DAX_FAULT, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	ev->flags |= PFT_F_PMD;
	tp_done(ev);
#endif
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_INSERT_PFN_MKWRITE
TRACEPOINT_PROBE(fs_dax, dax_insert_pfn_mkwrite)
{
#ifdef PFT_COUNT_IN_KERNEL
	struct pft_file_counts *n = tp_counts(args->dev, args->ino);
	if (n)
		COUNT_ADD(n, map_sync, 1);
#else
	struct pft_event *ev = tp_event(PFT_EV_DAX_MKWRITE, args->dev, args->ino);
	if (!ev)
		return 0;
	COPY_FAULT_FIELDS(ev, args);
	tp_done(ev);
#endif
	return 0;
}
#endif

#ifdef HAVE_TP_DAX_WRITEBACK_ONE
TRACEPOINT_PROBE(fs_dax, dax_writeback_one)
{
#ifdef PFT_COUNT_IN_KERNEL
	struct pft_file_counts *n = tp_counts(args->dev, args->ino);
	if (n) {
		COUNT_ADD(n, reprotects, 1);
		COUNT_ADD(n, reprotect_pages, args->pglen);
	}
#else
	struct pft_event *ev = tp_event(PFT_EV_DAX_WRITEBACK, args->dev, args->ino);
	if (!ev)
		return 0;
	ev->pgoff = args->pgoff;
	ev->arg = args->pglen;
	tp_done(ev);
#endif
#ifndef PFT_NO_STREAM
	send_close(args->dev, args->ino, args->pgoff, args->pglen, 0, 0);
#endif
	return 0;
}
#endif
