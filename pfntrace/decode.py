"""Bulk decoding of EVENTS block payloads (concatenated struct pft_event).

Two speeds:

* ``iter_rows(payload)`` -- fast: one flat tuple per event, fields looked up
  with ``ROW_INDEX[name]``.  Arrays are flattened (``mtime_sec0``,
  ``mtime_sec1``, ...), char arrays (``comm``) are bytes with the NUL padding
  stripped.  Char-array fields come last in the row, after the numeric fields
  in struct order; always go through ROW_INDEX / ROW_NAMES.
* ``decode_block(payload)`` / ``iter_events(payload)`` -- convenient: one dict
  per event, exactly what ``event(raw)`` returns for one (arrays as lists, comm as
  str).

The struct format is built from cffi's view of pfntrace.h, never written by
hand, so it follows the header.
"""

import itertools
import operator
import struct
import sys

from pfntrace import layout

_PRIMITIVE_CODES = {
    "int8_t": "b", "uint8_t": "B",
    "int16_t": "h", "uint16_t": "H",
    "int32_t": "i", "uint32_t": "I",
    "int64_t": "q", "uint64_t": "Q",
    "char": "c",
}


def _build(ffi=layout.ffi, ctype="struct pft_event"):
    """(numeric Struct, [(char-field offset, length)], row names, dict plan)."""
    struct_type = ffi.typeof(ctype)
    size = ffi.sizeof(struct_type)
    parts = []          # numeric format pieces, with explicit padding
    pos = 0
    numeric_names = []
    char_fields = []    # (name, offset, length)
    plan_src = []       # (name, kind, n) in struct order; kind: scalar/array/chars
    slots = {}          # row name -> (offset, struct code, size)
    for name, field in struct_type.fields:
        ftype = field.type
        fsize = ffi.sizeof(ftype)
        if field.offset < pos:
            raise ValueError("overlapping field %s (bitfield or union?)" % name)
        if ftype.kind == "array" and ftype.item.kind == "primitive" \
                and ftype.item.cname == "char":
            char_fields.append((name, field.offset, ftype.length))
            plan_src.append((name, "chars", 1))
            slots[name] = (field.offset, "%ds" % ftype.length, ftype.length)
            continue
        if field.offset > pos:
            parts.append("%dx" % (field.offset - pos))
        if ftype.kind == "primitive":
            code, count = _PRIMITIVE_CODES[ftype.cname], 1
            numeric_names.append(name)
            plan_src.append((name, "scalar", 1))
            slots[name] = (field.offset, code, fsize)
        elif ftype.kind == "array" and ftype.item.kind == "primitive":
            code, count = _PRIMITIVE_CODES[ftype.item.cname], ftype.length
            numeric_names.extend("%s%d" % (name, i) for i in range(count))
            plan_src.append((name, "array", count))
            item = fsize // count
            for i in range(count):
                slots["%s%d" % (name, i)] = (field.offset + i * item, code, item)
        else:
            raise ValueError("field %s: unsupported type %s" % (name, ftype.cname))
        parts.append("%d%s" % (count, code) if count > 1 else code)
        pos = field.offset + fsize
    if size > pos:
        parts.append("%dx" % (size - pos))
    # "=": native byte order (the kernel wrote it), standard sizes, no
    # implicit alignment: every pad is spelled out above.
    numeric = struct.Struct("=" + "".join(parts))
    assert numeric.size == size, (numeric.format, numeric.size, size)
    names = numeric_names + [name for name, _, _ in char_fields]
    index = {n: i for i, n in enumerate(names)}
    plan = []
    for name, kind, n in plan_src:
        if kind == "array":
            plan.append((name, kind, [index["%s%d" % (name, i)] for i in range(n)]))
        else:
            plan.append((name, kind, index[name]))
    return numeric, char_fields, names, index, plan, size, slots


