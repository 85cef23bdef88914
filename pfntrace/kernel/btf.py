"""A small reader of the kernel's BTF (Documentation/bpf/btf.rst).

The BPF program is compiled without kernel headers, so every struct offset it
needs comes from here.  vmlinux BTF is ~5 MB and ~130k types, and pfntrace
also runs on emulated CPUs, so loading does the least possible: one pass that
records where each type starts (type ids are positional), and nothing else.
Names are looked up by finding the string's offset first and then the type
whose name_off is that offset; members are decoded only when asked for.

Accepts /sys/kernel/btf/vmlinux, a raw .BTF section (objcopy --only-section),
or an uncompressed vmlinux ELF carrying a .BTF section; and a module's split
BTF (/sys/kernel/btf/<module>) on top of vmlinux's, for func_id() alone.
"""

import struct
from array import array
from bisect import bisect_left

MAGIC = 0xEB9F

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

# Length of each kind's record in 32-bit words: the common 3-word header plus
# fixed extra words, plus per-vlen words.  Every BTF record is a multiple of
# 4 bytes, which is what lets the whole type section be read as uint32s.
_FIXED_WORDS = {INT: 4, ARRAY: 6, VAR: 4, DECL_TAG: 4}
_WORDS_PER_VLEN = {STRUCT: 3, UNION: 3, ENUM: 2, FUNC_PROTO: 2, DATASEC: 3, ENUM64: 3}
_MAX_KIND = 31
_BASE = [_FIXED_WORDS.get(k, 3) for k in range(_MAX_KIND + 1)]
_PER = [_WORDS_PER_VLEN.get(k, 0) for k in range(_MAX_KIND + 1)]

# Kinds that only qualify or rename another type: looked through when an
# anonymous member's struct or a member's size is wanted.
_QUALIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))


_BASES = {}    # path -> Btf: Btf.load's base BTFs, read once per process


class BtfError(Exception):
    """Bad BTF data, or a type or member that is not there."""


