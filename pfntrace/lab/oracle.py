"""The stat oracle: did an mmap write move the file's mtime, by stat alone.

xfstests generic/080 asks one question of a DAX filesystem: after an mmap
read and then an mmap write of a MAP_SHARED mapping, is the file's mtime
newer than before?  These workloads ask it the same way, with nothing but
stat(2) before and after, so their verdict is independent of pfntrace and of
any tracing.  Each sleeps just over a second between the last write(2) of
the file and the mmap write, so a real timestamp update must move mtime on
any clock granularity.

    python -m pfntrace.lab.oracle generic-080 FILE
    python -m pfntrace.lab.oracle read-then-write FILE [PAGES]

prints one JSON line: the stats before and after, whether mtime and ctime
moved, and the verdict ("moved" or "stale", by mtime as generic/080 does).
"""

import argparse
import json
import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE
SETTLE_S = 1.1          # just over a second: past any timestamp granularity
READ_THEN_WRITE_PAGES = 23
MARK = 0x5A             # the byte the mmap writes leave in each page

MOVED, STALE = "moved", "stale"


def fill(path, pages):
    """Create or reuse path as `pages` allocated pages (no holes), fsynced.

    The inode stays the same when the file exists, so a module that was
    pointed at it before keeps watching the right file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != pages * PAGE:
            os.ftruncate(fd, pages * PAGE)
        os.pwrite(fd, b"\0" * (pages * PAGE), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def stat_times(path):
    st = os.stat(path)
    return {"mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "dev": "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)), "ino": st.st_ino}


def _read_then_write(path, pages):
    """One MAP_SHARED mapping: read the first byte of every page, then write
    every page, then munmap.  On DAX each write is a write-protect fault."""
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, pages * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        total = 0
        for i in range(pages):
            total += m[i * PAGE]
        for i in range(pages):
            m[i * PAGE] = MARK
        m.close()  # munmap: no mapping outlives the workload
        data_ok = all(os.pread(fd, 1, i * PAGE) == bytes([MARK]) for i in range(pages))
    finally:
        os.close(fd)
    return data_ok


def _verdict(name, path, pages, before, after, data_ok):
    mtime_moved = after["mtime_ns"] != before["mtime_ns"]
    return {
        "workload": name, "file": os.path.abspath(path), "pages": pages,
        "dev": before["dev"], "ino": before["ino"],
        "before": {k: before[k] for k in ("mtime_ns", "ctime_ns")},
        "after": {k: after[k] for k in ("mtime_ns", "ctime_ns")},
        "mtime_moved": mtime_moved,
        "ctime_moved": after["ctime_ns"] != before["ctime_ns"],
        "data_ok": data_ok,
        "verdict": MOVED if mtime_moved else STALE,
    }


def generic_080(path, pages=1):
    """generic/080 on one file: fill a page, fsync, stat, sleep, mmap-read,
    mmap-write, munmap, stat."""
    fill(path, pages)
    before = stat_times(path)
    time.sleep(SETTLE_S)
    data_ok = _read_then_write(path, pages)
    return _verdict("generic-080", path, pages, before, stat_times(path), data_ok)


def read_then_write(path, pages=READ_THEN_WRITE_PAGES):
    """N pages in one MAP_SHARED mapping: fill, fsync, sleep, stat, read all
    pages, write all pages, munmap, stat."""
    fill(path, pages)
    time.sleep(SETTLE_S)
    before = stat_times(path)
    data_ok = _read_then_write(path, pages)
    return _verdict("read-then-write", path, pages, before, stat_times(path), data_ok)


# name -> (function, default pages)
WORKLOADS = {
    "generic-080": (generic_080, 1),
    "read-then-write": (read_then_write, READ_THEN_WRITE_PAGES),
}


def default_pages(name):
    return WORKLOADS[name][1]


def run(name, path, pages=None):
    """Run one oracle workload in this process; return its result dict."""
    fn, default = WORKLOADS[name]
    return fn(path, pages or default)


def run_in_child(name, path, pages=None):
    """Run one oracle workload in a forked child and return its result: the
    mapping dies with the child, whatever happens to it."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(rfd)
            out = json.dumps(run(name, path, pages)).encode()
        except BaseException as e:  # report, never return into the parent's code
            out = json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode()
            code = 1
        try:
            with os.fdopen(wfd, "wb") as f:
                f.write(out)
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data.decode() or "{}") if data else {}
    if "error" in result or os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("oracle workload %s on %s failed: %s"
                           % (name, path, result.get("error", "exit status %d" % status)))
    return result


def command(name, path, pages=None, output=None):
    """The argv that runs one workload as its own process (to wrap it in
    `pfntrace check --` or `record --`)."""
    argv = [sys.executable, "-m", "pfntrace.lab.oracle", name, path,
            str(pages or default_pages(name))]
    if output:
        argv += ["-o", output]
    return argv


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pfntrace.lab.oracle",
                                 description="mmap read-then-write and a stat verdict")
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("file")
    ap.add_argument("pages", nargs="?", type=int)
    ap.add_argument("-o", "--output", help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    if args.pages is not None and args.pages < 1:
        ap.error("pages must be at least 1")
    result = run(args.workload, args.file, args.pages)
    line = json.dumps(result, sort_keys=True)
    if args.output:
        with open(args.output, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
