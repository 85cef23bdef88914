// SPDX-License-Identifier: GPL-2.0
/*
 * pftbug: put real bug classes on the real write-protect fault path of ONE
 * file on a DAX mount, so pfntrace's lab can show it catches them.
 *
 *   insmod pftbug.ko path=/mnt/dax/f mode=MODE
 *
 * A kprobe on handle_mm_fault (exported; its first argument is the vma)
 * gives every vma that maps the target file a module-owned copy of the
 * filesystem's vm_operations_struct, at the first fault of that vma.  The
 * workloads map the file and read it before they write, so the swap happens
 * at the read fault, before any write-protect fault.  MODE chooses the copy:
 *
 *   control           unchanged copy: proves the swap alone changes nothing
 *   no_pfn_mkwrite    .pfn_mkwrite = NULL: the pre-4.1 kernel, wp_pfn_shared
 *                     just makes the PTE writable and nobody is told
 *   noop_pfn_mkwrite  .pfn_mkwrite returns 0 and updates nothing:
 *                     wp_pfn_shared calls finish_mkwrite_fault, the PTE
 *                     becomes writable
 *   stale_update      .pfn_mkwrite calls the filesystem's own handler
 *                     (file_update_time stamps inside it), then puts the
 *                     mtime and ctime saved before the call back: an update
 *                     attempted, but stale when the fault completes
 *
 * Read-only counters in /sys/module/pftbug/parameters/:
 *   swaps        vmas of the target file given the copy
 *   faults       handle_mm_fault calls on the target file's vmas
 *   write_faults those with FAULT_FLAG_WRITE (after a read, each is a
 *                write-protect fault; 6.12 ext4 retries each once)
 *   calls        calls of the module's ->pfn_mkwrite (noop, stale_update)
 *   stamped      stale_update calls in which the filesystem's handler moved
 *                mtime or ctime (the update the module then took back)
 *   foreign      vmas of the file with vm_ops other than the first seen
 *   mapped       vmas that carry the copy now (walks the file's i_mmap)
 *   orig_pfn_mkwrite  the filesystem's handler, by symbol name
 *   missed       kprobe misses
 *
 * Unloading: unmap first.  The copy lives in module memory, so a vma that
 * still points at it after rmmod would call freed code.  As a safety net the
 * exit puts the original vm_ops back into every vma of the file that still
 * has the copy (and says so in the kernel log), but a fault running inside
 * the module's handler at that moment is not waited for.
 */

/* Every line names the module: pftbug or one of its copies (Kbuild). */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/kprobes.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/namei.h>
#include <linux/path.h>
#include <linux/rbtree.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/version.h>

#ifndef CONFIG_X86_64
#error "pftbug reads handle_mm_fault's arguments as on x86-64"
#endif

enum pftbug_mode {
	PFTBUG_CONTROL,
	PFTBUG_NO_PFN_MKWRITE,
	PFTBUG_NOOP_PFN_MKWRITE,
	PFTBUG_STALE_UPDATE,
};

static const char *const mode_names[] = {
	[PFTBUG_CONTROL] = "control",
	[PFTBUG_NO_PFN_MKWRITE] = "no_pfn_mkwrite",
	[PFTBUG_NOOP_PFN_MKWRITE] = "noop_pfn_mkwrite",
	[PFTBUG_STALE_UPDATE] = "stale_update",
};

static char *path;
module_param(path, charp, 0444);
MODULE_PARM_DESC(path, "the one file whose mappings get the buggy vm_ops (must exist)");

static char *mode = "control";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "control | no_pfn_mkwrite | noop_pfn_mkwrite | stale_update");

static atomic_t swaps, faults, write_faults, calls, stamped, foreign;

static int counter_get(char *buffer, const struct kernel_param *kp)
{
	return scnprintf(buffer, PAGE_SIZE, "%d\n", atomic_read((atomic_t *)kp->arg));
}

static int read_only_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static const struct kernel_param_ops counter_ops = {
	.set = read_only_set,
	.get = counter_get,
};

module_param_cb(swaps, &counter_ops, &swaps, 0444);
module_param_cb(faults, &counter_ops, &faults, 0444);
module_param_cb(write_faults, &counter_ops, &write_faults, 0444);
module_param_cb(calls, &counter_ops, &calls, 0444);
module_param_cb(stamped, &counter_ops, &stamped, 0444);
module_param_cb(foreign, &counter_ops, &foreign, 0444);

