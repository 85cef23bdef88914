"""Naming files from the kernel's names map and from mountinfo."""

from pfntrace import procinfo

MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuchfield - sysfs sysfs rw
30 1 259:0 / /mnt/dax rw,relatime - ext4 /dev/pmem0 rw,dax=always
31 1 259:0 /sub /mnt/bind rw,relatime - ext4 /dev/pmem0 rw,dax=always
32 1 8:1 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
"""


def test_mount_points_by_device_root_mounts_only():
    points = procinfo.mount_points(MOUNTINFO)
    assert points == {(0, 21): "/sys", (259, 0): "/mnt/dax", (8, 1): "/mnt/with space"}


def test_path_from_names_reaching_the_root():
    comps = ["resource2", "0000:00:05.0", "pci0000:00", "devices", "/"]
    assert procinfo.path_from_names(comps, "/sys") == \
        "/sys/devices/pci0000:00/0000:00:05.0/resource2"
    assert procinfo.path_from_names(["f", "/"], "/mnt/dax") == "/mnt/dax/f"
    assert procinfo.path_from_names(["f", "/"], None) == "/f"


def test_path_from_names_cut_short_says_so():
    comps = ["f", "e", "d", "c", "b", "a"]
    assert procinfo.path_from_names(comps, "/mnt/dax") == "/mnt/dax/.../a/b/c/d/e/f"
    assert procinfo.path_from_names([], "/mnt/dax") is None


def test_kernel_dev_split():
    assert procinfo.split_kernel_dev((259 << 20) | 3) == (259, 3)