class Btf:
    def __init__(self, data, source="<bytes>", base=None):
        self.source = source
        # Split BTF (a module's): its type ids follow the base's, and a name
        # offset past the base's strings is one of its own.
        self._base = base
        self._id_base = base.type_count if base else 0
        self._str_base = len(base._strings) if base else 0
        data = memoryview(_btf_section(bytes(data), source))
        if len(data) < 24:
            raise BtfError("%s: too short for a BTF header" % source)
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BtfError("%s: not little-endian BTF (magic 0x%04x)" % (source, magic))
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types_start = hdr_len + type_off
        strs_start = hdr_len + str_off
        if types_start + type_len > len(data) or strs_start + str_len > len(data) or type_len % 4:
            raise BtfError("%s: BTF sections run past the end of the data" % source)
        # Both the uint32 view (record fields) and the raw bytes (fast name
        # search) of the type section are kept.  pfntrace targets x86_64, so
        # host and BTF byte order are both little-endian.
        self._type_bytes = bytes(data[types_start:types_start + type_len])
        words = array("I")
        words.frombytes(self._type_bytes)
        self._words = words
        self._strings = bytes(data[strs_start:strs_start + str_len])
        self._starts = self._index_types(words, source)

    @classmethod
    def load(cls, path="/sys/kernel/btf/vmlinux", base=None):
        """The BTF at path.  A base (vmlinux's) is read once per process:
        it cannot change while the kernel runs, and indexing it took 0.7 s
        under QEMU TCG, paid by doctor's checks and the probe plan each.  A
        module's (split, base given) is read afresh: modules come and go."""
        if base is None and path in _BASES:
            return _BASES[path]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BtfError("cannot read BTF from %s: %s" % (path, e.strerror)) from None
        btf = cls(data, source=path, base=base)
        if base is None:
            _BASES[path] = btf
        return btf

    @staticmethod
    def _index_types(words, source):
        # Type id N (1-based) starts at word starts[N-1].  Kept deliberately
        # tight: this loop is the whole cost of loading.
        starts = array("I")
        append = starts.append
        base, per = _BASE, _PER
        pos, end = 0, len(words)
        while pos < end:
            append(pos)
            info = words[pos + 1]
            kind = (info >> 24) & _MAX_KIND
            pos += base[kind] + (info & 0xFFFF) * per[kind]
        if pos != end:
            raise BtfError("%s: type section is truncated" % source)
        return starts

    # -- low-level access ---------------------------------------------------

    def _kind(self, type_id):
        return (self._words[self._start(type_id) + 1] >> 24) & _MAX_KIND

    def _start(self, type_id):
        if not 1 <= type_id <= len(self._starts):
            raise BtfError("%s: type id %d out of range" % (self.source, type_id))
        return self._starts[type_id - 1]

    def _name_offset(self, name):
        # Strings are deduplicated, so "\0name\0" occurs at most once.
        needle = b"\0" + name.encode() + b"\0"
        at = self._strings.find(needle)
        return -1 if at < 0 else at + 1

    def _find_type(self, name, kinds):
        """The id of the first type named `name` whose kind is in `kinds`
        (local to this BTF: split BTF ids start again at 1 here)."""
        for name_off in self._name_offsets(name):
            found = self._find_named(name_off, kinds)
            if found is not None:
                return found
        return None

    def _name_offsets(self, name):
        """Where a type's name_off may point for `name`: this BTF's own
        string, and for split BTF also the base's (strings are
        deduplicated against the base)."""
        offs = []
        own = self._name_offset(name)
        if own >= 0:
            offs.append(own + self._str_base)
        if self._base is not None:
            inherited = self._base._name_offset(name)
            if inherited >= 0:
                offs.append(inherited)
        return offs

    def _find_named(self, name_off, kinds):
        # Search the type section's bytes for the name offset and keep only
        # hits that are the first word of a record: far faster than walking
        # all records in Python, and exact because record starts are known.
        raw = self._type_bytes
        pattern = struct.pack("<I", name_off)
        starts, words = self._starts, self._words
        at = raw.find(pattern)
        while at >= 0:
            if at % 4 == 0:
                word = at // 4
                i = bisect_left(starts, word)
                if i < len(starts) and starts[i] == word:
                    if (words[word + 1] >> 24) & _MAX_KIND in kinds:
                        return i + 1
            at = raw.find(pattern, at + 1)
        return None

    def _resolve(self, type_id):
        """Follow typedefs and qualifiers to the underlying type id."""
        while type_id and self._kind(type_id) in _QUALIFIERS:
            type_id = self._words[self._start(type_id) + 2]
        return type_id

    def _members(self, type_id):
        """(name_off, member type id, bit offset) of a struct or union."""
        p = self._start(type_id)
        info = self._words[p + 1]
        kind_flag = info >> 31
        w = self._words
        for i in range(info & 0xFFFF):
            m = p + 3 + 3 * i
            offset = w[m + 2]
            # With kind_flag the top 8 bits hold the bitfield size.
            yield w[m], w[m + 1], (offset & 0xFFFFFF) if kind_flag else offset

    def _struct_id(self, name):
        type_id = self._find_type(name, (STRUCT, UNION))
        if type_id is None:
            raise BtfError("struct %s is not in the kernel's BTF (%s)" % (name, self.source))
        return type_id

    def _find_member(self, type_id, member_off):
        """(bit offset, member type id) of a member, searching anonymous
        struct/union members recursively; None when absent."""
        for name_off, member_type, bit_offset in self._members(type_id):
            if name_off == member_off:
                return bit_offset, member_type
            if name_off == 0:
                inner = self._resolve(member_type)
                if self._kind(inner) in (STRUCT, UNION):
                    found = self._find_member(inner, member_off)
                    if found is not None:
                        return bit_offset + found[0], found[1]
        return None

    def _member(self, struct_name, member_name):
        struct_id = self._struct_id(struct_name)
        member_off = self._name_offset(member_name)
        found = self._find_member(struct_id, member_off) if member_off > 0 else None
        if found is None:
            raise BtfError("struct %s has no member %s in the kernel's BTF (%s)"
                           % (struct_name, member_name, self.source))
        return found

    def _size(self, type_id):
        type_id = self._resolve(type_id)
        if type_id == 0:
            raise BtfError("void has no size")
        p = self._start(type_id)
        kind = (self._words[p + 1] >> 24) & _MAX_KIND
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem_type, _index_type, nelems = self._words[p + 3:p + 6]
            return nelems * self._size(elem_type)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return self._words[p + 2]
        raise BtfError("type id %d (kind %d) has no size" % (type_id, kind))

    # -- public API ---------------------------------------------------------

    @property
    def type_count(self):
        return len(self._starts)

    def has_struct(self, name):
        return self._find_type(name, (STRUCT, UNION)) is not None

    def has_func(self, name):
        """A FUNC record exists: a real, non-inlined function the kernel
        kept BTF for."""
        return self._find_type(name, (FUNC,)) is not None

    def func_id(self, name):
        """The kernel's type id of the FUNC `name` (what a BPF trampoline
        program is loaded against), None when there is none.  For split
        BTF the id counts on from the base's."""
        local = self._find_type(name, (FUNC,))
        return None if local is None else local + self._id_base

    def has_enum(self, name):
        return self._find_type(name, (ENUM, ENUM64)) is not None

    def enum_value(self, enum_name, enumerator):
        """The value of one enumerator of an enum, None when either is absent."""
        type_id = self._find_type(enum_name, (ENUM, ENUM64))
        name_off = self._name_offset(enumerator)
        if type_id is None or name_off < 0:
            return None
        p = self._start(type_id)
        info = self._words[p + 1]
        kind = (info >> 24) & _MAX_KIND
        w = self._words
        for i in range(info & 0xFFFF):
            if kind == ENUM:
                m = p + 3 + 2 * i
                if w[m] == name_off:
                    return w[m + 1]
            else:
                m = p + 3 + 3 * i
                if w[m] == name_off:
                    return w[m + 1] | (w[m + 2] << 32)
        return None

    def has_member(self, struct_name, member_name):
        try:
            self._member(struct_name, member_name)
        except BtfError:
            return False
        return True

    def member_offset(self, struct_name, member_name):
        """Byte offset of a member, anonymous structs/unions looked through.
        A bitfield gives the byte holding its first bit."""
        bit_offset, _ = self._member(struct_name, member_name)
        return bit_offset // 8

    def member_size(self, struct_name, member_name):
        """Size in bytes of the member's type (a bitfield's declared type)."""
        _, member_type = self._member(struct_name, member_name)
        return self._size(member_type)

    def struct_size(self, name):
        return self._size(self._struct_id(name))


def _btf_section(data, source):
    """The BTF bytes: the data itself, or the .BTF section of an ELF file."""
    if data[:4] != b"\x7fELF":
        return data
    if data[4] != 2 or data[5] != 1:
        raise BtfError("%s: only 64-bit little-endian ELF is supported" % source)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        # sh_name, sh_offset and sh_size of section header i.
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, names_off, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if data[names_off + name:names_off + name + 5] == b".BTF\0":
            return data[offset:offset + size]
    raise BtfError("%s: ELF file has no .BTF section" % source)
