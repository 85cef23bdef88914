"""Names for what the kernel gives as numbers: dev:ino -> path, pid -> comm.

The BPF side sends only inode numbers and pids; a recording is useful only if
it also says which file and which program those were.  /proc/PID/maps names
the file a faulting process has mapped (with its device and inode), so the
path is found while the process is alive; a walk of the watched mounts
catches files whose process exited before we looked.
"""

import os


def file_key(major, minor, ino):
    return "%d:%d:%d" % (major, minor, ino)


def split_kernel_dev(dev):
    """(major, minor) of the kernel's internal dev_t (major << 20 | minor)."""
    return dev >> 20, dev & 0xFFFFF


def maps_paths(pid):
    """{(major, minor, ino): path} of the files pid has mapped."""
    found = {}
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or parts[4] == "0":
                    continue
                major, minor = (int(x, 16) for x in parts[3].split(":"))
                path = parts[5].rstrip("\n")
                if path.endswith(" (deleted)"):
                    path = path[: -len(" (deleted)")]
                found[(major, minor, int(parts[4]))] = path
    except (OSError, ValueError):
        pass
    return found


def proc_info(pid):
    """{"comm", "cmdline"} of a live process, or None when it is gone."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            comm = f.read().strip()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    return {"comm": comm, "cmdline": cmdline}


def walk_for_inodes(roots, wanted, limit=200000):
    """{(major, minor, ino): path} for wanted keys found under roots.

    Bounded by `limit` entries so a huge mount cannot stall the end of a
    recording; what is not found stays unnamed (dev:ino) in the report.
    """
    found = {}
    seen = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                seen += 1
                if seen > limit:
                    return found
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
                if key in wanted:
                    found[key] = path
                    if len(found) == len(wanted):
                        return found
    return found


def mount_points(mountinfo):
    """{(major, minor): mount point} of filesystems mounted at their root
    (mountinfo field 4 is "/"; bind mounts of subtrees are left out)."""
    points = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[3] != "/":
            continue
        major, minor = (int(x) for x in fields[2].split(":"))
        points.setdefault((major, minor), fields[4].encode().decode("unicode_escape"))
    return points


def path_from_names(comps, mount_point):
    """A path from the kernel's names (leaf first, see struct pft_name):
    exact when they reach the filesystem's root ("/"), else marked with
    "..." where the walk stopped."""
    if not comps:
        return None
    if comps[-1] == "/":
        rel = "/".join(reversed(comps[:-1]))
        return (mount_point.rstrip("/") + "/" + rel) if mount_point else "/" + rel
    return "%s/.../%s" % ((mount_point or "").rstrip("/"), "/".join(reversed(comps)))
