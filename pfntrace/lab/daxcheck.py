"""Inside the lab guest: prove a mount really is DAX (statx STATX_ATTR_DAX).

Mount options are not proof: xfs mounted with dax=always on a device without
DAX support comes up without DAX and says nothing.  Create a file and ask
statx; exit non-zero with one line when the file is not DAX.
"""

import os
import sys

from pfntrace.kernel.statx import statx


def main(mount):
    probe = os.path.join(mount, ".pfntrace-daxcheck")
    with open(probe, "wb") as f:
        f.write(b"\0" * 4096)
    try:
        dax = statx(probe)["dax"]
    finally:
        os.unlink(probe)
    if dax is not True:
        print("%s is mounted but its files are not DAX (statx STATX_ATTR_DAX %s)"
              % (mount, "unset" if dax is False else "unknown"))
        return 1
    print("%s: DAX" % mount)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
