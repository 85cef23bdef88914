"""`pfntrace record`'s engine: tracer -> recording file, with the names and clocks
a later report needs.

The tracer hands over raw event bytes; they go into the recording as they
are.  Around them the recorder adds what only the live system knows: which
path a dev:ino was, which program a pid was, how the monotonic clock the
events carry maps to wall-clock time (inode timestamps are wall-clock), and,
at the end, what statx says of every touched file.
"""

import itertools
import os
import resource
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from pfntrace import __version__, bpfstats, decode, procinfo
from pfntrace.kernel import kconfig
from pfntrace.kernel.statx import statx
from pfntrace.recording import RecordingWriter

# What _take() reads of each event.
_TAKE_FIELDS = ("type", "handler", "ops_pfn_mkwrite", "ops_page_mkwrite", "pid", "dev", "ino")
CLOCK_SAMPLE_EVERY_S = 0.25
CLOCK_STEP_NS = 100_000  # offset changes below this are read jitter
STATUS_EVERY_S = 0.5
FLUSH_EVERY_S = 1.0


def clock_sample():
    """[monotonic ns, realtime - monotonic ns], read as close together as we can.

    Two clock reads around one: the midpoint cancels most of the gap.
    """
    m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    r = time.clock_gettime_ns(time.CLOCK_REALTIME)
    m2 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    mid = (m1 + m2) // 2
    return [mid, r - mid]


def tick_ns():
    """Length of the kernel's timer tick: coarse timestamps move in these steps."""
    try:
        hz = kconfig.load().get("CONFIG_HZ")
        return 1_000_000_000 // int(hz)
    except (kconfig.KconfigError, TypeError, ValueError):
        return 4_000_000  # CONFIG_HZ=250, Debian's


@dataclass
class RecordOptions:
    output: str
    command: list = field(default_factory=list)
    pid: int = 0
    duration: float = 0.0
    mounts: list = field(default_factory=list)  # [(path, major, minor)]
    all_files: bool = False
    only_file: str = None
    status: bool = True  # a live status line on stderr
    bpf_stats: bool = False  # the programs' own run time, into the trailer


