"""What the recorder asks once per block of events: handler names, late
handlers, processes and file paths, each once, from the block's columns."""

from pfntrace import layout, procinfo, recorder

C = layout.const
WP, HANDLER, DAX = C("PFT_EV_WP"), C("PFT_EV_HANDLER"), C("PFT_EV_DAX_FAULT")
DEV = (259 << 20) | 3
FS_HANDLER, BUG_HANDLER = 0xffffffffc0a01230, 0xffffffffc0b00010


class Writer:
    def __init__(self):
        self.events, self.meta = b"", []

    def add_events(self, buf):
        self.events += bytes(buf)

    def add_meta(self, meta):
        self.meta.append(meta)


def test_take_asks_once_per_handler_process_and_file(monkeypatch):
    asked = {"proc": [], "maps": [], "discover": []}
    order = []
    monkeypatch.setattr(procinfo, "proc_info", lambda pid: asked["proc"].append(pid) or
                        order.append("proc") or {"comm": "w%d" % pid, "cmdline": "w"})
    monkeypatch.setattr(procinfo, "maps_paths", lambda pid: asked["maps"].append(pid) or
                        order.append("maps") or
                        ({(259, 3, 12): "/mnt/dax/f"} if pid == 100 else {}))
    rec = recorder.Recorder(tracer=None, plan={}, options=None)
    rec.writer = Writer()
    rec._symbol = lambda addr: order.append("name") or \
        {FS_HANDLER: "ext4_dax_fault"}.get(addr, "pftbug_noop")
    rec._discover = lambda addr, ts, meta: asked["discover"].append((addr, ts)) or \
        rec._name(addr, meta)
    first = [layout.encode(type=WP, ts_ns=10 + i, pid=100, dev=DEV, ino=12,
                           handler=FS_HANDLER, ops_pfn_mkwrite=FS_HANDLER) for i in range(3)]
    first += [layout.encode(type=DAX, ts_ns=20, pid=100, dev=DEV, ino=13),
              layout.encode(type=HANDLER, ts_ns=30, pid=200, dev=DEV, ino=12,
                            handler=FS_HANDLER, ops_page_mkwrite=BUG_HANDLER),
              layout.encode(type=WP, ts_ns=40, pid=200, dev=DEV, ino=12,
                            ops_pfn_mkwrite=BUG_HANDLER)]
    rec._take(b"".join(first))
    assert rec.events == 6 and rec.by_type == {WP: 4, DAX: 1, HANDLER: 1}
    # /proc first, while the processes and their mounts are still there:
    # naming a handler may read all of kallsyms (seconds under TCG).
    assert order.index("name") > max(i for i, w in enumerate(order) if w != "name")
    assert rec.writer.events == b"".join(first)
    # The filesystem's handler named from the first event; the unknown
    # ->page_mkwrite probed from the time its first event began.
    assert rec.symbols == {FS_HANDLER: "ext4_dax_fault", BUG_HANDLER: "pftbug_noop"}
    assert asked["discover"] == [(BUG_HANDLER, 30)]
    assert asked["proc"] == [100, 200]
    # Each (file, process) once, until a process names the file.
    assert asked["maps"] == [100, 100] and rec.files == {
        (259, 3, 12): "/mnt/dax/f", (259, 3, 13): None}
    assert rec.writer.meta[0]["files"] == {"259:3:12": {"path": "/mnt/dax/f"}}
    assert rec.writer.meta[0]["procs"]["200"]["comm"] == "w200"
    # A second block asks nothing again.
    rec._take(b"".join(first))
    assert rec.events == 12 and rec.by_type[WP] == 8
    assert (len(asked["proc"]), len(asked["maps"]), len(asked["discover"])) == (2, 2, 1)
    assert len(rec.writer.meta) == 1


def test_distinct_rows_are_those_of_a_dict_whatever_the_batch():
    """The memcmp path (every event alike) and the general one give the
    rows dict.fromkeys gives, in the same order; 0 is a value like any."""
    import array

    def col(code, values):
        return memoryview(array.array(code, values))

    cases = [
        ([7] * 5, [0] * 5, [100] * 5),              # one process, one file
        ([7] * 5, [12, 12, 13, 12, 13], [100] * 5),  # two files
        ([7, 8, 7, 8, 7], [0] * 5, [1, 1, 2, 2, 1]),
        ([], [], []),
    ]
    for devs, inos, pids in cases:
        columns = (col("I", devs), col("Q", inos), col("I", pids))
        assert recorder._distinct(*columns) == list(dict.fromkeys(zip(devs, inos, pids)))
    assert recorder._one_value(col("Q", [0, 0, 0])) == 0
    assert recorder._one_value(col("Q", [0, 1 << 40, 0])) is None
    assert recorder._one_value(col("Q", [])) is None
