"""Load pfntrace.bpf.c with bcc, attach what the probe plan allows, drain events.

This is the only module that imports bcc: everything downstream (recording,
correlation, views) works on raw event bytes and runs where bcc does not.
"""

import ctypes
import mmap
import os

from pfntrace import layout
from pfntrace.mapmem import MappedArray
from pfntrace.ringbuf import RingReader

BPF_DIR = os.path.join(os.path.dirname(__file__), "bpf")
BPF_SOURCE = os.path.join(BPF_DIR, "pfntrace.bpf.c")
MAX_DEVS = 8  # keep in step with MAX_DEVS in pfntrace.bpf.c
# 64 MiB: a write fault makes one event of 200 bytes (3-5 with
# --every-event), so this holds ~65k-320k faults while the consumer is
# busy.  The consumer drains every POLL_MS, and is woken sooner only when
# an eighth of the ring waits (emit() in the BPF C): woken per few events,
# it spent its CPU on them while the workload ran, and under QEMU TCG,
# where all vCPUs share one host thread, that CPU was the workload's.
RINGBUF_PAGES = 16384
RING_WAKEUP_BYTES = RINGBUF_PAGES * mmap.PAGESIZE // 8
POLL_MS = 50
NAME_LEN = layout.const("PFT_NAME_LEN")
RING_TAKEN = layout.const("PFT_RING_TAKEN")
# The `blind` counters' slots (PFT_BLIND_*), by the name reports use.
BLIND_REASONS = {
    "ring_full": layout.const("PFT_BLIND_RING"),
    "state_full": layout.const("PFT_BLIND_STATE"),
    "wp_return_missed": layout.const("PFT_BLIND_WP_RETURN"),
    "handler_return_missed": layout.const("PFT_BLIND_HANDLER_RETURN"),
    "counters_full": layout.const("PFT_BLIND_COUNTERS"),
    "getattr_return_missed": layout.const("PFT_BLIND_GETATTR_RETURN"),
    "retry_misjudged": layout.const("PFT_BLIND_RETRY_GUESS"),
}
assert len(BLIND_REASONS) == layout.const("PFT_BLIND_SLOTS")
# Why a fault was not counted, as top and the exporter break it down.
LOST_REASONS = tuple(BLIND_REASONS) + ("skipped_by_kernel",)
BLIND_STRIDE = layout.const("PFT_BLIND_STRIDE")
BLIND_LOST = layout.const("PFT_BLIND_LOST")
COUNT_ROWS = layout.const("PFT_COUNT_ROWS")
COUNTS_TABLE = layout.const("PFT_ROWS_COUNTS")
ROW_TABLES = layout.const("PFT_ROW_TABLES")
assert layout.ffi.sizeof("struct pft_name") == NAME_LEN * layout.const("PFT_NAME_DEPTH")


class TracerError(Exception):
    """Loading or attaching failed; one line."""


def possible_cpus(path="/sys/devices/system/cpu/possible"):
    """How many CPUs the kernel sizes its per-CPU data for ("0-3" -> 4)."""
    with open(path) as f:
        text = f.read().strip()
    last = 0
    for part in text.split(","):
        last = max(last, int(part.split("-")[-1]))
    return last + 1


def kernel_dev(major, minor):
    """The kernel's internal dev_t (MKDEV), as super_block.s_dev holds it."""
    return (major << 20) | minor