class Recorder:
    def __init__(self, tracer, plan, options):
        self.tracer = tracer
        self.plan = plan
        self.opt = options
        self.writer = None
        self.events = 0
        self.by_type = {}
        self.files = {}      # (major, minor, ino) -> path or None
        self.procs = {}      # pid -> {"comm", "cmdline"}, None when it was gone
        self.symbols = {}    # handler address -> kallsyms name
        self.kallsyms = None
        self.late = []       # handlers probed only once a fault showed them
        self._looked_up = set()  # (file key, pid) whose maps were read
        self._stop = False
        self.child = None
        self.exit_code = None

    # --- set-up ----------------------------------------------------------

    def header(self):
        sample = clock_sample()
        return {
            "tool": "pfntrace", "pfntrace_version": __version__,
            "kernel": os.uname().release, "machine": os.uname().machine,
            "hostname": socket.gethostname(),
            "plan": self.plan,
            "clock": {
                "events": "CLOCK_MONOTONIC", "timestamps": "CLOCK_REALTIME (coarse)",
                "realtime_minus_monotonic_ns": sample[1], "sampled_at_ns": sample[0],
                "tick_ns": tick_ns(),
            },
            "started_wall_ns": time.time_ns(),
            "command": self.opt.command, "pid": self.opt.pid,
            "mounts": [m[0] for m in self.opt.mounts],
            "all_files": self.opt.all_files,
            # Retried do_wp_page attempts and fs_dax tracepoints: counted per
            # file in the kernel (COUNTS blocks) unless every one is an event.
            "every_event": self.tracer.every_event,
            "file": self.opt.only_file,
            "lab": {k: v for k, v in os.environ.items() if k.startswith("PFNTRACE_LAB_")},
        }

    def open(self):
        """Create the recording (mode 0600) and write its header.

        Done before the BPF program is compiled, so an unwritable -o fails
        in a moment rather than after the compile."""
        self.writer = RecordingWriter.create(self.opt.output, self.header())

    def abort(self):
        """Remove a recording that never got past its header."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def _spawn(self):
        """Fork COMMAND, held before exec until its pid is in the traced map,
        so its very first fault is seen."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(w)
            os.read(r, 1)
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                os.execvp(self.opt.command[0], self.opt.command)
            except OSError as e:
                os.write(2, ("pfntrace: cannot run %s: %s\n"
                             % (self.opt.command[0], e.strerror)).encode())
                os._exit(127)
        os.close(r)
        self.tracer.follow_pid(pid)
        os.write(w, b"x")
        os.close(w)
        self.child = pid

    # --- the loop --------------------------------------------------------

    def _on_signal(self, signum, frame):
        self._stop = True
        if self.child:
            try:
                os.kill(self.child, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)
            except ProcessLookupError:
                pass

    def _child_done(self):
        if not self.child or self.exit_code is not None:
            return self.exit_code is not None
        pid, status = os.waitpid(self.child, os.WNOHANG)
        if pid == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        if self.exit_code < 0:  # killed by a signal: the shell's convention
            self.exit_code = 128 - self.exit_code
        return True

    def _take(self, buf):
        """Write the events of buf, and the metadata they are the first to
        need: handler names, handlers to probe from now on, processes, file
        paths.  A block's columns are read in place and deduplicated at C
        speed (decode.columns), not in a Python loop per event: what the
        recorder spends while the workload runs, the workload loses where
        CPUs are few (the lab's QEMU runs all vCPUs in one host thread)."""
        if not buf:
            return
        self.writer.add_events(buf)
        types, handlers, pfns, pages, pids, devs, inos = decode.columns(buf, _TAKE_FIELDS)
        self.events += len(types)
        kind = _one_value(types)
        for t, n in ({kind: len(types)} if kind is not None else Counter(types)).items():
            self.by_type[t] = self.by_type.get(t, 0) + n
        new_meta = {}
        # Processes and paths first: a process exits, unmaps, or its mount
        # goes (umount -l), and /proc/PID/maps then names the file no more
        # or by another path; naming a handler may read kallsyms again.
        for dev, ino, pid in _distinct(devs, inos, pids):
            if pid not in self.procs:
                info = procinfo.proc_info(pid)
                if info and not info["cmdline"] and pid == self.child:
                    info["cmdline"] = " ".join(self.opt.command)  # exited already
                # Remembered even when gone: /proc is asked once per pid, not
                # once per event of a process that has exited.
                self.procs[pid] = info
                if info:
                    new_meta.setdefault("procs", {})[str(pid)] = info
            major, minor = procinfo.split_kernel_dev(dev)
            key = (major, minor, ino)
            if self.files.get(key) is None and (key, pid) not in self._looked_up:
                # Once per file and process: a process that has exited (or
                # unmapped the file) will not name it on a second look either.
                self._looked_up.add((key, pid))
                path = procinfo.maps_paths(pid).get(key)
                self.files[key] = path
                if path:
                    new_meta.setdefault("files", {})[procinfo.file_key(*key)] = {"path": path}
        # Handlers are named here, where kallsyms is the live one: module
        # addresses differ from boot to boot.  (Only HANDLER and WP events
        # carry one: a WP one when it folded its handler's event in,
        # PFT_F_HANDLER_FOLDED.)
        for (addr,) in _distinct(handlers):
            if addr and addr not in self.symbols:
                self._name(addr, new_meta)
        ops = dict.fromkeys(itertools.chain.from_iterable(_distinct(pfns, pages)))
        new_ops = [addr for addr in ops if addr and addr not in self.symbols]
        if new_ops:     # rare: the first fault through a vm_ops not seen yet
            first = {}
            for ts, pfn, page in zip(decode.columns(buf, ("ts_ns",))[0], pfns, pages):
                first.setdefault(pfn, ts)
                first.setdefault(page, ts)
            for addr in new_ops:
                self._discover(addr, first[addr], new_meta)
        if new_meta:
            self.writer.add_meta(new_meta)

    def _sample_clock(self, samples, force=False):
        """Keep the clock samples where the wall-clock offset moved (a clock
        step or slew): the correlation needs the offset in force at each
        fault, and a steady clock needs no new sample.  The whole list goes
        into META (later META wins), so it is rewritten only on change."""
        sample = clock_sample()
        if samples and not force and abs(sample[1] - samples[-1][1]) < CLOCK_STEP_NS:
            return
        samples.append(sample)
        self.writer.add_meta({"clock_samples": samples})

    def _name(self, addr, new_meta):
        name = self._symbol(addr)
        self.symbols[addr] = name
        new_meta.setdefault("symbols", {})["0x%x" % addr] = name
        return name

    def _discover(self, addr, ts, new_meta):
        """A vma's ->pfn_mkwrite / ->page_mkwrite the plan did not list (the
        candidate list is a start, not the truth): probe it from now on and
        say from when, since the faults before went by unseen."""
        name = self._name(addr, new_meta)
        if "+" in name or name.startswith("0x") or ("kprobe", name) in self.tracer.attached:
            return
        attached = self.tracer.attach_handler(name)
        self.late.append({"hook": name, "attached": attached, "first_seen_ns": ts})
        new_meta["late_handlers"] = self.late

    def _index_symbols(self):
        """Index kallsyms by address before the workload starts: the first
        handler named otherwise pays for it while the workload runs."""
        from pfntrace.kernel.kallsyms import Kallsyms, KallsymsError

        try:
            self.kallsyms = Kallsyms.load()
            if not self.kallsyms.addresses_hidden:
                self.kallsyms.index_text()
        except KallsymsError:
            pass    # said when a handler cannot be named (_symbol)

    def _symbol(self, addr):
        from pfntrace.kernel.kallsyms import Kallsyms, KallsymsError

        try:
            # Loaded again only when a module came or went since (a handler
            # of a module loaded after the recording began has an address
            # the older table would give to another symbol).
            self.kallsyms = Kallsyms.load()
            name = self.kallsyms.resolve(addr)
            if "+" in name or name.startswith("0x"):
                # A handler is a function's first byte: an offset means a
                # table without its module (seen in the lab: pftbug loaded
                # twice in one recording, named ftrace_trampoline+0x2010),
                # so the kernel's table is read afresh, once per address.
                self.kallsyms = Kallsyms.load(fresh=True)
                name = self.kallsyms.resolve(addr)
            return name
        except KallsymsError:
            return "0x%x" % addr

    def _status(self, start, force_end=False):
        elapsed = time.monotonic() - start
        lost = sum(self.tracer.lost())
        line = "pfntrace: %6.1fs  %d events  %.0f/s  lost %d" % (
            elapsed, self.events, self.events / elapsed if elapsed > 0 else 0, lost)
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + line + ("\n" if force_end else ""))
            sys.stderr.flush()

    def run(self):
        """Record until COMMAND exits, --duration passes, or SIGINT/SIGTERM.

        Returns the trailer written (with "exit_code" when a command ran).
        """
        if self.writer is None:
            self.open()
        self._index_symbols()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        start = time.monotonic()
        cpu_start = _own_cpu_ns()
        samples = []
        stats = bpfstats.BpfStats(self.tracer) if self.opt.bpf_stats else None
        try:
            if self.opt.command:
                self._spawn()
            else:
                if self.opt.pid:
                    self.tracer.follow_pid(self.opt.pid)
                # Probes are live from here: say so, for whoever starts the
                # workload next (a person, or a script waiting for this line).
                sys.stderr.write("pfntrace: recording to %s%s; Ctrl-C to stop\n" % (
                    self.opt.output, " pid %d" % self.opt.pid if self.opt.pid else ""))
                sys.stderr.flush()
            next_sample = next_status = next_flush = 0.0
            while not self._stop:
                now = time.monotonic()
                if now >= next_sample:
                    self._sample_clock(samples)
                    next_sample = now + CLOCK_SAMPLE_EVERY_S
                if now >= next_flush:
                    # A short block now and then: kill -9 or a crash then
                    # costs at most FLUSH_EVERY_S of events, not a 1 MiB block.
                    self.writer.set_lost(self.tracer.lost())
                    self.writer.set_counts(self.tracer.file_counts())
                    self.writer.flush()
                    next_flush = now + FLUSH_EVERY_S
                if self.opt.status and now >= next_status:
                    self._status(start)
                    next_status = now + STATUS_EVERY_S
                self._take(self.tracer.poll())
                if self.opt.command and self._child_done():
                    break
                if self.opt.pid and not os.path.exists("/proc/%d" % self.opt.pid):
                    break
                if self.opt.duration and now - start >= self.opt.duration:
                    break
            if self.child and self.exit_code is None:
                _, status = os.waitpid(self.child, 0)
                self.exit_code = os.waitstatus_to_exitcode(status)
                if self.exit_code < 0:
                    self.exit_code = 128 - self.exit_code
            # Events still in flight when the loop ended.
            self._take(self.tracer.poll(0))
            self._sample_clock(samples, force=True)
            lost = self.tracer.lost()
            self.writer.set_lost(lost)
            self.writer.set_counts(self.tracer.file_counts())
            trailer = self._trailer(start, lost)
            if stats:
                trailer["bpf_run_times"] = {name: [ns, runs]
                                            for name, (ns, runs) in stats.run_times().items()}
            # What the recorder itself used while recording (draining,
            # writing, naming): the share of the cost no BPF run time shows.
            trailer["recorder_cpu_ns"] = _own_cpu_ns() - cpu_start
            if self.opt.status:
                self._status(start, force_end=True)
            self.writer.close(trailer)
            return trailer
        except BaseException:
            if self.writer and not self.writer.closed:
                # Keep what was recorded: the file reads as truncated.
                try:
                    self.writer.flush()
                except Exception:
                    pass
            raise
        finally:
            if stats:
                stats.close()
            for s, h in old.items():
                signal.signal(s, h)

    def _trailer(self, start, lost):
        self._name_unresolved_files()
        with open("/proc/self/mountinfo") as f:
            mounted = mounted_devs(f.read())
        files = {procinfo.file_key(*key): final_statx(key, path, mounted)
                 for key, path in self.files.items()}
        skipped = self.tracer.skipped_by_program()
        blind = self.tracer.blind(skipped)
        return {
            "duration_ns": int((time.monotonic() - start) * 1e9),
            "ended_wall_ns": time.time_ns(),
            "events": self.events,
            "events_by_type": {str(k): v for k, v in sorted(self.by_type.items())},
            "lost": sum(lost) + blind["unfinished"] + blind["skipped_by_kernel"],
            "blind": blind,
            "exit_code": self.exit_code,
            "attached": ["%s %s" % a for a in self.tracer.attached],
            "mechanisms": self.tracer.mechanisms(),
            "bpf_skipped": skipped,
            "statx": files,
        }

    def _name_unresolved_files(self):
        wanted = {k for k, p in self.files.items() if p is None}
        if not wanted:
            return
        # First the names the kernel took at the first fault of each file...
        with open("/proc/self/mountinfo") as f:
            points = procinfo.mount_points(f.read())
        found, gone = {}, {}
        for key, comps in self.tracer.names().items():
            if key in wanted:
                path = procinfo.path_from_names(comps, points.get(key[:2]))
                # Names longer than a slot come back cut short: believe a path
                # only if it leads to the very inode.
                if path and _is_inode(path, key):
                    found[key] = path
                elif path and comps[-1] == "/":
                    # Whole, but it leads there no more: deleted (or renamed,
                    # which the walk below finds), or its mount is gone.  It
                    # is still the name the file had at its first fault.
                    gone[key] = path
        self._name_files(found)
        # ...then, for what the names map missed (it was full) or what moved,
        # a bounded walk; what it does not find keeps its name at the fault.
        wanted -= set(found)
        if not wanted:
            return
        roots = [m[0] for m in self.opt.mounts] or _dax_mount_points()
        found = procinfo.walk_for_inodes(roots, wanted)
        found.update((k, p) for k, p in gone.items() if k not in found)
        self._name_files(found)

    def _name_files(self, found):
        """Record {(major, minor, ino): path} in the recording's file names."""
        if found:
            self.files.update(found)
            self.writer.add_meta({"files": {procinfo.file_key(*k): {"path": p}
                                            for k, p in found.items()}})


