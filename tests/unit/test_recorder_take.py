"""The recorder learns a drained block a column at a time: the same names,
processes, files and late handlers as one event at a time would, with
/proc, kallsyms and the tracer replaced by fakes that log every call."""

import random

from pfntrace import decode, layout, procinfo, recorder

HANDLER = layout.const("PFT_EV_HANDLER")
WP = layout.const("PFT_EV_WP")
DAX = layout.const("PFT_EV_DAX_FAULT")


class FakeWriter:
    def __init__(self):
        self.events = b""
        self.meta = []

    def add_events(self, buf):
        self.events += bytes(buf)

    def add_meta(self, meta):
        self.meta.append(meta)


class FakeTracer:
    def __init__(self, attached):
        self.attached = list(attached)
        self.late = []

    def attach_handler(self, name):
        self.late.append(name)
        self.attached.append(("kprobe", name))
        return True


def make_recorder(monkeypatch, calls, gone_pids):
    def proc_info(pid):
        calls.append(("proc", pid))
        return None if pid in gone_pids else {"comm": "c%d" % pid, "cmdline": ""}

    def maps_paths(pid):
        calls.append(("maps", pid))
        return {(259, 0, ino): "/mnt/dax/f%d" % ino for ino in range(pid % 3, 9, 2)}

    monkeypatch.setattr(procinfo, "proc_info", proc_info)
    monkeypatch.setattr(procinfo, "maps_paths", maps_paths)
    opt = recorder.RecordOptions(output="-", command=["storm", "x"])
    # Handler events come from attached probes only: their functions are
    # in the tracer's list (0x1000, 0x2000, 0x4000 below).
    attached = [("kprobe", "ext4_dax_fault"), ("kprobe", "fn_2000"), ("kprobe", "fn_4000")]
    rec = recorder.Recorder(FakeTracer(attached), {}, opt)
    rec.writer = FakeWriter()
    rec.child = 7
    rec._symbol = lambda addr: calls.append(("sym", addr)) or (
        "ext4_dax_fault" if addr == 0x1000 else "fn_%x" % addr)
    return rec


def reference_take(rec, buf):
    """What the recorder did one event at a time (before the columns)."""
    rec.writer.add_events(buf)
    new_meta = {}
    for ev in decode.iter_events(buf):
        rec.events += 1
        t = ev["type"]
        rec.by_type[t] = rec.by_type.get(t, 0) + 1
        for name in ("ops_pfn_mkwrite", "ops_page_mkwrite"):
            addr = ev[name]
            if addr and addr not in rec.symbols:
                rec._discover(addr, ev["ts_ns"], new_meta)
        if t == HANDLER and ev["handler"] not in rec.symbols:
            rec._name(ev["handler"], new_meta)
        pid = ev["pid"]
        if pid not in rec.procs:
            info = procinfo.proc_info(pid)
            if info and not info["cmdline"] and pid == rec.child:
                info["cmdline"] = " ".join(rec.opt.command)
            rec.procs[pid] = info
            if info:
                new_meta.setdefault("procs", {})[str(pid)] = info
        key = (*procinfo.split_kernel_dev(ev["dev"]), ev["ino"])
        if rec.files.get(key) is None and (key, pid) not in rec._looked_up:
            rec._looked_up.add((key, pid))
            path = procinfo.maps_paths(pid).get(key)
            rec.files[key] = path
            if path:
                new_meta.setdefault("files", {})[procinfo.file_key(*key)] = {"path": path}
    if new_meta:
        rec.writer.add_meta(new_meta)


def random_block(rnd, n):
    dev = (259 << 20) | 0
    out = b""
    for i in range(n):
        t = rnd.choice((WP, WP, HANDLER, DAX))
        ops = rnd.choice((0, 0x1000, 0x1000, 0x2000, 0x3000))
        out += layout.encode(type=t, ts_ns=1000 + i, pid=rnd.choice((7, 8, 9, 10)),
                             dev=rnd.choice((dev, dev, (8 << 20) | 1)), ino=rnd.randrange(9),
                             handler=rnd.choice((0x1000, 0x2000, 0x4000)) if t == HANDLER else 0,
                             ops_pfn_mkwrite=ops,
                             ops_page_mkwrite=rnd.choice((ops, 0, 0x5000)))
    return out


def state(rec, calls):
    return (rec.events, rec.by_type, rec.files, rec.procs, rec.symbols, rec.late,
            rec._looked_up, rec.tracer.late, sorted(calls),
            rec.writer.events, [sorted_meta(m) for m in rec.writer.meta])


def sorted_meta(meta):
    return {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in meta.items()}


def test_block_take_learns_what_event_by_event_did(monkeypatch):
    for seed in range(20):
        rnd = random.Random(seed)
        blocks = [random_block(rnd, rnd.randrange(1, 60)) for _ in range(4)]
        got_calls, want_calls = [], []
        got = make_recorder(monkeypatch, got_calls, gone_pids={9})
        for b in blocks:
            got._take(b)
        got_state = state(got, got_calls)
        want = make_recorder(monkeypatch, want_calls, gone_pids={9})
        for b in blocks:
            reference_take(want, b)
        assert got_state == state(want, want_calls), seed


def test_a_late_handler_is_attached_once_from_its_first_event(monkeypatch):
    calls = []
    rec = make_recorder(monkeypatch, calls, gone_pids=set())
    block = (layout.encode(type=DAX, ts_ns=5, pid=7, dev=1, ino=1)
             + layout.encode(type=WP, ts_ns=6, pid=7, dev=1, ino=1, ops_page_mkwrite=0x3000)
             + layout.encode(type=WP, ts_ns=9, pid=7, dev=1, ino=1, ops_pfn_mkwrite=0x3000))
    rec._take(block)
    rec._take(block)
    assert rec.tracer.late == ["fn_3000"]
    assert rec.late == [{"hook": "fn_3000", "attached": True, "first_seen_ns": 6}]
    assert rec.events == 6 and rec.by_type == {DAX: 2, WP: 4}
    # The child had exited: its command line comes from the command run.
    assert rec.procs[7]["cmdline"] == "storm x"
