#!/bin/sh
# Stage 2 of the lab guest, PID 1 in the host's own root (read-only 9p with a
# tmpfs overlay): mount what a Debian system expects, make emulated pmem, put
# a DAX filesystem on it, run the job's command, hand its exit code back
# through the job share, power off.  Parameters arrive as kernel arguments:
# pft_job (the job folder on the host, shared read-write at the same path).
# The plumbing (mounts, sync, power-off) uses the lab's own busybox, which
# stage 1 left in /run/pft; pfntrace's Python runs with the interpreter the
# host side runs with ($PFT_PYTHON, from job.env), never a guess.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BB=/run/pft/busybox
uptime_s() { cut -d' ' -f1 /proc/uptime; }

$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
# /tmp stays the host's, seen through the overlay (writes stay in the
# guest): a checkout or a command under /tmp must be found at its path.
# /run is already a tmpfs (stage 1's).
mkdir -p /dev/pts /dev/shm
$BB mount -t devpts devpts /dev/pts
$BB mount -t tmpfs tmpfs /dev/shm
# bcc needs tracefs (kprobe_events); its detach path uses it too.
$BB mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
$BB mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p "$pft_job"
$BB mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 pftjob "$pft_job"
# The loopback (the kernel leaves it down): a server started in the guest,
# `pfntrace exporter` or Prometheus, is then reachable at 127.0.0.1 there.
$BB ip link set lo up

halt() {
	# Never returns.  Power off; if that fails, sysrq 'o'; if that fails,
	# PID 1 exits and the kernel panics (panic=-1): QEMU (-no-reboot) stops.
	$BB sync
	$BB poweroff -f
	echo o > /proc/sysrq-trigger
	$BB sleep 5
	exit 1
}

finish() {
	# $1: exit code, $2: status line for the host (empty when the command ran).
	# Never returns: nothing after a failed step runs.
	[ -n "$2" ] && echo "pfntrace-lab: $2" > /dev/console
	[ -n "$2" ] && echo "$2" > "$pft_job/status"
	uptime_s > "$pft_job/t_end"
	echo "$1" > "$pft_job/exit"
	halt
}
uptime_s > "$pft_job/t_userspace"

. "$pft_job/job.env" || finish 69 "cannot read $pft_job/job.env"
[ -x "$PFT_PYTHON" ] || finish 69 "pfntrace's interpreter $PFT_PYTHON is not in the guest"

if [ -n "$PFT_RESULTS" ]; then
	mkdir -p "$PFT_RESULTS"
	$BB mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 pftresults "$PFT_RESULTS" \
		|| finish 70 "cannot mount the results folder $PFT_RESULTS"
fi
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null

# A kernel fetched into the lab's cache (not installed on the host): its
# modules, headers and kbuild tools appear where modprobe, bcc
# (/lib/modules/RELEASE/build) and kbuild look for them.
if [ -n "$PFT_KROOT" ]; then
	for d in "$PFT_KROOT/usr/lib/modules/$PFT_RELEASE" "$PFT_KROOT"/usr/src/linux-headers-* \
		"$PFT_KROOT"/usr/lib/linux-kbuild-*; do
		[ -d "$d" ] || continue
		t=${d#"$PFT_KROOT"}
		mkdir -p "$t" && $BB mount --bind "$d" "$t" \
			|| finish 68 "cannot bind $d at $t"
	done
fi

# Emulated pmem: memmap=...! regions appear through nd_e820, QEMU's NVDIMM
# through ACPI NFIT.  There is no udev: load the drivers by hand.
case "$PFT_PMEM" in
memmap) modprobe nd_e820 && modprobe nd_pmem ;;
nvdimm) modprobe nfit && modprobe nd_pmem ;;
esac
i=0
while [ ! -b /dev/pmem0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/pmem0 ] || finish 71 "no /dev/pmem0 appeared ($PFT_PMEM pmem)"
if [ "$PFT_PMEM" = nvdimm ] && [ "$(cat /sys/block/pmem0/queue/dax 2>/dev/null)" != 1 ]; then
	# QEMU's NVDIMM starts as a raw namespace without DAX: make it fsdax.
	# The info block lands in the backing file, so later boots skip this.
	ndctl create-namespace -f -e namespace0.0 -m fsdax -M mem >/dev/null 2>"$pft_job/ndctl.err" \
		|| finish 72 "ndctl could not make the NVDIMM fsdax: $(tail -n1 "$pft_job/ndctl.err")"
