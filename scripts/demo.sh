#!/bin/sh
# Set everything up, then show the main job in the lab: a Debian kernel with
# emulated pmem, a DAX mount, and pfntrace recording and judging write faults.
# Options go to `pfntrace lab run` (e.g. --kernel 6.1 --fs xfs).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/pfntrace lab run "$@" -- sh scripts/demo-guest.sh
