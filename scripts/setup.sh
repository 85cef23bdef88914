#!/bin/sh
# Idempotent set-up for pfntrace and its lab, used by both README commands
# and by CI: Debian packages (QEMU, the two lab kernels with headers, bcc,
# xfsprogs, busybox-static, a C toolchain for the lab's kernel modules and
# cffi's compiled checks (python3-dev: pyconfig.h), Prometheus (server and
# promtool: the exporter's lab test scrapes with the real thing)...),
# then a venv that sees Debian's bcc, with the Python packages pinned in
# constraints.txt.  Nothing else of the machine is assumed: the lab guest
# runs pfntrace with this venv's interpreter.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="qemu-system-x86 linux-image-amd64 linux-headers-amd64 linux-image-6.12-amd64
linux-headers-6.12-amd64 python3-bpfcc python3-venv python3-pip busybox-static xfsprogs
ndctl kmod zstd xz-utils e2fsprogs tmux gcc make libc6-dev python3-dev prometheus"

missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
		|| missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages:$missing (run as root, or apt-get install them)" >&2
		exit 1
	fi
	echo "setup: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# Debian's python3 (not a pyenv one first on PATH): bcc is built for it.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import bcc" 2>/dev/null; then
	rm -rf .venv
	/usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# The third lab kernel: the newest in Debian's archive, unpacked into the
# lab's cache (not installed); kept when the archive cannot be reached.
.venv/bin/python -m pfntrace.lab.newest fetch
echo "setup: ready ($(.venv/bin/pfntrace --version))" >&2
