"""Finding (and, as root, mounting) tracefs.

Tracepoints are attached through perf by name, but whether an event exists
is answered by its directory under tracefs, and our machines boot with
neither tracefs nor debugfs mounted.
"""

import ctypes
import ctypes.util
import os

TRACING = "/sys/kernel/tracing"
DEBUGFS = "/sys/kernel/debug"
DEBUGFS_TRACING = DEBUGFS + "/tracing"


class TracefsError(Exception):
    pass


class Tracefs:
    def __init__(self, root):
        self.root = root

    def has_event(self, group, name):
        return os.path.isdir(os.path.join(self.root, "events", group, name))

    def available_functions(self):
        """The set of ftrace-able functions, or an OSError when the file
        cannot be read (our machines answer EPERM)."""
        with open(os.path.join(self.root, "available_filter_functions")) as f:
            # Lines are "name" or "name [module]".
            return {line.split()[0] for line in f if line.strip()}


def _mounted_types(mountinfo):
    """{mount point: fs type} from /proc/self/mountinfo text."""
    mounts = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep:
            mounts[left.split()[4]] = right.split()[0]
    return mounts


def find(mountinfo=None):
    """The mounted tracefs root, or None."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    mounts = _mounted_types(mountinfo)
    if mounts.get(TRACING) == "tracefs":
        return Tracefs(TRACING)
    # Older setups reach tracefs only through debugfs, which automounts it.
    if mounts.get(DEBUGFS) == "debugfs" and os.path.isdir(DEBUGFS_TRACING + "/events"):
        return Tracefs(DEBUGFS_TRACING)
    return None


def _mount(fstype, target):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise TracefsError("cannot mount %s on %s: %s" % (fstype, target, os.strerror(err)))


def ensure_mounted():
    """The tracefs root, mounting tracefs first when we are root and it is
    not mounted.  TracefsError when it cannot be had."""
    found = find()
    if found:
        return found
    if os.geteuid() != 0:
        raise TracefsError("tracefs is not mounted and only root can mount it: "
                           "mount -t tracefs nodev %s" % TRACING)
    _mount("tracefs", TRACING)
    return Tracefs(TRACING)
