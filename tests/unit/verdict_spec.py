"""The specification of what a write fault is and of its verdict: one table of
cases, which both implementations are tested against (test_verdict_spec.py):
pfntrace/bpf/verdict.h (the BPF C that `pfntrace top` runs in the kernel,
compiled here for user space) and pfntrace/verdict.py (report and check).

Each case: an id, the event's fields (the rest zero), the class it must get
(a kind, or why it is not a write fault) and, for kinds, the verdict.
Times are wall-clock ns; the kernel's clock reads NOW at the fault unless a
case says otherwise.
"""

from pfntrace import layout

C = layout.const
NS = 1_000_000_000
MS = 1_000_000
NOW = 1_700_000_005 * NS
OLD = NOW - 4 * NS
QUERIED = C("PFT_I_CTIME_QUERIED")

WP, HANDLER = C("PFT_EV_WP"), C("PFT_EV_HANDLER")
FILE, DAX, IN_WP, PFN_PATH = (C("PFT_F_FILE"), C("PFT_F_INODE_DAX"), C("PFT_F_IN_WP"),
                              C("PFT_F_PFN_PATH"))
SHARED, PFNMAP, MIXEDMAP = C("PFT_VM_SHARED"), C("PFT_VM_PFNMAP"), C("PFT_VM_MIXEDMAP")
WRITE, MKWRITE = C("PFT_FAULT_FLAG_WRITE"), C("PFT_FAULT_FLAG_MKWRITE")
R_FAULT, R_HUGE = C("PFT_ROLE_FAULT"), C("PFT_ROLE_HUGE_FAULT")
R_PAGE, R_PFN = C("PFT_ROLE_PAGE_MKWRITE"), C("PFT_ROLE_PFN_MKWRITE")
RETRY, FALLBACK, SIGBUS, NOPAGE = (C("PFT_VM_FAULT_RETRY"), C("PFT_VM_FAULT_FALLBACK"), 2,
                                   C("PFT_VM_FAULT_NOPAGE"))
HANDLER_ADDR = 0xffffffffc0a01230
PMD_ORDER, PUD_ORDER = 9, 18     # ->huge_fault's size on 6.6+ (6.1: 1, 2)


