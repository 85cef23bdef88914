"""kread.h's spans, compiled with the host's C compiler over each real layout.

The BPF program reads several fields of a struct with one
bpf_probe_read_kernel() into a stack copy and picks them out there
(SPAN_READ / SPAN_GET).  Here the same macros run in a small C program whose
bpf_probe_read_kernel() is memcpy(), over a fake struct whose every byte is
its own offset: each field picked out of the span must equal the field read
directly at its offset, on the lab kernels' layouts and this host's.  A layout
whose fields lie too far apart must not compile."""

import os
import re
import shutil
import subprocess

import pytest

from test_offsets import LAB_KERNELS

from pfntrace.kernel import offsets
from pfntrace.kernel.btf import Btf
from pfntrace.kernel.offsets import bpf_defines
from pfntrace.tracer import BPF_DIR

# (span, the fields it covers, each with the width the BPF program reads it at)
SPANS = {
    "VMF": (("VMF_VMA", 8), ("VMF_PGOFF", 8), ("VMF_ADDRESS", 8), ("VMF_FLAGS", 4)),
    "VMA": (("VMA_VM_FLAGS", 8), ("VMA_VM_OPS", 8), ("VMA_VM_FILE", 8)),
    "VMOPS": (("VMOPS_FAULT", 8), ("VMOPS_HUGE_FAULT", 8), ("VMOPS_MAP_PAGES", 8),
              ("VMOPS_PAGE_MKWRITE", 8), ("VMOPS_PFN_MKWRITE", 8)),
    "INODE": (("INODE_I_FLAGS", 4), ("INODE_I_SB", 8), ("INODE_I_INO", 8)),
    "ITIMES": (("INODE_MTIME_SEC", 8), ("INODE_MTIME_NSEC", 4), ("INODE_CTIME_SEC", 8),
               ("INODE_CTIME_NSEC", 4)),
    "KSTAT": (("KSTAT_MTIME_SEC", 8), ("KSTAT_MTIME_NSEC", 4), ("KSTAT_CTIME_SEC", 8),
              ("KSTAT_CTIME_NSEC", 4)),
    "TKC": (("TKC_SEQ", 4), ("TKC_XTIME_SEC", 8), ("TKC_XTIME_NSEC", 8), ("TKC_SHIFT", 4),
            ("TKC_OFFS_REAL", 8)),
}

PROGRAM = r"""
#include <stdio.h>
#include <string.h>
typedef unsigned long long u64;
typedef unsigned int u32;
#define bpf_probe_read_kernel(dst, n, src) (memcpy((dst), (src), (n)), 0)
#include "kread.h"

static unsigned char fake[4096];	/* byte i holds i & 0xff, i >> 8 mixed in */

#define CHECK(span, field, type) do {						\
	type got = 0, want = 0;							\
	SPAN_BUF(buf, span##_LO, span##_HI);					\
	SPAN_READ(buf, fake, span##_LO, span##_HI);				\
	SPAN_GET(got, buf, span##_LO, field);					\
	memcpy(&want, fake + (field), sizeof(want));				\
	printf("%s %s %d %d %d\n", #span, #field, (int)(span##_LO),		\
	       (int)(span##_HI), got == want);					\
} while (0)

int main(void)
{
	for (int i = 0; i < (int)sizeof(fake); i++)
		fake[i] = (unsigned char)(i * 7 + (i >> 8));
%(checks)s
	return 0;
}
"""


def compiler():
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler on this machine to run kread.h's macros")
    return cc