def _one_value(column):
    """The value every item of a column (a memoryview) has, or None: one
    memcmp over the column's bytes."""
    if len(column) and column.tobytes() == column[:1].tobytes() * len(column):
        return column[0]
    return None


def _distinct(*columns):
    """The distinct rows of these columns (tuples), first seen first.  A
    batch of events is mostly one process faulting on one file: then each
    column is one value, found by a memcmp each instead of a tuple made and
    hashed per event (CPU the traced workload pays under QEMU TCG)."""
    values = []
    for column in columns:
        value = _one_value(column)
        if value is None:   # a mixed batch: the rest need not be looked at alone
            return list(dict.fromkeys(zip(*columns)))
        values.append(value)
    return [tuple(values)]


def _own_cpu_ns():
    """User and system CPU time of this process so far (the BPF compile
    included: callers take differences)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return int((ru.ru_utime + ru.ru_stime) * 1e9)


def mounted_devs(mountinfo):
    """{(major, minor)} of every filesystem mounted in this namespace, at
    its root or not (bind mounts of a subtree count)."""
    out = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2].count(":") == 1:
            major, minor = fields[2].split(":")
            if major.isdigit() and minor.isdigit():
                out.add((int(major), int(minor)))
    return out


def final_statx(key, path, mounted):
    """The trailer's entry for one file (major, minor, ino): statx at the
    end when path still leads to that inode.  A file whose filesystem is
    mounted nowhere any more (unmounted lazily while a writer kept it alive)
    was not deleted: it is out of reach, and "unmounted" says so."""
    entry = {"path": path, "exists": False}
    if path:
        try:
            st = statx(path)
            if (st["dev_major"], st["dev_minor"], st["ino"]) == key:
                entry.update(exists=True, mtime_ns=st["mtime_ns"], ctime_ns=st["ctime_ns"],
                             size=st["size"], dax=st["dax"])
                return entry
        except OSError:
            pass
    if (key[0], key[1]) not in mounted:
        entry["unmounted"] = True
    return entry


def _is_inode(path, key):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) == key


def _dax_mount_points():
    """Mount points mounted with a dax option: where unnamed inodes may be."""
    from pfntrace.doctor import dax_mounts

    with open("/proc/self/mountinfo") as f:
        return [m[0] for m in dax_mounts(f.read())]
