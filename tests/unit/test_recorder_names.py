"""The recorder's names for files it could not name from /proc while they
were mapped: the kernel's names at the first fault (the names map), kept
for a file deleted (or unmounted) before the end; a bounded walk for one
renamed.  A finding must name its file (issue 35), never a bare dev:ino
when the kernel had the name."""

import os

from pfntrace.recorder import Recorder


def _key(path):
    st = os.stat(path)
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def _comps(path):
    """The names map's form: leaf first, "/" where the walk reached the
    root of the filesystem (here the root filesystem, which holds tmp)."""
    return list(reversed(path.strip("/").split("/"))) + ["/"]


class _Writer:
    def __init__(self):
        self.meta = {}

    def add_meta(self, meta):
        for k, v in meta.items():
            self.meta.setdefault(k, {}).update(v)


def _recorder(tmp_path, names):
    r = Recorder.__new__(Recorder)
    r.writer = _Writer()
    r.tracer = type("T", (), {"names": lambda self: names})()
    r.opt = type("O", (), {"mounts": [(str(tmp_path),)]})()
    return r


def test_deleted_and_renamed_files_are_named_as_at_the_fault(tmp_path):
    if os.stat(tmp_path).st_dev != os.stat("/").st_dev:
        import pytest
        pytest.skip("tmp is not on the root filesystem here: the names' root differs")
    kept, gone, moved, cut = (str(tmp_path / n) for n in ("kept", "gone", "moved", "cut"))
    for p in (kept, gone, moved, cut):
        open(p, "w").close()
    keys = {p: _key(p) for p in (kept, gone, moved, cut)}
    names = {keys[kept]: _comps(kept), keys[gone]: _comps(gone), keys[moved]: _comps(moved),
             keys[cut]: _comps(cut)[:2]}        # cut short: no "/" at the end
    os.unlink(gone)
    os.unlink(cut)
    os.rename(moved, moved + ".new")
    r = _recorder(tmp_path, names)
    r.files = {k: None for k in keys.values()}
    r._name_unresolved_files()
    assert r.files[keys[kept]] == kept
    assert r.files[keys[gone]] == gone              # the name it had at the fault
    assert r.files[keys[moved]] == moved + ".new"   # found where it went
    assert r.files[keys[cut]] is None               # no whole name: none made up
    written = r.writer.meta["files"]
    assert {v["path"] for v in written.values()} == {kept, gone, moved + ".new"}