def times(m0, m1, c0=None, c1=None, clock=(NOW, NOW), gran=1, queried=(False, False)):
    """Timestamp and clock fields: mtime m0 -> m1, ctime c0 -> c1 (default:
    as mtime), the kernel's clock at entry and return."""
    c0 = m0 if c0 is None else c0
    c1 = m1 if c1 is None else c1
    out = {"mtime_sec": [m0 // NS, m1 // NS], "mtime_nsec": [m0 % NS, m1 % NS],
           "ctime_sec": [c0 // NS, c1 // NS],
           "ctime_nsec": [c0 % NS | (QUERIED if queried[0] else 0),
                          c1 % NS | (QUERIED if queried[1] else 0)],
           "clock_ns": list(clock), "time_gran": gran}
    return out


def wp(**kw):
    """A do_wp_page return on a shared mapping of a DAX file with ->pfn_mkwrite."""
    ev = {"type": WP, "flags": FILE | DAX, "vm_flags": SHARED, "ret": NOPAGE,
          "ops_pfn_mkwrite": HANDLER_ADDR, "fault_flags": WRITE}
    ev.update(kw)
    return ev


def handler(**kw):
    """A handler return outside do_wp_page: an ext4-style first-touch ->fault write."""
    ev = {"type": HANDLER, "flags": FILE | DAX, "vm_flags": SHARED, "ret": NOPAGE,
          "roles": R_FAULT | R_PAGE | R_PFN, "fault_flags": WRITE, "handler": HANDLER_ADDR}
    ev.update(kw)
    return ev


CASES = [
    # --- what a do_wp_page return is ------------------------------------------
    ("wp dax pfn_mkwrite", wp(**times(OLD, NOW)), "pfn_mkwrite", "UPDATED"),
    ("wp dax without ->pfn_mkwrite: the pre-4.1 bug, no VM_PFNMAP needed",
     wp(ops_pfn_mkwrite=0, **times(OLD, OLD)), "no_notifier", "NO_NOTIFIER"),
    ("wp pfnmap (non-DAX) without ->pfn_mkwrite",
     wp(flags=FILE, vm_flags=SHARED | PFNMAP, ops_pfn_mkwrite=0), "no_notifier", "NO_NOTIFIER"),
    ("wp mixedmap with ->pfn_mkwrite", wp(flags=FILE, vm_flags=SHARED | MIXEDMAP,
                                          **times(OLD, NOW)), "pfn_mkwrite", "UPDATED"),
    ("wp probed wp_pfn_shared decides the path",
     wp(flags=FILE | PFN_PATH, **times(OLD, NOW)), "pfn_mkwrite", "UPDATED"),
    ("wp page cache: the page path, judged even without ->page_mkwrite",
     wp(flags=FILE, ops_pfn_mkwrite=0, **times(OLD, OLD)), "page_mkwrite", "MISSED"),
    ("wp retry (6.12 ext4 per-VMA lock)", wp(ret=RETRY, **times(OLD, OLD)), "retry", None),
    ("wp error", wp(ret=SIGBUS, **times(OLD, OLD)), "error", None),
    ("wp private mapping: copy-on-write", wp(vm_flags=0, **times(OLD, OLD)), "private", None),
    ("wp anonymous", wp(flags=0, ops_pfn_mkwrite=0), "private", None),
    # --- what a handler return is ---------------------------------------------
    ("handler inside do_wp_page: the wp event is the fault",
     handler(flags=FILE | DAX | IN_WP, fault_flags=WRITE | MKWRITE, **times(OLD, NOW)),
     "in_wp", None),
    ("first-touch write through ->fault", handler(**times(OLD, NOW)), "fault", "UPDATED"),
    ("first-touch write on a private mapping", handler(vm_flags=0, **times(OLD, OLD)),
     "private", None),
    ("read fault", handler(fault_flags=0, **times(OLD, OLD)), "read", None),
    ("handler retry", handler(ret=RETRY), "retry", None),
    ("->huge_fault fell back to PTEs", handler(roles=R_HUGE, arg=PMD_ORDER, ret=FALLBACK),
     "fallback", None),
    ("handler error", handler(ret=SIGBUS), "error", None),
    ("PMD write through ->huge_fault", handler(roles=R_HUGE, arg=PMD_ORDER, **times(OLD, NOW)),
     "pmd", "UPDATED"),
    ("PUD write through ->huge_fault", handler(roles=R_HUGE, arg=PUD_ORDER, **times(NOW, NOW)),
     "pmd", "CURRENT"),
    ("PTE-size ->huge_fault first touch", handler(roles=R_HUGE, arg=0, **times(OLD, NOW)),
     "fault", "UPDATED"),
    ("a ->page_mkwrite-only handler outside do_wp_page is nested",
     handler(roles=R_PAGE), "nested", None),
    ("a handler with MKWRITE outside do_wp_page is nested",
     handler(fault_flags=WRITE | MKWRITE), "nested", None),
    ("a tracepoint event", {"type": C("PFT_EV_DAX_FAULT")}, "other", None),
    # --- verdicts --------------------------------------------------------------
    ("current: unchanged and equal to the kernel's clock", wp(**times(NOW, NOW)),
     "pfn_mkwrite", "CURRENT"),
    ("current: the clock moved during the fault",
     wp(**times(NOW, NOW, clock=(NOW - 4 * MS, NOW))), "pfn_mkwrite", "CURRENT"),
    ("stale: unchanged, older than the clock", wp(**times(OLD, OLD)), "pfn_mkwrite", "MISSED"),
    ("stale by one tick", wp(**times(NOW - 4 * MS, NOW - 4 * MS)), "pfn_mkwrite", "MISSED"),
    ("future: unchanged, newer than the clock", wp(**times(NOW + 4 * MS, NOW + 4 * MS)),
     "pfn_mkwrite", "MISSED"),
    ("file_update_time ran but the timestamps are stale: still MISSED",
     wp(ftu_calls=1, **times(OLD, OLD)), "pfn_mkwrite", "MISSED"),
    ("moved to a stale value", wp(**times(OLD - NS, OLD)), "pfn_mkwrite", "MISSED"),
    ("moved to the future", wp(**times(OLD, NOW + NS)), "pfn_mkwrite", "MISSED"),
    ("only mtime moved, ctime already current (chmod in the same tick)",
     wp(**times(OLD, NOW, NOW, NOW)), "pfn_mkwrite", "UPDATED"),
    ("only mtime moved, ctime stale", wp(**times(OLD, NOW, OLD, OLD)), "pfn_mkwrite",
     "MISSED"),
    ("only ctime moved, mtime stale", wp(**times(OLD, OLD, OLD, NOW)), "pfn_mkwrite",
     "MISSED"),
    ("multigrain: ctime queried before the fault and unchanged",
     wp(**times(NOW, NOW, queried=(True, True))), "pfn_mkwrite", "MISSED"),
    ("multigrain: ctime queried, a fresh fine-grained stamp",
     wp(**times(NOW, NOW + 1000, queried=(True, False), clock=(NOW, NOW + 1000))),
     "pfn_mkwrite", "UPDATED"),
    ("multigrain: queried after the fault only (a stat during it) is masked",
     wp(**times(NOW, NOW, queried=(False, True))), "pfn_mkwrite", "CURRENT"),
    ("multigrain floor: a fine-grained stamp ahead of the coarse clock is current",
     wp(**times(NOW + 3 * MS, NOW + 3 * MS, clock=(NOW + 3 * MS, NOW + 3 * MS))),
     "pfn_mkwrite", "CURRENT"),
    ("coarse granularity: truncated to whole seconds",
     wp(**times(NOW, NOW, clock=(NOW + 500 * MS, NOW + 500 * MS), gran=NS)),
     "pfn_mkwrite", "CURRENT"),
    ("no clock: both moved", wp(**times(OLD, NOW, clock=(0, 0))), "pfn_mkwrite", "UPDATED"),
    ("no clock: unchanged cannot be told current from stale",
     wp(**times(OLD, OLD, clock=(0, 0))), "pfn_mkwrite", "UNDECIDED"),
    ("no clock: one moved", wp(**times(OLD, NOW, OLD, OLD, clock=(0, 0))), "pfn_mkwrite",
     "UNDECIDED"),
    ("no clock, but queried and unchanged", wp(**times(OLD, OLD, clock=(0, 0),
                                                       queried=(True, True))),
     "pfn_mkwrite", "MISSED"),
    ("a torn clock (return before entry) is no clock",
     wp(**times(OLD, OLD, clock=(NOW, NOW - 1))), "pfn_mkwrite", "UNDECIDED"),
    ("no timestamps read", wp(), "pfn_mkwrite", "UNDECIDED"),
    ("no notifier whatever the timestamps", wp(ops_pfn_mkwrite=0, **times(OLD, NOW)),
     "no_notifier", "NO_NOTIFIER"),
]


# --- invisible writes ------------------------------------------------------------
# A write fault after which mtime and ctime still equal what the last getattr
# of the file showed, that getattr over before the fault began (verdict.h
# pft_invisible).  Each case: an id, the fault, the getattr, the answer.
GETATTR = C("PFT_EV_GETATTR")
FAULT_TS = 5_000_000_000        # CLOCK_MONOTONIC of the fault's entry
TICK = 4 * MS


def getattr_ev(m, c=None, end=FAULT_TS - 100_000, dur=20_000, ret=0, pid=77, comm="rsync"):
    """A getattr that returned at `end` after showing mtime m and ctime c."""
    c = m if c is None else c
    return {"type": GETATTR, "ts_ns": end - dur, "duration_ns": dur, "ret": ret,
            "mtime_sec": [m // NS, 0], "mtime_nsec": [m % NS, 0],
            "ctime_sec": [c // NS, 0], "ctime_nsec": [c % NS, 0], "pid": pid, "comm": comm,
            "flags": FILE | DAX}


def wfault(m0, m1, c0=None, c1=None, queried=(False, False), ts=FAULT_TS):
    return wp(ts_ns=ts, **times(m0, m1, c0, c1, queried=queried))


INVISIBLE_CASES = [
    ("stat then a write in the same tick: CURRENT and invisible",
     wfault(NOW, NOW), getattr_ev(NOW), True),
    ("the write moved mtime and ctime: seen", wfault(NOW, NOW + TICK), getattr_ev(NOW), False),
    ("a stale fault (MISSED) is invisible as well", wfault(OLD, OLD), getattr_ev(OLD), True),
    ("the stat saw an older value: the write shows", wfault(NOW, NOW), getattr_ev(OLD), False),
    ("mtime equal but ctime moved (a chmod after the stat): seen by ctime",
     wfault(NOW, NOW, NOW, NOW + TICK), getattr_ev(NOW), False),
    ("ctime equal but mtime moved: seen by mtime",
     wfault(NOW, NOW + TICK, NOW, NOW), getattr_ev(NOW), False),
    ("the stat ended after the fault began: no order, not counted",
     wfault(NOW, NOW), getattr_ev(NOW, end=FAULT_TS + 1), False),
    ("the stat ended exactly as the fault began: before it",
     wfault(NOW, NOW), getattr_ev(NOW, end=FAULT_TS), True),
    ("a failed getattr showed nothing", wfault(NOW, NOW), getattr_ev(NOW, ret=2), False),
    ("no timestamps read at the fault", wp(ts_ns=FAULT_TS), getattr_ev(0), False),
    ("6.13+: I_CTIME_QUERIED on the inode's ctime is no part of the time",
     wfault(NOW, NOW, queried=(True, True)), getattr_ev(NOW), True),
    ("6.13+: a queried ctime got a fine-grained stamp: seen",
     wfault(NOW, NOW + 1000, queried=(True, False)), getattr_ev(NOW), False),
    ("nanoseconds count: one ns apart is seen", wfault(NOW, NOW + 1), getattr_ev(NOW), False),
    ("not a getattr event", wfault(NOW, NOW), dict(getattr_ev(NOW), type=WP), False),
]