static enum pftbug_mode bug;
static struct path target_path;
static struct inode *target;	/* pinned by target_path */
static DEFINE_RAW_SPINLOCK(ops_lock);
static const struct vm_operations_struct *orig_ops;	/* first seen, kept */
static struct vm_operations_struct bug_ops;		/* the copy vmas get */

/* --- inode timestamps, per kernel version ------------------------------- */

static struct timespec64 get_mtime(const struct inode *inode)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	return inode_get_mtime(inode);
#else
	return inode->i_mtime;
#endif
}

static void set_mtime(struct inode *inode, struct timespec64 ts)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	inode_set_mtime_to_ts(inode, ts);
#else
	inode->i_mtime = ts;
#endif
}

static struct timespec64 get_ctime(const struct inode *inode)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	return inode_get_ctime(inode);
#else
	return inode->i_ctime;
#endif
}

static void set_ctime(struct inode *inode, struct timespec64 ts)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	inode_set_ctime_to_ts(inode, ts);
#else
	inode->i_ctime = ts;
#endif
}

static bool ts_equal(struct timespec64 a, struct timespec64 b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* --- the replacement ->pfn_mkwrite handlers ----------------------------- */

/* Says yes and tells nobody. */
static vm_fault_t noop_pfn_mkwrite(struct vm_fault *vmf)
{
	atomic_inc(&calls);
	return 0;
}

/* Lets the filesystem stamp the file, then takes the stamp back. */
static vm_fault_t stale_pfn_mkwrite(struct vm_fault *vmf)
{
	struct inode *inode = file_inode(vmf->vma->vm_file);
	struct timespec64 mtime = get_mtime(inode), ctime = get_ctime(inode);
	vm_fault_t ret = 0;

	atomic_inc(&calls);
	if (orig_ops->pfn_mkwrite)
		ret = orig_ops->pfn_mkwrite(vmf);
	if (!ts_equal(mtime, get_mtime(inode)) || !ts_equal(ctime, get_ctime(inode)))
		atomic_inc(&stamped);
	set_mtime(inode, mtime);
	set_ctime(inode, ctime);
	return ret;
}

/* --- the swap, at the first fault of each vma of the target file -------- */

static int handle_mm_fault_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct vm_area_struct *vma = (struct vm_area_struct *)regs->di;
	unsigned int flags = (unsigned int)regs->dx;
	const struct vm_operations_struct *ops;
	unsigned long irqflags;

	if (!vma || !vma->vm_file || file_inode(vma->vm_file) != target)
		return 0;
	atomic_inc(&faults);
	if (flags & FAULT_FLAG_WRITE)
		atomic_inc(&write_faults);
	ops = READ_ONCE(vma->vm_ops);
	if (ops == &bug_ops || !ops)
		return 0;

	raw_spin_lock_irqsave(&ops_lock, irqflags);
	if (!orig_ops) {
		bug_ops = *ops;
		switch (bug) {
		case PFTBUG_CONTROL:
			break;
		case PFTBUG_NO_PFN_MKWRITE:
			bug_ops.pfn_mkwrite = NULL;
			break;
		case PFTBUG_NOOP_PFN_MKWRITE:
			bug_ops.pfn_mkwrite = noop_pfn_mkwrite;
			break;
		case PFTBUG_STALE_UPDATE:
			bug_ops.pfn_mkwrite = stale_pfn_mkwrite;
			break;
		}
		/* bug_ops is complete before any vma can point at it */
		smp_store_release(&orig_ops, ops);
	}
	if (ops == orig_ops) {
		WRITE_ONCE(vma->vm_ops, &bug_ops);
		if (atomic_inc_return(&swaps) == 1)
			pr_info("%s: vm_ops %ps swapped for the %s copy (->pfn_mkwrite was %ps)\n",
				path, ops, mode_names[bug], ops->pfn_mkwrite);
	} else {
		atomic_inc(&foreign);
	}
	raw_spin_unlock_irqrestore(&ops_lock, irqflags);
	return 0;
}

static struct kprobe kp = {
	.symbol_name = "handle_mm_fault",
	.pre_handler = handle_mm_fault_pre,
};

/* --- vmas of the target file that carry the copy ------------------------ */

/*
 * The file's vmas hang in mapping->i_mmap, an interval tree threaded on
 * vma->shared.rb; its iterators are not exported, but an in-order walk of
 * the rbtree visits every node.  With restore, give each the original back.
 */