def cflags(plan, aggregate=False, every_event=False):
    """The -D/-I flags pfntrace.bpf.c is compiled with for this kernel.

    aggregate=True builds the in-kernel counters of `pfntrace top` instead of
    the event stream (-DPFT_AGGREGATE -DPFT_NO_STREAM), without the fs_dax
    tracepoints, which the counters do not use.  Otherwise (record) what is
    no write fault is counted per file in the kernel (-DPFT_COUNT_IN_KERNEL),
    unless every_event asks for each as an event."""
    offsets = plan.get("offsets")
    if not offsets:
        raise TracerError("cannot compute struct offsets: %s"
                          % plan.get("offsets_error", "no kernel BTF"))
    flags = ["-I" + BPF_DIR, "-DRINGBUF_PAGES=%d" % (1 if aggregate else RINGBUF_PAGES),
             "-DRING_WAKEUP_BYTES=%d" % RING_WAKEUP_BYTES, "-DPFT_NCPUS=%d" % possible_cpus()]
    if aggregate:
        flags += ["-DPFT_AGGREGATE", "-DPFT_NO_STREAM"]
    elif not every_event:
        flags.append("-DPFT_COUNT_IN_KERNEL")
    flags += ["-D%s=%d" % (k, v) for k, v in sorted(offsets.items())]
    for hook in ([] if aggregate else plan["hooks"]):
        if hook["kind"] == "tracepoint" and hook["status"] == "attach":
            flags.append("-DHAVE_TP_%s" % hook["hook"].split(":")[1].upper())
    flags += fentry_flags(plan)
    # clang warns about the kernel's own headers (6.12); none of it is ours.
    flags.append("-w")
    return flags


def fentry_flags(plan):
    """-DPFT_FENTRY_<FUNCTION> for each vmlinux hook the plan attaches with
    fentry/fexit: pfntrace.bpf.c then defines bcc's KFUNC_PROBE/
    KRETFUNC_PROBE shims, which bcc attaches as it loads the program; and
    -DPFT_FENTRY_HANDLERS when handlers go on trampolines (the programs
    Tracer loads itself), -DPFT_KPROBE_HANDLERS when one goes on a kprobe.
    A function's kprobe programs are compiled only where it has no fentry
    (each is a copy of the same inlined body)."""
    from pfntrace.probeplan import FENTRY_HOOKS, UNMAP_HOOKS, fentry_hooks, trampoline_handlers

    flags = ["-DPFT_FENTRY_%s" % name.upper() for name in fentry_hooks(plan)
             if name in FENTRY_HOOKS]
    if trampoline_handlers(plan):
        flags.append("-DPFT_FENTRY_HANDLERS")
    # The handlers: every function hook but the fault path's and unmap's.
    if any(h["hook"] not in FENTRY_HOOKS + UNMAP_HOOKS and h["kind"] in ("kprobe", "kretprobe")
           and h["status"] == "attach" and h.get("mechanism") not in ("fentry", "fexit")
           for h in plan["hooks"]):
        flags.append("-DPFT_KPROBE_HANDLERS")
    return flags