fi
[ "$(cat /sys/block/pmem0/queue/dax 2>/dev/null)" = 1 ] \
	|| finish 73 "/dev/pmem0 does not support DAX (queue/dax is not 1)"
uptime_s > "$pft_job/t_pmem"

mkdir -p "$PFT_MOUNT"
case "$PFT_FS" in
ext4)
	# A 2 MiB RAID stride (512 blocks; the usual advice for DAX): mballoc
	# aligns allocations of whole strides, so a 2 MiB fault gets a 2 MiB
	# aligned extent and a PMD whatever the lab tests wrote before (without
	# it, a 4 MiB file after the load tests' churn was all PTE faults).
	mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512 /dev/pmem0 >"$pft_job/mkfs.log" 2>&1 \
		|| finish 74 "mkfs.ext4 failed"
	$BB mount -t ext4 -o dax /dev/pmem0 "$PFT_MOUNT" 2>"$pft_job/mount.err" \
		|| finish 75 "mount -o dax failed: $(tail -n1 "$pft_job/mount.err")"
	;;
xfs)
	# Data stripe-aligned to 2 MiB (the usual advice for DAX): otherwise
	# where a file lands decides whether it can be mapped with PMDs (a fresh
	# 4 MiB file starts 96 KiB into the device: every PMD fault falls back).
	# With a 2 MiB stripe unit the log wants AGs of more than 128 MiB: two
	# AGs; a device too small for that gets the plain layout.
	mkfs.xfs -q -f -m reflink=0 -d su=2m,sw=1,agcount=2 /dev/pmem0 >"$pft_job/mkfs.log" 2>&1 \
		|| mkfs.xfs -q -f -m reflink=0 /dev/pmem0 >>"$pft_job/mkfs.log" 2>&1 \
		|| finish 74 "mkfs.xfs failed"
	$BB mount -t xfs -o dax=always /dev/pmem0 "$PFT_MOUNT" 2>"$pft_job/mount.err" \
		|| finish 75 "mount -o dax=always failed: $(tail -n1 "$pft_job/mount.err")"
	;;
esac
# A mount can come up without DAX and say nothing (xfs on a raw namespace):
# believe only statx's STATX_ATTR_DAX on a real file.
"$PFT_PYTHON" -m pfntrace.lab.daxcheck "$PFT_MOUNT" >"$pft_job/daxcheck" 2>&1 \
	|| finish 76 "the DAX check failed: $(tail -n1 "$pft_job/daxcheck")"
uptime_s > "$pft_job/t_mounted"

cd "$PFT_CWD" 2>/dev/null || cd /
# First word of the command must exist: say so plainly instead of sh's noise.
if ! command -v "$PFT_ARGV0" >/dev/null 2>&1; then
	finish 127 "command not found in the guest: $PFT_ARGV0"
fi
# The serial lines are ttys; the command sees a terminal only where the
# host's side is one, so piped `pfntrace lab run` output stays plain text.
if [ "$PFT_STDOUT_TTY" = 1 ]; then
	out=/dev/ttyS1
else
	out=/run/pft-out; mkfifo $out; cat $out >/dev/ttyS1 & relay1=$!
fi
if [ "$PFT_STDERR_TTY" = 1 ]; then
	err=/dev/ttyS2
else
	err=/run/pft-err; mkfifo $err; cat $err >/dev/ttyS2 & relay2=$!
fi
# The host terminal's size (PFT_COLS x PFT_ROWS) is set on the command's own
# tty descriptors, by the shell that then becomes the command: a tty's window
# size lives in its tty_struct, which the kernel frees when the last
# descriptor closes, so `stty -F` on a line nobody holds open is lost before
# the command opens it (top came up at 80 columns under a 120-column host).
# Not COLUMNS/LINES: they would outlive a resize and override the size of a
# terminal the command makes itself (tmux in a lab test).
(
	[ "$PFT_STDOUT_TTY" = 1 ] && stty rows "$PFT_ROWS" cols "$PFT_COLS" <&1 2>/dev/null
	[ "$PFT_STDERR_TTY" = 1 ] && stty rows "$PFT_ROWS" cols "$PFT_COLS" <&2 2>/dev/null
	exec sh "$pft_job/command.sh"
) >$out 2>$err </dev/null
code=$?
[ -n "${relay1:-}" ] && wait $relay1
[ -n "${relay2:-}" ] && wait $relay2
finish $code ""