class RowDecoder:
    """iter_rows() for one cffi struct type; the module functions use the
    one for struct pft_event."""

    def __init__(self, ffi=layout.ffi, ctype="struct pft_event"):
        (self.numeric, char_fields, names, self.row_index, self.dict_plan,
         self.size, self.slots) = _build(ffi, ctype)
        self.row_names = tuple(names)
        self.chars = [
            struct.Struct("=%dx%ds%dx" % (off, length, self.size - off - length))
            for _, off, length in char_fields
        ]

    def check(self, payload):
        n = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if n % self.size:
            raise ValueError("event payload of %d bytes is not a whole number of "
                             "%d-byte events" % (n, self.size))

    def iter_rows(self, payload):
        self.check(payload)
        numeric = self.numeric.iter_unpack(payload)
        if not self.chars:
            return numeric
        if len(self.chars) == 1:
            # All in C but the cache misses: tuple + (stripped,) per event.
            cache = _StripCache()
            return map(operator.add, numeric,
                       map(cache.__getitem__, self.chars[0].iter_unpack(payload)))
        return self._iter_rows_general(payload, numeric)

    def picker(self, names):
        """A function: payload -> an iterator of tuples of the fields names
        (ROW_NAMES spelling), in that order.  Names in struct order are one
        struct.iter_unpack, the fields left out skipped as padding: the
        fastest decoding there is.  There a char array (comm) comes as its
        raw bytes, NUL padding included: cut it at the first NUL.  Names in
        another order are picked from iter_rows()."""
        packed = self._packed(names)
        if packed is None:
            pick = operator.itemgetter(*(self.row_index[n] for n in names))
            return lambda payload: map(pick, self.iter_rows(payload))
        unpack = packed.iter_unpack

        def rows(payload):
            self.check(payload)
            return unpack(payload)
        return rows

    def picker_at(self, names):
        """picker() of chosen events only: a function (payload, indices) ->
        an iterator of the tuples of the events at those indices (names in
        struct order only)."""
        packed = self._packed(names)
        if packed is None:
            raise ValueError("picker_at: fields not in struct order: %s" % (names,))
        unpack_from, size = packed.unpack_from, self.size

        def rows(payload, indices):
            self.check(payload)
            return map(unpack_from, itertools.repeat(payload),
                       map(operator.mul, indices, itertools.repeat(size)))
        return rows

    def _packed(self, names):
        """One Struct of an event reading names (in struct order) and
        skipping the rest as padding; None if names are not in struct order."""
        slots = [self.slots[n] for n in names]
        if any(a[0] + a[2] > b[0] for a, b in zip(slots, slots[1:])):
            return None
        parts, pos = [], 0
        for offset, code, size in slots:
            if offset > pos:
                parts.append("%dx" % (offset - pos))
            parts.append(code)
            pos = offset + size
        if self.size > pos:
            parts.append("%dx" % (self.size - pos))
        return struct.Struct("=" + "".join(parts))

    def columns(self, payload, names):
        """One memoryview per scalar field of names, item i that field of
        event i, read in place: a block's columns for counting at C speed
        (collections.Counter, zip, map) without a tuple per event."""
        self.check(payload)
        raw = memoryview(payload).cast("B")
        out = []
        for name in names:
            offset, code, size = self.slots[name]
            if code not in "bBhHiIqQ" or offset % size or self.size % size:
                raise ValueError("columns: %s is no aligned integer field" % name)
            out.append(raw.cast(code)[offset // size::self.size // size])
        return out

    def bytes_of(self, payload, name, byte):
        """Byte number byte (0: the least significant) of the integer field
        name of every event, as one bytes object: a column in C, for
        combining flag bits of a whole block with bytes.translate."""
        self.check(payload)
        offset, code, size = self.slots[name]
        if code not in "bBhHiIqQ" or not 0 <= byte < size:
            raise ValueError("bytes_of: %s has no byte %d" % (name, byte))
        at = offset + (byte if sys.byteorder == "little" else size - 1 - byte)
        return bytes(memoryview(payload).cast("B")[at::self.size])

    def _iter_rows_general(self, payload, numeric):
        caches = [_StripCache() for _ in self.chars]
        others = [s.iter_unpack(payload) for s in self.chars]
        for row, *chars in zip(numeric, *others):
            for cache, raw in zip(caches, chars):
                row += cache[raw]
            yield row


class _StripCache(dict):
    """raw 1-tuple (b'comm\\0\\0..',) -> (b'comm',), computed once per value."""

    def __missing__(self, key):
        raw = key[0]
        nul = raw.find(b"\0")
        value = self[key] = (raw if nul < 0 else raw[:nul],)
        return value


_EVENTS = RowDecoder()
ROW_NAMES = _EVENTS.row_names
ROW_INDEX = _EVENTS.row_index
EVENT_SIZE = _EVENTS.size
_DICT_PLAN = _EVENTS.dict_plan
assert EVENT_SIZE == layout.EVENT_SIZE


def iter_rows(payload):
    """One flat tuple per event of payload (bytes-like); see ROW_INDEX."""
    return _EVENTS.iter_rows(payload)


def picker(names):
    """RowDecoder.picker() of struct pft_event."""
    return _EVENTS.picker(names)


def picker_at(names):
    """RowDecoder.picker_at() of struct pft_event."""
    return _EVENTS.picker_at(names)


def columns(payload, names):
    """RowDecoder.columns() of struct pft_event."""
    return _EVENTS.columns(payload, names)


def bytes_of(payload, name, byte):
    """RowDecoder.bytes_of() of struct pft_event."""
    return _EVENTS.bytes_of(payload, name, byte)


def row_count(payload):
    return len(payload) // EVENT_SIZE


def row_to_dict(row):
    """The event()-shaped dict of one row."""
    out = {}
    for name, kind, where in _DICT_PLAN:
        if kind == "scalar":
            out[name] = row[where]
        elif kind == "array":
            out[name] = [row[i] for i in where]
        else:
            out[name] = row[where].decode("utf-8", "replace")
    return out


def row_from_dict(ev):
    """The row of an event()-shaped dict (missing fields are zero)."""
    row = [0] * len(ROW_NAMES)
    for name, kind, where in _DICT_PLAN:
        value = ev.get(name)
        if kind == "scalar":
            row[where] = value or 0
        elif kind == "array":
            for i, v in zip(where, value or ()):
                row[i] = v
        else:
            row[where] = value.encode() if isinstance(value, str) else (value or b"")
    return tuple(row)


def event(buf):
    """One raw event (bytes-like, at least EVENT_SIZE) as a plain dict:
    arrays as lists, comm as str."""
    if len(buf) < EVENT_SIZE:
        raise ValueError("short event: %d bytes, need %d" % (len(buf), EVENT_SIZE))
    return row_to_dict(next(iter_rows(memoryview(buf)[:EVENT_SIZE])))


def iter_events(payload):
    """One dict per event of payload, shaped like event()."""
    return map(row_to_dict, iter_rows(payload))


def decode_block(payload):
    """All events of payload as a list of dicts (see iter_events)."""
    return list(iter_events(payload))