class Tracer:
    """One loaded BPF program and its attachments.

    follow=True traces only the tasks handed to follow_pid() and their
    descendants; False traces every task.
    """

    def __init__(self, plan, follow=False, devs=(), ino=0, all_files=False, aggregate=False,
                 every_event=False):
        self.plan = plan
        self.aggregate = aggregate  # counters in maps (pfntrace/aggregate.py), no events
        # record: retried attempts and fs_dax tracepoints as events, not counted
        self.every_event = every_event
        self.follow = follow
        self.devs = list(devs)
        self.ino = ino
        self.all_files = all_files
        self.bpf = None
        self.trampolines = None     # the handlers' fentry/fexit (kernel/trampoline.py)
        self.attached = []
        self.ring = None
        self.mem = {}               # map name -> MappedArray (pfntrace/mapmem.py)
        if len(self.devs) > MAX_DEVS:
            raise TracerError("at most %d --mount filters" % MAX_DEVS)

    def start(self):
        try:
            from bcc import BPF
        except ImportError:
            raise TracerError("bcc is not importable: install Debian's python3-bpfcc and run "
                              "with /usr/bin/python3 (or a venv made with "
                              "--system-site-packages)") from None
        from pfntrace.probeplan import fall_back_to_kprobes, fentry_hooks

        try:
            self.bpf = self._load(BPF)
            self._attach_trampolines()
        except TracerError as e:
            # fentry programs are loaded and attached by BPF() itself (and
            # the handlers' by _attach_trampolines): a kernel that refuses
            # them (no trampoline for this function, a verifier that wants
            # more) gets the kprobe plan under auto.
            if not fentry_hooks(self.plan) or self.plan.get("attach") == "fentry":
                raise
            self._unload()
            fall_back_to_kprobes(self.plan, str(e))
            self.bpf = self._load(BPF)
        self._configure()
        self._map_memory()
        self._attach()
        if not self.aggregate:
            self.ring = RingReader(self.bpf["events"].map_fd, RINGBUF_PAGES * mmap.PAGESIZE,
                                   layout.EVENT_SIZE)

    def _load(self, BPF):
        try:
            return BPF(src_file=BPF_SOURCE.encode(),
                       cflags=cflags(self.plan, aggregate=self.aggregate,
                                     every_event=self.every_event))
        except Exception as e:  # bcc raises bare Exception on compile errors
            raise TracerError("bcc could not compile the BPF program: %s"
                              % str(e).splitlines()[0]) from None

    def _attach_trampolines(self):
        """The handlers the plan puts on BPF trampolines: bcc compiled their
        programs (handler_fentry/handler_fexit) but cannot load them against
        a module's function, so they are loaded here, once per handler."""
        from pfntrace.kernel.trampoline import Trampolines, TrampolineError
        from pfntrace.probeplan import trampoline_handlers

        self.trampolines = Trampolines()
        for name, mechanism, target in trampoline_handlers(self.plan):
            prog = "handler_" + mechanism
            try:
                self.trampolines.attach(self.bpf.dump_func(prog.encode()), prog, mechanism,
                                        name, target["btf_id"], target["module"])
            except TrampolineError as e:
                raise TracerError("could not put %s on a trampoline: %s" % (name, e)) from None

    def _map_memory(self):
        """Map what is read or written while the workload runs (mapmem.py:
        a map syscall then would blind the probes on a preempting kernel)."""
        ncpus = possible_cpus()
        size = layout.ffi.sizeof
        wanted = {"blind": (8, ncpus * BLIND_STRIDE), "ringfill": (8, 2), "inflight": (8, 1),
                  "rownext": (8, ROW_TABLES)}
        if self.counting():
            wanted["countrows"] = (size("struct pft_count_row"), COUNT_ROWS)
        if self.aggregate:
            wanted.update(
                aggfiles=(size("struct pft_agg_file_row"), layout.const("PFT_AGG_FILE_ROWS")),
                aggprocs=(size("struct pft_agg_proc_row"), layout.const("PFT_AGG_PROC_ROWS")),
                aggtotal=(size("struct pft_agg_stats"), 1),
                aggrate=(size("struct pft_rate_slot"), layout.const("PFT_AGG_RATE_SLOTS")))
        for name, (value_size, entries) in wanted.items():
            self.mem[name] = MappedArray(self.bpf[name].map_fd, value_size, entries)
        self.ncpus = ncpus

    def rows_claimed(self):
        """[rows claimed] per table (PFT_ROWS_*): how far to read each."""
        return self.mem["rownext"].u64s()

    def counting(self):
        """True when what is no write fault is counted in the kernel (record
        without --every-event: -DPFT_COUNT_IN_KERNEL)."""
        return not (self.aggregate or self.every_event)

    def _configure(self):
        conf = self.bpf["config"]
        c = conf[0]
        c.follow = 1 if self.follow else 0
        c.all_files = 1 if self.all_files else 0
        c.self_tgid = os.getpid()
        c.ino = self.ino
        c.ndevs = len(self.devs)
        for i, d in enumerate(self.devs):
            c.devs[i] = d
        clock = self.plan.get("clock") or {}
        if clock.get("status") == "read":
            c.tk_base = clock["tk_base"]
            c.mg_floor = clock.get("mg_floor") or 0
        # The whole config in one update, armed: the probes ignore a config
        # that is not (the tracepoints and the fentry/fexit programs already
        # run, and an unset one would let every task and device through).
        c.armed = 1
        conf[0] = c

    def _attach(self):
        from pfntrace.probeplan import UNMAP_HOOKS

        # Return probes before entry probes: the config is armed already, so
        # an entry attached first would open a call whose return probe is
        # not there yet, and the next call on that thread would count it
        # lost (a stat polled during the exporter's start made 32 of
        # getattr_return_missed on 7.3).  A return without its entry is a
        # no-op.
        for hook in sorted(self.plan["hooks"], key=lambda h: h["kind"] != "kretprobe"):
            if hook["status"] != "attach" or hook["kind"] == "tracepoint":
                continue  # tracepoints attach themselves (TRACEPOINT_PROBE)
            name = hook["hook"]
            if hook.get("mechanism") in ("fentry", "fexit"):
                # attached by BPF() as it loaded the KFUNC_PROBE shims, or
                # (handlers) by _attach_trampolines
                self.attached.append((hook["kind"], name))
                continue
            if name == "do_wp_page":
                fn = "wp_entry" if hook["kind"] == "kprobe" else "wp_return"
            elif name == "file_update_time":
                fn = "ftu_entry"
            elif name == "vfs_getattr_nosec":
                fn = "getattr_entry" if hook["kind"] == "kprobe" else "getattr_return"
            elif name in UNMAP_HOOKS:
                fn = "unmap_entry"
            elif name == "wp_pfn_shared":
                # Where it is a symbol it says for certain what is otherwise
                # inferred from the page (PFT_F_PFN_PATH).
                fn = "wp_pfn_entry"
            else:
                fn = "handler_entry" if hook["kind"] == "kprobe" else "handler_return"
            try:
                if hook["kind"] == "kprobe":
                    self.bpf.attach_kprobe(event=name.encode(), fn_name=fn.encode())
                else:
                    self.bpf.attach_kretprobe(event=name.encode(), fn_name=fn.encode(),
                                              maxactive=64)
            except Exception as e:
                hook["status"] = "missing"
                hook["why"] = "attach failed: %s" % str(e).splitlines()[0]
                continue
            self.attached.append((hook["kind"], name))
        if ("kprobe", "do_wp_page") not in self.attached:
            raise TracerError("could not attach do_wp_page: %s"
                              % next(h["why"] for h in self.plan["hooks"]
                                     if h["hook"] == "do_wp_page"))

    def attach_handler(self, name):
        """Probe one more vm_ops handler, found at run time (its address came
        in an event's vm_ops pointers).  Returns True when it is attached."""
        if ("kprobe", name) in self.attached:
            return True
        if self.plan.get("attach") == "fentry":
            return False    # its BTF id is not in the plan: no trampoline for it
        try:
            self.bpf.attach_kretprobe(event=name.encode(), fn_name=b"handler_return",
                                      maxactive=64)   # first: see _attach
        except Exception:
            return False
        try:
            self.bpf.attach_kprobe(event=name.encode(), fn_name=b"handler_entry")
        except Exception:
            self.bpf.detach_kretprobe(event=name.encode())
            return False
        self.attached += [("kprobe", name), ("kretprobe", name)]
        return True

    def mechanisms(self):
        """["fentry do_wp_page", "kretprobe ext4_dax_fault", ...]: how each
        attached hook really is attached (after any fallback to kprobes)."""
        how = {(h["kind"], h["hook"]): h.get("mechanism") or h["kind"]
               for h in self.plan["hooks"]}
        return ["%s %s" % (how.get(a, a[0]), a[1]) for a in self.attached]

    def follow_pid(self, pid):
        self.bpf["traced"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def poll(self, timeout_ms=POLL_MS):
        """Raw events that arrived, as one bytes object (whole events).

        Waits timeout_ms first, or less when the kernel wakes the consumer
        because much waits (emit() in the BPF C): the events of a storm are
        taken in batches, not as they come.  timeout_ms=0 drains at once."""
        if timeout_ms:
            self.ring.wait(timeout_ms)
        before = self.ring.position
        data = self.ring.drain()
        # The BPF side counts what waits from this position (PFT_RING_TAKEN).
        # It moves past discarded records too, which return no data.
        if self.ring.position != before:
            self.mem["ringfill"].set_u64(RING_TAKEN, self.ring.position)
        return data

    def names(self):
        """{(major, minor, ino): [name, parent, ...]} from the kernel's names
        map: leaf first, "/" when the walk reached the filesystem's root."""
        out = {}
        for key, value in self.bpf["names"].items():
            # The whole buffer: ctypes cuts a char array field at its first NUL.
            raw = bytes(value)
            comps = [raw[i:i + NAME_LEN].split(b"\0", 1)[0].decode("utf-8", "replace")
                     for i in range(0, len(raw), NAME_LEN)]
            out[(key.dev >> 20, key.dev & 0xFFFFF, key.ino)] = [c for c in comps if c]
        return out

    def programs(self):
        """{name: fd} of the loaded BPF programs (their fdinfo has the
        run-time statistics, pfntrace/bpfstats.py)."""
        progs = {(n.decode() if isinstance(n, bytes) else n): f.fd
                 for n, f in getattr(self.bpf, "funcs", {}).items()}
        progs.update(self.trampolines.programs if self.trampolines else {})
        return progs

    def file_counts(self):
        """[{"dev", "ino", "pid", "comm", <layout.FILE_COUNTERS>...}] of what
        the kernel counted per file and process instead of sending events
        (cumulative); [] when it sends them all (every_event, top)."""
        if not self.counting():
            return []
        rows = self.mem["countrows"]
        claimed = self.rows_claimed()[COUNTS_TABLE]
        by_key = {}
        # Rows past the last were never claimed: the BPF side counted those
        # keys as blind (PFT_BLIND_COUNTERS).
        for row in rows.rows(layout.ffi, "struct pft_count_row", claimed):
            # Not ready: being claimed right now, nothing counted in it yet.
            if not row.ready:
                continue
            key = (int(row.key.dev), int(row.key.ino), int(row.key.pid))
            c = row.counts
            got = by_key.get(key)
            if got is None:
                # Two CPUs that claimed one key at once made two rows: the
                # one the hash did not keep counts nothing, so they add up.
                comm = layout.ffi.string(c.comm, 16).decode("utf-8", "replace")
                got = by_key[key] = dict(zip(("dev", "ino", "pid"), key), comm=comm,
                                         **dict.fromkeys(layout.FILE_COUNTERS, 0))
            for name in layout.FILE_COUNTERS:
                got[name] += int(getattr(c, name))
        return list(by_key.values())

    def lost(self):
        """Events and faults not seen, per CPU: the ring buffer was full, a
        per-thread state could not be made, a return probe never ran (see
        blind())."""
        blind = self.mem["blind"]
        return [blind.u64(cpu * BLIND_STRIDE + BLIND_LOST) for cpu in range(self.ncpus)]

    def lost_by_reason(self):
        """{reason: count} for every reason of LOST_REASONS: what the BPF
        side could not count (blind()'s reasons, summed over CPUs) and the
        runs the kernel skipped (each may be a fault, or a part of one; a
        skipped return is also counted by the next entry of its thread,
        wp_return_missed, so the sum can count such a fault twice)."""
        blind = self.blind()
        return {reason: blind[reason] for reason in LOST_REASONS}

    def blind(self, skipped_by_program=None):
        """{reason: count} of what was not seen, summed over CPUs, plus
        "unfinished": faults whose return was still awaited when asked (a
        return probe that never ran, or a fault in flight at the end), and
        "skipped_by_kernel": the sum of skipped_by_program (read here when
        not given: a caller keeping both reads it once, so they agree)."""
        counts = self.mem["blind"].u64s()
        out = {name: sum(counts[cpu * BLIND_STRIDE + slot] for cpu in range(self.ncpus))
               for name, slot in BLIND_REASONS.items()}
        # Counted by the BPF side: task storage cannot be listed from here.
        out["unfinished"] = self.mem["inflight"].s64(0)
        if skipped_by_program is None:
            skipped_by_program = self.skipped_by_program()
        out["skipped_by_kernel"] = sum(skipped_by_program.values())
        return out

    def skipped_by_program(self):
        """{program: runs the kernel skipped} of the programs it skipped."""
        from pfntrace.bpfstats import fdinfo_skipped

        return {k: v for k, v in fdinfo_skipped(self.programs()).items() if v}

    def _unload(self):
        for m in self.mem.values():
            m.close()
        self.mem = {}
        if self.trampolines is not None:
            self.trampolines.close()
            self.trampolines = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def close(self):
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self._unload()

