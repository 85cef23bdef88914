#!/bin/sh
# The demo's guest half (run by scripts/demo.sh inside `pfntrace lab run`).
set -eu
PFN=".venv/bin/pfntrace"
PY=".venv/bin/python"
D=/mnt/dax
echo "== the DAX mount"
grep " $D " /proc/mounts
$PY -c "from pfntrace.kernel.statx import statx; open('$D/probe','w').write('x'); print('$D/probe: statx STATX_ATTR_DAX =', statx('$D/probe')['dax'])"
echo
echo "== the probe plan on $(uname -r)"
$PFN record --plan
echo
echo "== record: xfstests generic/080's mmap-read then mmap-write, plus 23 pages read then written"
xfs_io -f -c "pwrite 0 4k" -c fsync $D/g080 >/dev/null
touch -d "1 hour ago" $D/g080
$PFN record -o /tmp/demo.pft -- sh -c "
	xfs_io -c 'mmap 0 4k' -c 'mread 0 4k' -c 'mwrite 0 4k' $D/g080
	$PY -m pfntrace.lab.workloads read-then-write $D/pages 23"
echo
echo "== pfntrace report"
$PFN report /tmp/demo.pft
echo
echo "== pfntrace check on generic/080 (exit 0: every write fault moved or found current mtime)"
$PFN check -- xfs_io -c 'mmap 0 4k' -c 'mread 0 4k' -c 'mwrite 0 4k' $D/g080
echo
echo "== invisible writes: 300 x (msync, stat, one mmap write, stat); check --invisible names each write the stat before it cannot see (first 3)"
$PFN check --invisible -- $PY -m pfntrace.lab.workloads stat-write-loop $D/seen 300 | awk '/^INVISIBLE/ && n++ < 3'
