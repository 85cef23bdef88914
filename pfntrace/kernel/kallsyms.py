"""The kernel's symbol table from /proc/kallsyms.

Whether a name is here is what decides if a kprobe can attach to it (an
inlined static function has no symbol).  Addresses are only shown to root
(kptr_restrict): unprivileged readers see zeros, which still answers "does
the symbol exist" but not "what is at this address".
"""

import re
from bisect import bisect_right

_TEXT_TYPES = frozenset("tTwW")


class KallsymsError(Exception):
    pass


PROC_KALLSYMS = "/proc/kallsyms"
PROC_MODULES = "/proc/modules"
_LOADED = {}    # path -> (_modules_key() when loaded, Kallsyms)


def _modules_key(path):
    """What of /proc/modules says where module text is: each module's name,
    size, state and address (not its reference count, which moves with
    every mount and probe); None when unreadable (then nothing is cached)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    # name size refcount users state address [taints]
    return tuple((w[0], w[1], w[4], w[5]) if len(w) >= 6 else tuple(w)
                 for w in map(str.split, lines))


# address, type, name, optional "\t[module]"
_LINE = re.compile(r"^([0-9a-fA-F]+) (\S) (\S+)(?:\t\[(\S+)\])?[ \t]*$", re.M)


class Kallsyms:
    def __init__(self, text, source="<text>"):
        self.source = source
        # A regex over the whole text rather than a split per line: ~120k
        # lines, and this also runs on emulated CPUs.
        rows = _LINE.findall(text)
        if len(rows) != text.count("\n") + (not text.endswith("\n")):
            bad = _first_bad_line(text)
            if bad:
                raise KallsymsError("%s: %s" % (source, bad))
        # Reversed so the first occurrence of a repeated static name wins:
        # it is the one a kprobe on that name attaches to.
        self._rows = {row[2]: row for row in reversed(rows)}
        self._all_rows = rows
        self._text_index = None
        self.addresses_hidden = bool(rows) and all(int(r[0], 16) == 0 for r in rows[:100])

    @classmethod
    def load(cls, path=None, fresh=False):
        """The table at path, by default the running kernel's.  That one
        changes only when a module comes or goes, so while /proc/modules
        lists the same modules at the same addresses as at the last load,
        that table is returned again: parsing ~120k lines took 3 s and more
        under QEMU TCG, paid by doctor, the probe plan and the recorder
        each, the recorder's while the traced workload ran."""
        # /proc/modules first: a module loaded between the two reads is
        # then in the table but not in the key, and the next load reads
        # the table again (the other order would keep a table without it).
        live = path is None
        path = PROC_KALLSYMS if live else path
        modules = _modules_key(PROC_MODULES) if live else None
        cached = None if fresh else _LOADED.get(path)
        if modules is not None and cached is not None and cached[0] == modules:
            return cached[1]
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise KallsymsError("cannot read %s: %s" % (path, e.strerror)) from None
        table = cls(text, source=path)
        if modules is not None:
            _LOADED[path] = (modules, table)
        return table

    def __contains__(self, name):
        return name in self._rows

    def __len__(self):
        return len(self._rows)

    def address(self, name):
        """The symbol's address, or None when absent (0 when hidden)."""
        row = self._rows.get(name)
        return None if row is None else int(row[0], 16)

    def module(self, name):
        """The module that defines the symbol, or None for vmlinux."""
        row = self._rows.get(name)
        return row[3] or None if row else None

    def index_text(self):
        """Build the address-ordered index resolve() needs, now.

        The recorder calls this before its probes are armed: under QEMU TCG
        the first resolve() took 1-2 s of CPU, and when it came at the first
        event it was taken from the traced workload (the lab runs all vCPUs
        in one host thread)."""
        if self._text_index is None:
            text = [(a, n) for a, t, n, _ in self._all_rows if t in _TEXT_TYPES]
            # /proc/kallsyms prints every address in lower case at one width
            # (%px), so the hex strings sort as the numbers do without
            # converting ~120k of them; any other table is converted.
            addrs = [a for a, _ in text]
            widths = set(map(len, addrs))
            as_printed = len(widths) == 1 and not set("".join(addrs)) & set("ABCDEF")
            if as_printed:
                width = widths.pop()
            else:
                width = max(16, *widths)
                text = [("%0*x" % (width, int(a, 16)), n) for a, n in text]
            text.sort()
            self._text_index = (width, [a for a, _ in text], [n for _, n in text])
        return self._text_index

    def resolve(self, addr):
        """'name' or 'name+0xoff' for a text address, or its hex when no
        symbol covers it."""
        if self.addresses_hidden:
            raise KallsymsError("%s shows zero addresses (not root, or kptr_restrict): "
                                "cannot resolve 0x%x" % (self.source, addr))
        width, addrs, names = self.index_text()
        key = "%0*x" % (width, addr)
        if len(key) > width:
            i = len(addrs) - 1     # above every address the table can show
        else:
            i = bisect_right(addrs, key) - 1
        if i < 0:
            return "0x%x" % addr
        offset = addr - int(addrs[i], 16)
        name = names[i]
        return name if offset == 0 else "%s+0x%x" % (name, offset)


def _first_bad_line(text):
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip() and not _LINE.match(line):
            return "line %d is not a kallsyms line: %r" % (lineno, line)
    return None