static int walk_copies(bool restore)
{
	struct address_space *mapping = target->i_mapping;
	struct rb_node *node;
	int n = 0;

	i_mmap_lock_read(mapping);
	for (node = rb_first(&mapping->i_mmap.rb_root); node; node = rb_next(node)) {
		struct vm_area_struct *vma = rb_entry(node, struct vm_area_struct, shared.rb);

		if (READ_ONCE(vma->vm_ops) != &bug_ops)
			continue;
		n++;
		if (restore)
			WRITE_ONCE(vma->vm_ops, orig_ops);
	}
	i_mmap_unlock_read(mapping);
	return n;
}

static int mapped_get(char *buffer, const struct kernel_param *kp)
{
	return scnprintf(buffer, PAGE_SIZE, "%d\n", target ? walk_copies(false) : 0);
}

static const struct kernel_param_ops mapped_ops = {
	.set = read_only_set,
	.get = mapped_get,
};
module_param_cb(mapped, &mapped_ops, NULL, 0444);

static int orig_get(char *buffer, const struct kernel_param *kp)
{
	const struct vm_operations_struct *ops = smp_load_acquire(&orig_ops);

	if (!ops)
		return scnprintf(buffer, PAGE_SIZE, "\n");
	return scnprintf(buffer, PAGE_SIZE, "%ps\n", ops->pfn_mkwrite);
}

static const struct kernel_param_ops orig_ops_ops = {
	.set = read_only_set,
	.get = orig_get,
};
module_param_cb(orig_pfn_mkwrite, &orig_ops_ops, NULL, 0444);

static int missed_get(char *buffer, const struct kernel_param *p)
{
	return scnprintf(buffer, PAGE_SIZE, "%lu\n", kp.nmissed);
}

static const struct kernel_param_ops missed_ops = {
	.set = read_only_set,
	.get = missed_get,
};
module_param_cb(missed, &missed_ops, NULL, 0444);

/* --- load and unload ---------------------------------------------------- */

static int __init pftbug_init(void)
{
	int err, i;

	for (i = 0; i < ARRAY_SIZE(mode_names); i++)
		if (mode && !strcmp(mode, mode_names[i]))
			break;
	if (i == ARRAY_SIZE(mode_names)) {
		pr_err("unknown mode=%s (control, no_pfn_mkwrite, noop_pfn_mkwrite, stale_update)\n",
		       mode ? mode : "");
		return -EINVAL;
	}
	bug = i;
	if (!path || !*path) {
		pr_err("path= is required: the file whose mappings get the %s vm_ops\n",
		       mode_names[bug]);
		return -EINVAL;
	}
	err = kern_path(path, LOOKUP_FOLLOW, &target_path);
	if (err) {
		pr_err("path=%s: cannot resolve it (error %d); create the file first\n",
		       path, err);
		return err;
	}
	target = d_inode(target_path.dentry);
	if (!S_ISREG(target->i_mode) || !IS_DAX(target)) {
		pr_err("path=%s: not a regular file on a DAX mount\n", path);
		err = -EINVAL;
		goto out_put;
	}
	err = register_kprobe(&kp);
	if (err) {
		pr_err("cannot put a kprobe on handle_mm_fault (error %d)\n", err);
		goto out_put;
	}
	pr_info("mode=%s on %s (dev %u:%u ino %llu)\n", mode_names[bug], path,
		MAJOR(target->i_sb->s_dev), MINOR(target->i_sb->s_dev),
		(unsigned long long)target->i_ino);
	return 0;

out_put:
	path_put(&target_path);
	target = NULL;
	return err;
}

static void __exit pftbug_exit(void)
{
	int left;

	unregister_kprobe(&kp);
	left = orig_ops ? walk_copies(true) : 0;
	if (left)
		pr_warn("%s is still mapped: gave %d vma(s) their original vm_ops back\n",
			path, left);
	pr_info("unloaded (mode=%s swaps=%d faults=%d write_faults=%d calls=%d stamped=%d)\n",
		mode_names[bug], atomic_read(&swaps), atomic_read(&faults),
		atomic_read(&write_faults), atomic_read(&calls), atomic_read(&stamped));
	path_put(&target_path);
	target = NULL;
}

module_init(pftbug_init);
module_exit(pftbug_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pfntrace lab: real pfn_mkwrite bugs on one DAX file's fault path");
