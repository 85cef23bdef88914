"""Both implementations of the rules against one table (verdict_spec.py):
bpf/verdict.h compiled for user space with cffi, and pfntrace/verdict.py."""

import importlib.util

import cffi
import pytest

from pfntrace import decode, layout, verdict
from pfntrace.tracer import BPF_DIR

from verdict_spec import CASES, INVISIBLE_CASES, PMD_ORDER, PUD_ORDER

IDS = [c[0] for c in CASES]

_SHIM = r"""
#include <linux/types.h>
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#include "pfntrace.h"
#include "verdict.h"
int spec_classify(const struct pft_event *ev, __u32 pmd, __u32 pud)
{ return pft_classify(ev, pmd, pud); }
int spec_judge(const struct pft_event *ev, int kind) { return pft_judge(ev, kind); }
int spec_invisible(const struct pft_event *f, const struct pft_event *o)
{ return pft_invisible(f, o); }
int spec_handler_uncounted(__u32 fault_flags, __u32 arg, __u32 pmd, __u32 pud)
{ return pft_handler_uncounted(fault_flags, arg, pmd, pud); }
"""


@pytest.fixture(scope="module")
def c_rules(tmp_path_factory):
    """verdict.h as a shared library, exactly the text the BPF side includes."""
    ffi = cffi.FFI()
    ffi.cdef(layout._cdef_text() + """
        int spec_classify(const struct pft_event *ev, uint32_t pmd, uint32_t pud);
        int spec_judge(const struct pft_event *ev, int kind);
        int spec_invisible(const struct pft_event *f, const struct pft_event *o);
        int spec_handler_uncounted(uint32_t fault_flags, uint32_t arg, uint32_t pmd,
                                   uint32_t pud);
    """)
    # (cffi's own glue compares its uint64_t with the kernel's __u64: same
    # size, other spelling; no -Werror.)
    ffi.set_source("_pft_verdict_spec", _SHIM, include_dirs=[BPF_DIR])
    out = str(tmp_path_factory.mktemp("verdict_c"))
    lib_path = ffi.compile(tmpdir=out, verbose=False)
    spec = importlib.util.spec_from_file_location("_pft_verdict_spec", lib_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi, module.lib


def _event(fields):
    return decode.event(layout.encode(**fields))


def _c_event(ffi, fields):
    raw = layout.encode(**fields)
    return ffi.cast("struct pft_event *", ffi.from_buffer(raw)), raw


@pytest.mark.parametrize("name,fields,cls,want", CASES, ids=IDS)
def test_python_rules(name, fields, cls, want):
    ev = _event(fields)
    got = verdict.classify_event(ev, PMD_ORDER, PUD_ORDER)
    assert verdict.CLASSES[got] == cls
    if want is not None:
        assert verdict.VERDICTS[verdict.judge_event(ev, got)] == want


@pytest.mark.parametrize("name,fields,cls,want", CASES, ids=IDS)
def test_c_rules(c_rules, name, fields, cls, want):
    ffi, lib = c_rules
    ev, _keep = _c_event(ffi, fields)
    got = lib.spec_classify(ev, PMD_ORDER, PUD_ORDER)
    assert verdict.CLASSES[got] == cls
    if want is not None:
        assert verdict.VERDICTS[lib.spec_judge(ev, got)] == want


def test_the_table_covers_every_class_and_verdict():
    classes = {c[2] for c in CASES}
    verdicts = {c[3] for c in CASES if c[3]}
    assert classes == set(verdict.CLASSES)
    assert verdicts == set(verdict.VERDICTS)


def test_6_1_huge_fault_sizes(c_rules):
    # 6.1's ->huge_fault takes enum page_entry_size: PMD is 1, PUD 2.
    from verdict_spec import handler, times, OLD, NOW, R_HUGE

    ffi, lib = c_rules
    for arg, cls in ((1, "pmd"), (2, "pmd"), (0, "fault")):
        fields = handler(roles=R_HUGE, arg=arg, **times(OLD, NOW))
        ev, _keep = _c_event(ffi, fields)
        assert verdict.CLASSES[lib.spec_classify(ev, 1, 2)] == cls
        assert verdict.CLASSES[verdict.classify_event(_event(fields), 1, 2)] == cls


INV_IDS = [c[0] for c in INVISIBLE_CASES]


@pytest.mark.parametrize("name,fault,obs,want", INVISIBLE_CASES, ids=INV_IDS)
def test_python_invisible(name, fault, obs, want):
    assert verdict.invisible_event(_event(fault), _event(obs)) is want


@pytest.mark.parametrize("name,fault,obs,want", INVISIBLE_CASES, ids=INV_IDS)
def test_c_invisible(c_rules, name, fault, obs, want):
    ffi, lib = c_rules
    f, _keep_f = _c_event(ffi, fault)
    o, _keep_o = _c_event(ffi, obs)
    assert bool(lib.spec_invisible(f, o)) is want


def test_the_invisible_table_has_both_answers():
    assert {c[3] for c in INVISIBLE_CASES} == {True, False}


@pytest.mark.parametrize("pmd,pud", [(PMD_ORDER, PUD_ORDER), (1, 2)], ids=["order", "6.1"])
def test_an_uncounted_handler_call_is_never_a_kind(c_rules, pmd, pud):
    """pft_handler_uncounted() (top's handler programs stop at it) against
    both classifiers, over every combination of the fields they read: a call
    it passes over is never a write fault, and it passes over nothing
    without FAULT_FLAG_MKWRITE or at a PMD/PUD size, where kinds exist."""
    import itertools

    from verdict_spec import (FILE, DAX, IN_WP, PFN_PATH, SHARED, WRITE, MKWRITE, R_FAULT,
                              R_HUGE, R_PAGE, R_PFN, RETRY, FALLBACK, SIGBUS, NOPAGE, handler,
                              times, OLD, NOW)

    ffi, lib = c_rules
    roles = [0, R_FAULT, R_HUGE, R_PAGE | R_PFN, R_FAULT | R_HUGE | R_PAGE | R_PFN]
    skipped = kinds_kept = 0
    for flags, vm, ff, ret, role, arg in itertools.product(
            [FILE | DAX, FILE | DAX | IN_WP, FILE | PFN_PATH], [0, SHARED],
            [0, WRITE, MKWRITE, WRITE | MKWRITE], [0, NOPAGE, RETRY, FALLBACK, SIGBUS],
            roles, [0, pmd, pud, 3]):
        fields = handler(flags=flags, vm_flags=vm, fault_flags=ff, ret=ret, roles=role, arg=arg,
                         **times(OLD, NOW))
        ev, _keep = _c_event(ffi, fields)
        kind = lib.spec_classify(ev, pmd, pud)
        assert kind == verdict.classify_event(_event(fields), pmd, pud)
        if lib.spec_handler_uncounted(ff, arg, pmd, pud):
            skipped += 1
            assert ff & MKWRITE and arg not in (pmd, pud)
            assert kind >= verdict.NKINDS, fields
        elif kind < verdict.NKINDS:
            kinds_kept += 1
    assert skipped and kinds_kept
    # A ->huge_fault at PMD size is a kind whatever the flags say: not passed over.
    pmd_mk = handler(roles=R_HUGE, arg=pmd, fault_flags=WRITE | MKWRITE, **times(OLD, NOW))
    assert verdict.CLASSES[verdict.classify_event(_event(pmd_mk), pmd, pud)] == "pmd"
    assert not lib.spec_handler_uncounted(WRITE | MKWRITE, pmd, pmd, pud)
