"""`pfntrace record` on a real DAX mount: exact counts, checked against the
kernel's own fs_dax tracepoints read from tracefs.

One recording covers every workload (one bcc compile per target), each on a
file of its own; the tests then look at one file each.  There are two such
recordings per target, one per attach mode (guest.ATTACH_MODES): every
count must come out the same whether the hooks are kprobes or trampolines.
The kprobe one is also made with --every-event, so that each count the
kernel otherwise keeps per file (retried attempts, fs_dax tracepoints) is
checked as events too.
"""

import os
import shlex
import stat
import time

from daxtrace import DaxTrace
from guest import (ATTACH_MODES, FS, PFN_MKWRITE_HANDLER, PFNTRACE, WORKLOAD, attach_env,
                   check_mechanisms, guest_fixture, mechanisms, run)

N = 23            # pages: prime, so no count comes out right by accident
HUGE_PAGES = 1024  # 4 MiB: two 2 MiB extents where the allocator aligns them

WORKLOADS = [
    # file name, workload, pages
    ("rtw", "read-then-write", N),
    ("wsw", "write-sync-write", N),
    ("private", "private-write", N),
    ("first", "first-touch-write", N),
    ("huge", "read-then-write", HUGE_PAGES),
    ("sync", "map-sync-write", N),
    # fio-style: 64 pages, a seeded random mix of reads, writes, msync.
    ("random", "random-read-write", 64),
]


class Run:
    """A finished recording of all workloads, and the kernel's own counts."""

    def __init__(self, workdir, attach, every_event):
        from pfntrace.correlate import analyse
        from pfntrace.recording import Recording

        self.dir = workdir
        self.output = os.path.join(workdir, "all.pft")
        script = []
        for name, workload, pages in WORKLOADS:
            script.append(" ".join(shlex.quote(a) for a in
                                   WORKLOAD + [workload, self.path(name), str(pages)]))
        # generic/080: mmap-read then mmap-write one page with xfs_io.
        # generic/080: an hour-old file, so its one fault must move mtime;
        # rtw's too, so its first fault must (a file made just before could
        # still be in the same clock tick as that fault: CURRENT).
        self.prepare_old("g080", 1)
        self.prepare_old("rtw", N)
        script.append("xfs_io -c 'mmap 0 4k' -c 'mread 0 4k' -c 'mwrite 0 4k' %s"
                      % shlex.quote(self.path("g080")))
        with DaxTrace() as trace:
            self.started = time.time_ns()
            self.proc = run(PFNTRACE + ["record", "--bpf-stats", "-o", self.output]
                            + (["--every-event"] if every_event else [])
                            + ["--", "sh", "-ec", "\n".join(script)], env=attach_env(attach))
            self.kernel_counts, self.kernel_pgoffs = trace.counts()
        self.recording = Recording.open(self.output)
        self.analysis = analyse(self.recording, keep_faults=True)
        self.events = list(self.recording.iter_events())
        self.ino = {name: os.stat(self.path(name)).st_ino
                    for name, _, _ in WORKLOADS + [("g080", None, None)]}

    def path(self, name):
        return os.path.join(self.dir, name)

    def prepare_old(self, name, pages):
        """A file of pages allocated pages, its timestamps an hour old (the
        workloads use a file of the right size as it is)."""
        with open(self.path(name), "wb") as f:
            f.write(b"\0" * 4096 * pages)
            os.fsync(f.fileno())
        past = time.time_ns() - 3600 * 10**9
        os.utime(self.path(name), ns=(past, past))

    def file(self, name):
        ino = self.ino[name]
        found = [f for f in self.analysis.files if f.ino == ino]
        assert len(found) <= 1
        return found[0] if found else None

    def kinds(self, name):
        f = self.file(name)
        return f.kind_counts() if f else {}

    def faults(self, name, kind):
        return [x for x in self.analysis.faults if x.file.ino == self.ino[name] and x.kind == kind]

    def kernel(self, name, what):
        return self.kernel_counts[(self.ino[name], what)]


@guest_fixture(scope="module", params=ATTACH_MODES)
def rec(request):
    from guest import MOUNT

    workdir = os.path.join(MOUNT, "record")
    run(["rm", "-rf", workdir])
    os.makedirs(workdir)
    r = Run(workdir, request.param, every_event=request.param == "kprobe")
    r.attach = request.param
    r.every_event = request.param == "kprobe"
    return r


def test_the_plan_says_how_each_hook_was_attached(rec):
    plan = rec.recording.header["plan"]
    check_mechanisms(plan, rec.attach)
    # ...and that is how they were attached: no fallback at load time.
    planned = {"%s %s" % (m, h) for (h, _k), m in mechanisms(plan).items()}
    assert set(rec.recording.trailer["mechanisms"]) == planned


def test_record_succeeds_and_keeps_exit_code(rec):
    assert rec.proc.returncode == 0, rec.proc.stderr
    assert stat.S_IMODE(os.stat(rec.output).st_mode) == 0o600
    assert not rec.recording.truncated
    assert rec.recording.trailer["exit_code"] == 0
    assert rec.recording.trailer["lost"] == 0
    # The recorder's own CPU time while recording: something, and less than
    # the whole run took on its CPUs.
    cpu = rec.recording.trailer["recorder_cpu_ns"]
    assert 0 < cpu < rec.recording.trailer["duration_ns"] * os.cpu_count()


