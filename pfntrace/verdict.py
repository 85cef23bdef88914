"""What an event is, and the verdict of a write fault: pfntrace/bpf/verdict.h's
rules, for recordings.

verdict.h is what `pfntrace top` runs in the kernel; this is what report and
check run on a recording.  Both are held to one table of cases
(tests/unit/verdict_spec.py), which compiles verdict.h for user space and
asks both the same questions.  The rules themselves are documented once, in
verdict.h.
"""

from pfntrace import layout

C = layout.const

KINDS = ("pfn_mkwrite", "page_mkwrite", "pmd", "fault", "no_notifier")
K_PFN, K_PAGE, K_PMD, K_FAULT, K_NONOTIFY = (
    C("PFT_C_PFN_MKWRITE"), C("PFT_C_PAGE_MKWRITE"), C("PFT_C_PMD"), C("PFT_C_FAULT"),
    C("PFT_C_NO_NOTIFIER"))
NKINDS = C("PFT_C_KINDS")
assert (K_PFN, K_PAGE, K_PMD, K_FAULT, K_NONOTIFY) == tuple(range(NKINDS)) and \
    len(KINDS) == NKINDS

# Why an event is not a write fault (classify() returns these past the kinds).
C_RETRY, C_FALLBACK, C_ERROR, C_READ, C_IN_WP, C_NESTED, C_PRIVATE, C_OTHER = (
    C("PFT_C_RETRY"), C("PFT_C_FALLBACK"), C("PFT_C_ERROR"), C("PFT_C_READ"),
    C("PFT_C_IN_WP"), C("PFT_C_NESTED"), C("PFT_C_PRIVATE"), C("PFT_C_OTHER"))
CLASSES = KINDS + ("retry", "fallback", "error", "read", "in_wp", "nested", "private",
                   "other")
assert C_OTHER == len(CLASSES) - 1

VERDICTS = ("UPDATED", "CURRENT", "MISSED", "NO_NOTIFIER", "UNDECIDED")
V_UPDATED, V_CURRENT, V_MISSED, V_NO_NOTIFIER, V_UNDECIDED = (
    C("PFT_V_UPDATED"), C("PFT_V_CURRENT"), C("PFT_V_MISSED"), C("PFT_V_NO_NOTIFIER"),
    C("PFT_V_UNDECIDED"))
assert (V_UPDATED, V_CURRENT, V_MISSED, V_NO_NOTIFIER, V_UNDECIDED) == tuple(range(5))
# Findings: `check` fails on these; with --strict on UNDECIDED too.
PROBLEM_VERDICTS = ("MISSED", "NO_NOTIFIER")

EV_WP, EV_HANDLER, EV_GETATTR = C("PFT_EV_WP"), C("PFT_EV_HANDLER"), C("PFT_EV_GETATTR")
F_FILE, F_INODE_DAX, F_PFN_PATH, F_IN_WP = (
    C("PFT_F_FILE"), C("PFT_F_INODE_DAX"), C("PFT_F_PFN_PATH"), C("PFT_F_IN_WP"))
PFN_PATH_FLAGS = F_PFN_PATH | F_INODE_DAX
VM_SHARED = C("PFT_VM_SHARED")
VM_PFN_OR_MIXED = C("PFT_VM_PFNMAP") | C("PFT_VM_MIXEDMAP")
VM_FAULT_RETRY, VM_FAULT_FALLBACK, VM_FAULT_ERROR = (
    C("PFT_VM_FAULT_RETRY"), C("PFT_VM_FAULT_FALLBACK"), C("PFT_VM_FAULT_ERROR"))
FAULT_FLAG_WRITE, FAULT_FLAG_MKWRITE = C("PFT_FAULT_FLAG_WRITE"), C("PFT_FAULT_FLAG_MKWRITE")
ROLE_FAULTS = C("PFT_ROLE_FAULT") | C("PFT_ROLE_HUGE_FAULT")
ROLE_HUGE_FAULT = C("PFT_ROLE_HUGE_FAULT")
QUERIED = C("PFT_I_CTIME_QUERIED")
NSEC_MASK = QUERIED - 1
NS = 1_000_000_000


def huge_fault_args(plan):
    """(PMD, PUD) values of ->huge_fault's size argument on the recording's
    kernel: an order since 6.6, enum page_entry_size before."""
    if (plan or {}).get("huge_fault_arg_is_order"):
        return 9, 18
    return 1, 2


