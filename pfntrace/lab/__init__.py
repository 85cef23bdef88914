"""The lab: Debian kernels with emulated persistent memory, booted under QEMU.

kernels.py finds the installed lab kernels and unpacks their vmlinux,
initramfs.py builds the tiny busybox initramfs that mounts the host root over
9p, vm.py boots one guest and runs one command in it, guest/ holds the
scripts that run inside.
"""