def test_bpf_stats_count_the_probes_that_made_the_events(rec):
    """record --bpf-stats: the kernel counted each program's runs, and the
    do_wp_page and handler entries ran at least once per event they made
    (they also run for faults not traced: other tasks, anonymous memory)."""
    times = rec.recording.trailer["bpf_run_times"]
    by_type = rec.recording.trailer["events_by_type"]
    wp = [n for n in ("wp_entry", "kfunc__do_wp_page") if times.get(n, [0, 0])[1]]
    assert len(wp) == 1, times
    assert times[wp[0]][1] >= by_type["1"] > 0, (times, by_type)
    # Handlers: one kprobe program, or one trampoline program per handler
    # ("handler_fentry ext4_dax_fault": --attach auto on Debian's kernels
    # that do not preempt).
    entries = [n for n in times if n == "handler_entry" or n.startswith("handler_fentry ")]
    if rec.attach == "kprobe" or rec.recording.header["plan"]["preemption"]["preemptible"]:
        assert entries == ["handler_entry"], times
    else:
        assert entries and all(n.startswith("handler_fentry ") for n in entries), times
    assert sum(times[n][1] for n in entries) >= by_type["2"] > 0, (times, by_type)
    assert all(ns > 0 for ns, runs in times.values() if runs), times
    line = [x for x in rec.proc.stderr.splitlines() if "BPF run time per probe run" in x]
    assert len(line) == 1 and wp[0] in line[0], rec.proc.stderr


def test_a_read_then_write_is_one_pfn_mkwrite_per_page(rec):
    faults = rec.faults("rtw", "pfn_mkwrite")
    assert len(faults) == N
    assert sorted(f.pgoff for f in faults) == list(range(N))
    assert rec.kinds("rtw")["fault"] == 0
    assert rec.file("rtw").path == rec.path("rtw")
    # The handler each do_wp_page called, folded into its event (no event
    # of its own), named from its address by kallsyms at record time: one
    # call per fault, as the kernel's fs_dax tracepoints count them
    # (test_f), and no handler event left inside do_wp_page.
    from pfntrace import layout

    folded = layout.const("PFT_F_HANDLER_FOLDED")
    symbols = rec.recording.meta["symbols"]
    calls = [symbols["0x%x" % e["handler"]] for e in rec.events
             if e["type"] == 1 and e["ino"] == rec.ino["rtw"] and e["flags"] & folded]
    assert calls == [PFN_MKWRITE_HANDLER[FS]] * N
    assert rec.file("rtw").handler_calls == N
    assert not [e for e in rec.events if e["type"] == 2 and e["flags"] & layout.const("PFT_F_IN_WP")
                and e["ino"] == rec.ino["rtw"]]
    for f in faults:
        assert f.mtime_before > 0 and f.mtime_after >= f.mtime_before
        assert f.verdict in ("UPDATED", "CURRENT"), f.detail
    # The first write fault after a read must move mtime: it was set an
    # hour before (prepare_old).
    first = min(faults, key=lambda f: f.ts)
    assert first.verdict == "UPDATED"


def test_b_msync_reprotects_and_the_next_write_faults_again(rec):
    kinds = rec.kinds("wsw")
    # N first-touch writes through ->fault, then after msync(MS_SYNC) N
    # write-protect faults through ->pfn_mkwrite.
    assert kinds["fault"] == N
    assert kinds["pfn_mkwrite"] == N
    assert rec.file("wsw").write_faults == 2 * N
    assert rec.file("wsw").reprotect_pages == N


def test_c_map_private_writes_are_not_pfn_mkwrite(rec):
    kinds = rec.kinds("private")
    assert kinds.get("pfn_mkwrite", 0) == 0
    assert rec.file("private") is None or rec.file("private").write_faults == 0


def test_d_first_touch_write_goes_through_fault(rec):
    kinds = rec.kinds("first")
    assert kinds["fault"] == N
    assert kinds["pfn_mkwrite"] == 0


def test_e_pmd_faults_match_the_kernel(rec):
    kinds = rec.kinds("huge")
    pmd_kernel = rec.kernel("huge", "pmd_write")
    assert kinds["pmd"] == pmd_kernel
    # Every page was written after being read: 2 MiB at a time where the
    # kernel made PMDs, 4 KiB at a time where it fell back.
    assert kinds["pfn_mkwrite"] == rec.kernel("huge", "pte_mkwrite")
    assert kinds["pmd"] * 512 + kinds["pfn_mkwrite"] == HUGE_PAGES
    if FS == "ext4":
        # Seen on both lab kernels: a fresh ext4 gives a 4 MiB file two
        # aligned 2 MiB extents.
        assert kinds["pmd"] == 2