def classify(typ, flags, vm_flags, fault_flags, ret, roles, arg, ops_pfn_mkwrite,
             pmd_arg, pud_arg):
    """verdict.h pft_classify(): a kind (< NKINDS) or why not a write fault."""
    if typ == EV_WP:
        if ret & VM_FAULT_RETRY:
            return C_RETRY
        if not flags & F_FILE or not vm_flags & VM_SHARED:
            return C_PRIVATE
        if ret & VM_FAULT_ERROR:
            return C_ERROR
        if flags & PFN_PATH_FLAGS or vm_flags & VM_PFN_OR_MIXED:
            return K_PFN if ops_pfn_mkwrite else K_NONOTIFY
        return K_PAGE
    if typ != EV_HANDLER:
        return C_OTHER
    if flags & F_IN_WP:
        return C_IN_WP
    if ret & VM_FAULT_RETRY:
        return C_RETRY
    if ret & VM_FAULT_FALLBACK:
        return C_FALLBACK
    if ret & VM_FAULT_ERROR:
        return C_ERROR
    if not fault_flags & FAULT_FLAG_WRITE:
        return C_READ
    if not vm_flags & VM_SHARED:
        return C_PRIVATE
    if roles & ROLE_HUGE_FAULT and (arg == pmd_arg or arg == pud_arg):
        return K_PMD
    if fault_flags & FAULT_FLAG_MKWRITE or not roles & ROLE_FAULTS:
        return C_NESTED
    return K_FAULT


def judge(kind, m0, m1, c0, c1, ctime_nsec0, clock0, clock1, gran, read):
    """verdict.h pft_judge().  m*/c* in ns (ctime without the queried bit),
    ctime_nsec0 the raw nsec at entry, clock* the kernel's timestamp clock at
    entry and return (0: not read), gran the superblock's s_time_gran, read
    False when no timestamp was read at all."""
    if kind == K_NONOTIFY:
        return V_NO_NOTIFIER
    if not read:
        return V_UNDECIDED
    moved = (m0 != m1) + (c0 != c1)
    if c0 == c1 and ctime_nsec0 & QUERIED:
        return V_MISSED
    lo, hi = clock0, clock1
    if lo <= 0 or hi < lo:
        return V_UPDATED if moved == 2 else V_UNDECIDED
    if gran > 1:
        lo -= lo % gran
    if m1 < lo or m1 > hi or c1 < lo or c1 > hi:
        return V_MISSED
    return V_UPDATED if moved else V_CURRENT


def judge_event(ev, kind):
    """judge() of a decoded event dict (decode.event's shape)."""
    ms, mn, cs, cn = ev["mtime_sec"], ev["mtime_nsec"], ev["ctime_sec"], ev["ctime_nsec"]
    return judge(kind, ms[0] * NS + mn[0], ms[1] * NS + mn[1],
                 cs[0] * NS + (cn[0] & NSEC_MASK), cs[1] * NS + (cn[1] & NSEC_MASK),
                 cn[0], ev["clock_ns"][0], ev["clock_ns"][1], ev["time_gran"],
                 bool(ms[0] | ms[1] | cs[0] | cs[1]))


def classify_event(ev, pmd_arg=9, pud_arg=18):
    """classify() of a decoded event dict."""
    return classify(ev["type"], ev["flags"], ev["vm_flags"], ev["fault_flags"], ev["ret"],
                    ev["roles"], ev["arg"], ev["ops_pfn_mkwrite"], pmd_arg, pud_arg)


def invisible(fault_ts, m1, c1, obs_end, obs_m, obs_c):
    """verdict.h pft_invisible(): was a write fault invisible to the last
    getattr of its file?  fault_ts its start, m1/c1 the timestamps after it
    (ns, ctime without the queried bit); obs_end when that getattr returned,
    obs_m/obs_c what it showed (ns, ctime masked likewise)."""
    if obs_end > fault_ts:
        return False
    if not m1 and not c1:
        return False
    return m1 == obs_m and c1 == obs_c


def observation(ev):
    """(end, mtime, ctime) a decoded PFT_EV_GETATTR event showed, or None
    for another event or a failed getattr."""
    if ev["type"] != EV_GETATTR or ev["ret"]:
        return None
    return (ev["ts_ns"] + ev["duration_ns"],
            ev["mtime_sec"][0] * NS + ev["mtime_nsec"][0],
            ev["ctime_sec"][0] * NS + (ev["ctime_nsec"][0] & NSEC_MASK))


def invisible_event(fault, obs):
    """invisible() of two decoded events: a write fault and the last getattr."""
    seen = observation(obs)
    if seen is None:
        return False
    ms, mn = fault["mtime_sec"], fault["mtime_nsec"]
    cs, cn = fault["ctime_sec"], fault["ctime_nsec"]
    return invisible(fault["ts_ns"], ms[1] * NS + mn[1], cs[1] * NS + (cn[1] & NSEC_MASK),
                     *seen)