def run_spans(defines, tmp_path):
    """{(span, field): (lo, hi, equal)} from the compiled program, or the
    compiler's error text."""
    checks = "\n".join("\tCHECK(%s, %s, %s);" % (span, field, "u64" if width == 8 else "u32")
                       for span, fields in SPANS.items() for field, width in fields)
    src = tmp_path / "spans.c"
    src.write_text(PROGRAM.replace("%(checks)s", checks))
    exe = tmp_path / "spans"
    flags = ["-D%s=%d" % (k, v) for k, v in sorted(defines.items())]
    built = subprocess.run([compiler(), "-O1", "-I" + BPF_DIR, *flags, "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    if built.returncode:
        return built.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        span, field, lo, hi, equal = line.split()
        rows[(span, field)] = (int(lo), int(hi), equal == "1")
    return rows


def layouts():
    found = dict(LAB_KERNELS)
    host = "/sys/kernel/btf/vmlinux"
    if os.path.exists(host):
        found["host"] = bpf_defines(Btf.load(host))
    return found


@pytest.mark.parametrize("name", sorted(layouts()))
def test_each_field_read_through_its_span_equals_a_direct_read(name, tmp_path):
    defines = layouts()[name]
    rows = run_spans(defines, tmp_path)
    assert isinstance(rows, dict), rows
    assert len(rows) == sum(len(f) for f in SPANS.values())
    for (span, field), (lo, hi, equal) in rows.items():
        off = defines[field]
        assert lo <= off and off + 8 <= hi, (span, field, lo, hi)
        assert hi - lo <= 192, (span, hi - lo)
        assert equal, (name, span, field)
    # One span per struct: a bound is a field's own offset, not slack.
    for span, fields in SPANS.items():
        offs = [defines[f] for f, _ in fields]
        lo, hi = rows[(span, fields[0][0])][:2]
        assert (lo, hi) == (min(offs), max(offs) + 8), span


def test_the_spans_save_reads_on_6_12():
    """The reason for spans: on 6.12 a fault's fields from vm_fault,
    vm_area_struct, vm_operations_struct and the inode fit in five reads."""
    d = LAB_KERNELS["6.12"]
    sizes = {span: max(d[f] for f, _ in fields) + 8 - min(d[f] for f, _ in fields)
             for span, fields in SPANS.items()}
    assert sizes == {"VMF": 48, "VMA": 104, "VMOPS": 48, "INODE": 60, "ITIMES": 32,
                     "KSTAT": 32, "TKC": 160}


def test_fields_too_far_apart_do_not_compile(tmp_path):
    defines = dict(LAB_KERNELS["6.12"])
    defines["VMA_VM_FILE"] = 400
    err = run_spans(defines, tmp_path)
    assert isinstance(err, str) and "vm_flags, vm_ops and vm_file are too far apart" in err


def test_a_sequence_count_after_the_fields_it_guards_does_not_compile(tmp_path):
    defines = dict(LAB_KERNELS["6.12"])
    defines["TKC_SEQ"] = 64
    err = run_spans(defines, tmp_path)
    assert isinstance(err, str) and "do not follow its sequence count" in err


# LOAD32(dst, base, FIELD) / LOAD64(...) / READ32(direct, dst, base, FIELD):
# the fentry/fexit programs' direct loads.
DIRECT_LOAD = re.compile(r"\b(?:LOAD|READ)(32|64)\([^;]*?,\s*([A-Z][A-Z0-9_]+)\)")


def direct_loads():
    with open(os.path.join(BPF_DIR, "pfntrace.bpf.c")) as f:
        return sorted(set((field, int(bits) // 8) for bits, field in DIRECT_LOAD.findall(f.read())))


def member_size(btf, macro):
    """The size of the member an offset macro names, on this kernel's layout."""
    fixed = {m: (struct, member) for m, struct, member in offsets._FIXED_FIELDS}
    if macro in fixed:
        return btf.member_size(*fixed[macro])
    owner, which, part = macro.lower().split("_")     # INODE_MTIME_NSEC
    if owner == "inode" and btf.has_member("inode", "i_%s_%s" % (which, part)):
        return btf.member_size("inode", "i_%s_%s" % (which, part))
    return btf.member_size("timespec64", "tv_" + part)


def test_direct_loads_fit_their_members_as_the_verifier_demands():
    """The verifier checks a load through a BTF-typed pointer against the
    member it hits: a pointer or u64 loaded whole, a narrower load within
    the member.  A u32 load of an 8-byte member is only right for a
    timestamp's nanoseconds (below 10^9: the low half, x86-64)."""
    host = "/sys/kernel/btf/vmlinux"
    if not os.path.exists(host):
        pytest.skip("this kernel has no BTF to check the direct loads' widths against")
    btf = Btf.load(host)
    loads = direct_loads()
    assert {f for f, _ in loads} >= {"VMF_VMA", "VMA_VM_FILE", "FILE_F_INODE", "INODE_I_FLAGS",
                                     "INODE_MTIME_NSEC", "SB_S_DEV", "KSTAT_CTIME_NSEC"}
    for field, width in loads:
        size = member_size(btf, field)
        assert width <= size, (field, width, size)
        if width < size:
            assert field.endswith("_NSEC"), (field, width, size)
