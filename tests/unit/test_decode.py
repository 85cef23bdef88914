"""pfntrace.decode: bulk decoding of EVENTS payloads."""

import random

import cffi
import pytest

from pfntrace import decode, layout

ES = layout.EVENT_SIZE


def random_event(rng, **over):
    fields = {}
    for name, field in layout.ffi.typeof("struct pft_event").fields:
        t = field.type
        if name == "comm":
            continue
        if t.kind == "array":
            item, n = t.item.cname, t.length
        else:
            item, n = t.cname, None
        bits = 8 * layout.ffi.sizeof(item)
        if item.startswith("u"):
            lo, hi = 0, (1 << bits) - 1
        else:
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

        def pick():
            return rng.choice([lo, hi, 0, 1, rng.randint(lo, hi)])

        fields[name] = [pick() for _ in range(n)] if n else pick()
    fields["comm"] = rng.choice(["", "dd", "x" * 15, "fio-worker.3"])
    fields.update(over)
    return layout.encode(**fields)


def by_cffi(raw):
    """One event read field by field through cffi's view of pfntrace.h: a
    reading independent of decode's struct format."""
    ev = layout.ffi.cast("struct pft_event *", layout.ffi.from_buffer(bytes(raw)))
    out = {}
    for name in layout.FIELDS:
        value = getattr(ev, name)
        if name == "comm":
            out[name] = layout.ffi.string(value).decode("utf-8", "replace")
        elif isinstance(value, layout.ffi.CData):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def test_row_index_flattens_arrays():
    idx = decode.ROW_INDEX
    assert len(idx) == len(decode.ROW_NAMES)
    for name in ("mtime_sec0", "mtime_sec1", "ctime_sec0", "ctime_sec1",
                 "mtime_nsec0", "mtime_nsec1", "ctime_nsec0", "ctime_nsec1",
                 "ts_ns", "pid", "comm"):
        assert name in idx
    assert "mtime_sec" not in idx
    scalars = [n for n in layout.FIELDS if n not in idx]
    assert scalars == ["mtime_sec", "ctime_sec", "mtime_nsec", "ctime_nsec", "clock_ns"]


def test_row_from_dict_is_the_inverse_of_row_to_dict():
    raw = layout.encode(ts_ns=1, mtime_sec=[6, 7], ctime_nsec=[12, 13], clock_ns=[3, 4],
                        comm="x", handler=98)
    (row,) = list(decode.iter_rows(raw))
    assert decode.row_from_dict(decode.row_to_dict(row)) == row
    assert decode.event(raw) == decode.row_to_dict(row) == by_cffi(raw)


def test_struct_built_from_cffi():
    assert decode._EVENTS.numeric.size == ES
    assert decode.EVENT_SIZE == ES


def test_rows_match_cffi():
    rng = random.Random(7)
    raws = [random_event(rng) for _ in range(200)]
    payload = b"".join(raws)
    rows = list(decode.iter_rows(payload))
    assert len(rows) == 200 == decode.row_count(payload)
    idx = decode.ROW_INDEX
    for raw, row in zip(raws, rows):
        d = by_cffi(raw)
        assert decode.event(raw) == d
        for name in layout.FIELDS:
            value = d[name]
            if name == "comm":
                assert row[idx["comm"]] == value.encode()
            elif isinstance(value, list):
                assert [row[idx["%s%d" % (name, i)]] for i in range(len(value))] == value
            else:
                assert row[idx[name]] == value, name


def test_decode_block_equals_cffi():
    rng = random.Random(8)
    raws = [random_event(rng) for _ in range(50)]
    got = decode.decode_block(b"".join(raws))
    want = [by_cffi(r) for r in raws]
    assert got == want
    assert [list(d) for d in got] == [list(d) for d in want]   # same key order
    assert list(decode.iter_events(memoryview(b"".join(raws)))) == want


def test_comm_stripping():
    raw = bytearray(layout.encode(comm="ab"))
    off = layout.ffi.offsetof("struct pft_event", "comm")
    raw[off + 5] = ord("z")              # junk after the terminating NUL
    full = bytearray(layout.encode())
    full[off:off + 16] = b"0123456789abcdef"   # no NUL at all
    bad = bytearray(layout.encode())
    bad[off:off + 3] = b"\xffa\0"
    rows = list(decode.iter_rows(bytes(raw + full + bad)))
    c = decode.ROW_INDEX["comm"]
    assert [r[c] for r in rows] == [b"ab", b"0123456789abcdef", b"\xffa"]
    dicts = decode.decode_block(bytes(raw + full + bad))
    assert dicts[0]["comm"] == "ab" == decode.event(bytes(raw))["comm"]
    assert dicts[2]["comm"] == "\ufffda"


def test_empty_and_partial_payloads():
    assert list(decode.iter_rows(b"")) == []
    assert decode.decode_block(b"") == []
    with pytest.raises(ValueError):
        decode.iter_rows(b"\0" * (ES - 1))
    with pytest.raises(ValueError):
        decode.decode_block(b"\0" * (ES + 8))


def test_row_to_dict():
    raw = layout.encode(ts_ns=9, mtime_sec=[3, -4], comm="dd", pid=42)
    (row,) = decode.iter_rows(raw)
    assert decode.row_to_dict(row) == decode.event(raw) == by_cffi(raw)


def test_build_handles_padding_and_several_char_arrays():
    ffi = cffi.FFI()
    ffi.cdef("""
        struct t {
            uint8_t a;
            uint64_t b;
            char name[5];
            int16_t c[3];
            char tag[4];
        };
    """)
    numeric, chars, names, index, plan, size, _ = decode._build(ffi, "struct t")
    assert size == ffi.sizeof("struct t") == numeric.size
    assert names == ["a", "b", "c0", "c1", "c2", "name", "tag"]
    assert [(n, o, length) for n, o, length in chars] == [
        ("name", ffi.offsetof("struct t", "name"), 5),
        ("tag", ffi.offsetof("struct t", "tag"), 4)]
    v = ffi.new("struct t *", {"a": 7, "b": 2**64 - 1, "name": b"ab", "c": [-1, 2, -3],
                               "tag": b"xyzw"})
    (row,) = numeric.iter_unpack(bytes(ffi.buffer(v)))
    assert row == (7, 2**64 - 1, -1, 2, -3)
    dec = decode.RowDecoder(ffi, "struct t")
    rows = list(dec.iter_rows(bytes(ffi.buffer(v)) * 2))
    assert rows == [(7, 2**64 - 1, -1, 2, -3, b"ab", b"xyzw")] * 2
    assert dec.row_index["tag"] == 6


def test_row_decoder_without_char_arrays():
    ffi = cffi.FFI()
    ffi.cdef("struct u { uint32_t x; int32_t y[2]; };")
    dec = decode.RowDecoder(ffi, "struct u")
    v = ffi.new("struct u *", {"x": 1, "y": [-2, 3]})
    assert list(dec.iter_rows(bytes(ffi.buffer(v)))) == [(1, -2, 3)]
