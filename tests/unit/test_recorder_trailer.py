"""The trailer's statx of each touched file: there, deleted, or unmounted."""

import os

from pfntrace.recorder import final_statx, mounted_devs

MOUNTINFO = """\
22 1 259:0 / /mnt/dax rw,relatime shared:1 - ext4 /dev/pmem0 rw,dax=always
23 1 8:1 /sub /srv/bind rw,relatime shared:2 - ext4 /dev/sda1 rw
24 1 0:25 / /proc rw,nosuid shared:3 - proc proc rw
"""


def test_mounted_devs_counts_every_mount_bind_mounts_too():
    assert mounted_devs(MOUNTINFO) == {(259, 0), (8, 1), (0, 25)}
    assert mounted_devs("garbage\n\n1 2 x:y\n") == set()


def test_final_statx_there_deleted_unmounted(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    other = tmp_path / "g"
    other.write_bytes(b"")
    st = os.stat(path)
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    here = {key[:2]}
    got = final_statx(key, str(path), here)
    assert got["exists"] is True and got["mtime_ns"] == st.st_mtime_ns and got["size"] == 1
    assert "unmounted" not in got
    path.unlink()
    # Gone from a filesystem still mounted: deleted.
    assert final_statx(key, str(path), here) == {"path": str(path), "exists": False}
    # Its filesystem mounted nowhere any more (a lazy unmount): out of reach.
    assert final_statx(key, str(path), set()) == {"path": str(path), "exists": False,
                                                  "unmounted": True}
    # Another inode at the path is not the file.
    assert final_statx(key, str(other), here)["exists"] is False
