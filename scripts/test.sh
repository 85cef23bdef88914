#!/bin/sh
# Set everything up, then run every test: unit tests on this machine, and
# the lab tests inside QEMU guests on the three lab kernels x both filesystems.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
# -rs prints the reason of every skip; pytest exits non-zero (5) when no
# test ran, which fails this script too.
exec .venv/bin/python -m pytest -rs "$@"