def test_f_counts_equal_the_kernel_tracepoints(rec):
    for name, _, _ in WORKLOADS:
        kinds = rec.kinds(name)
        assert kinds.get("pfn_mkwrite", 0) == rec.kernel(name, "pte_mkwrite"), name
        assert kinds.get("fault", 0) == rec.kernel(name, "pte_write"), name
        assert kinds.get("pmd", 0) == rec.kernel(name, "pmd_write"), name
        f = rec.file(name)
        assert (f.reprotect_pages if f else 0) == rec.kernel(name, "reprotect_pages"), name
        assert (f.map_sync if f else 0) == rec.kernel(name, "map_sync"), name
    pgoffs = sorted(f.pgoff for f in rec.faults("rtw", "pfn_mkwrite"))
    assert pgoffs == rec.kernel_pgoffs[rec.ino["rtw"]]


def test_random_read_write_matches_the_kernel_and_is_never_missed(rec):
    kinds = rec.kinds("random")
    # Whatever the kernel made of the random mix: the same, fault for fault.
    assert kinds["pfn_mkwrite"] == rec.kernel("random", "pte_mkwrite") > 0
    assert kinds["fault"] == rec.kernel("random", "pte_write") > 0
    assert rec.file("random").reprotect_pages == rec.kernel("random", "reprotect_pages") > 0
    verdicts = rec.file("random").verdict_counts()
    assert verdicts["UPDATED"] + verdicts["CURRENT"] == rec.file("random").write_faults, verdicts


def test_map_sync_faults_are_seen(rec):
    # MAP_SYNC write faults into allocated blocks still need the metadata
    # committed: the kernel says so with dax_insert_pfn_mkwrite.
    assert rec.file("sync").map_sync == rec.kernel("sync", "map_sync")
    assert rec.kinds("sync")["fault"] == N


def test_g_generic_080_is_one_pfn_mkwrite_fault(rec):
    faults = rec.faults("g080", "pfn_mkwrite")
    assert len(faults) == 1
    assert faults[0].pgoff == 0
    # The file's mtime was an hour old: the one fault must move it.
    assert faults[0].verdict == "UPDATED"
    assert os.stat(rec.path("g080")).st_mtime_ns >= rec.started - 10**7


def test_no_missed_timestamps_in_any_workload(rec):
    verdicts = rec.analysis.verdict_counts()
    assert verdicts.get("MISSED", 0) == 0
    assert verdicts.get("NO_NOTIFIER", 0) == 0
    # Every fault carried readable timestamps (the BTF offsets are right).
    assert verdicts.get("UNDECIDED", 0) == 0


def test_the_kernel_counts_what_is_no_write_fault_and_sends_one_event_a_fault(rec):
    """Without --every-event, what only adds to a file's counters is counted
    in the kernel (COUNTS): no fs_dax event and no retried do_wp_page in
    the stream.  Either way every count equals the kernel's tracepoints."""
    from pfntrace import layout

    types = {e["type"] for e in rec.events}
    dax_types = {layout.const(n) for n in ("PFT_EV_DAX_FAULT", "PFT_EV_DAX_WRITEBACK",
                                           "PFT_EV_DAX_MKWRITE")}
    # The fs_dax events these workloads make, by the kernel's own count.
    made = {layout.const("PFT_EV_DAX_FAULT"), layout.const("PFT_EV_DAX_WRITEBACK")}
    if rec.kernel("sync", "map_sync"):
        made.add(layout.const("PFT_EV_DAX_MKWRITE"))
    retried = [e for e in rec.events if e["type"] == layout.const("PFT_EV_WP")
               and e["ret"] & layout.const("PFT_VM_FAULT_RETRY")]
    assert rec.recording.header["every_event"] is rec.every_event
    if rec.every_event:
        assert types & dax_types == made and not rec.recording.file_counts
    else:
        assert not types & dax_types and not retried
        assert {c["ino"] for c in rec.recording.file_counts} >= {
            rec.ino[name] for name in ("rtw", "wsw", "first", "huge", "sync", "random")}
    for name, _, _ in WORKLOADS:
        f = rec.file(name)
        k = lambda what: rec.kernel(name, what)  # noqa: E731
        pte = k("pte_read") + k("pte_write") + k("pte_mkwrite")
        pmd = k("pmd_read") + k("pmd_write") + k("pmd_fallback")
        assert (f.dax_pte_faults if f else 0) == pte, name
        assert (f.dax_pmd_faults if f else 0) == pmd, name
    # The per-VMA lock (6.4+) gives up once on each write-protect fault
    # whose vm_ops have no ->map_pages (mm/memory.c vmf_can_call_fault()):
    # ext4's DAX vm_ops have none, xfs's (one for DAX and page cache) do.
    # One retried attempt per ->pfn_mkwrite fault, or none.
    per_vma_lock = bool(rec.recording.header["plan"]["offsets"].get("VMF_FLAG_VMA_LOCK"))
    assert rec.file("rtw").retries == (N if per_vma_lock and FS == "ext4" else 0)
    assert rec.file("rtw").wp_entries == N + rec.file("rtw").retries
    assert rec.file("rtw").reprotects == 0
