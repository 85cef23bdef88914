"""Where the lab keeps what it fetches and builds (kernels, vmlinux images,
bug modules, pmem backing files, runs), and its one error type: the base
every other lab module builds on."""

import os

CACHE = os.environ.get(
    "PFNTRACE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "pfntrace")
)


class LabError(Exception):
    """A lab failure with a one-line explanation."""
