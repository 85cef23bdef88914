"""On-disk framing of a pfntrace recording (``.pft``).

A recording is FILE_MAGIC followed by self-delimiting blocks::

    offset  size  field
    0       4     block magic  b"PFTB"
    4       2     kind         (BLOCK_HEADER, BLOCK_EVENTS, ...)
    6       2     flags        (0; readers ignore it)
    8       4     payload length in bytes
    12      4     CRC32 of the payload
    16      8     sequence number (0 for the HEADER block, then +1 per block)
    24      4     CRC32 of bytes 0..23 of this block header
    28      4     zero padding
    32      ...   payload

Framing integers are little-endian whatever the machine; the EVENTS payload is
raw ``struct pft_event`` records in the recording machine's byte order, which
the HEADER block names ("byte_order").  HEADER, META, LOST, COUNTS and TRAILER
payloads are UTF-8 JSON objects.

Each block goes to disk with one positional write of header + payload, so a
file cut short (kill -9, full disk) ends in at most one torn block, which the
length and CRCs make detectable; everything before it stays readable.
"""

import json
import struct
import sys
import zlib

from pfntrace import layout

FILE_MAGIC = b"\x89PFT\r\n\x1a\n"   # PNG-style: catches text-mode mangling
BLOCK_MAGIC = b"PFTB"
FORMAT_VERSION = 1

EXTENSION = ".pft"
DEFAULT_NAME = "pfntrace.pft"

BLOCK_HEADER = 1    # JSON, always the first block
BLOCK_EVENTS = 2    # a whole number of raw struct pft_event records
BLOCK_META = 3      # JSON, merged into earlier META (later wins)
BLOCK_LOST = 4      # JSON {"per_cpu": [...]}, cumulative; the last one counts
BLOCK_TRAILER = 5   # JSON, always the last block of a finished recording
BLOCK_COUNTS = 6    # JSON {"files": [...]}: what the kernel counted per file and
                    # process instead of sending events; cumulative, the last one counts

KIND_NAMES = {
    BLOCK_HEADER: "HEADER",
    BLOCK_EVENTS: "EVENTS",
    BLOCK_META: "META",
    BLOCK_LOST: "LOST",
    BLOCK_TRAILER: "TRAILER",
    BLOCK_COUNTS: "COUNTS",
}

_BLOCK = struct.Struct("<4sHHIIQI4x")
BLOCK_HEADER_SIZE = _BLOCK.size  # 32
_CRC_COVERED = 24                # header bytes covered by the header CRC
assert BLOCK_HEADER_SIZE == 32

MAX_PAYLOAD = 0xFFFFFFFF
# JSON blocks are read into memory whole; a sane recorder never comes close.
MAX_JSON_PAYLOAD = 256 << 20

DEFAULT_EVENTS_BLOCK_BYTES = 1 << 20


class RecordingError(Exception):
    """A recording cannot be written or read; str() is one line for the user."""


class BlockHeader:
    __slots__ = ("kind", "flags", "length", "crc", "seq")

    def __init__(self, kind, flags, length, crc, seq):
        self.kind = kind
        self.flags = flags
        self.length = length
        self.crc = crc
        self.seq = seq

    @property
    def kind_name(self):
        return KIND_NAMES.get(self.kind, "kind %d" % self.kind)

    def __repr__(self):
        return "BlockHeader(%s, length=%d, seq=%d)" % (self.kind_name, self.length, self.seq)


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def pack_block_header(kind, seq, payload):
    """The 32-byte header for payload (any bytes-like)."""
    length = len(payload)
    if length > MAX_PAYLOAD:
        raise ValueError("block payload too large: %d bytes" % length)
    head = _BLOCK.pack(BLOCK_MAGIC, kind, 0, length, crc32(payload), seq, 0)
    hcrc = crc32(head[:_CRC_COVERED])
    return head[:_CRC_COVERED] + struct.pack("<I4x", hcrc)


def unpack_block_header(raw):
    """Parse 32 bytes into a BlockHeader; None if the magic or header CRC is bad."""
    if len(raw) != BLOCK_HEADER_SIZE:
        return None
    magic, kind, flags, length, crc, seq, hcrc = _BLOCK.unpack(raw)
    if magic != BLOCK_MAGIC or hcrc != crc32(raw[:_CRC_COVERED]):
        return None
    return BlockHeader(kind, flags, length, crc, seq)


def encode_json(obj):
    """Compact JSON bytes.  ASCII-only output keeps surrogate-escaped paths
    (os.fsdecode of non-UTF-8 names) round-tripping exactly."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


def _no_constant(name):
    # Python's parser takes NaN and Infinity, which JSON does not have and
    # no count or timestamp can be.
    raise ValueError("%s is not a JSON value" % name)


def decode_json(payload):
    """A JSON object from payload; ValueError if it is not one."""
    try:
        obj = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise ValueError("JSON payload is %s, not an object" % type(obj).__name__)
    return obj


def event_layout(ffi=None):
    """[{name, offset, size, type}] of struct pft_event, from cffi."""
    ffi = ffi or layout.ffi
    out = []
    for name, field in ffi.typeof("struct pft_event").fields:
        out.append({
            "name": name,
            "offset": field.offset,
            "size": ffi.sizeof(field.type),
            "type": field.type.cname,
        })
    return out


def layout_header():
    """The self-describing keys the writer puts into every HEADER block."""
    return {
        "format_version": FORMAT_VERSION,
        "event_size": layout.EVENT_SIZE,
        "byte_order": sys.byteorder,
        "event_layout": event_layout(),
    }


def layout_mismatch(header):
    """None if header's event layout matches this pfntrace's, else a short why."""
    if header.get("byte_order", sys.byteorder) != sys.byteorder:
        return "recorded on a %s-endian machine" % header.get("byte_order")
    size = header.get("event_size")
    if size != layout.EVENT_SIZE:
        return "event size %s, this pfntrace's is %d" % (size, layout.EVENT_SIZE)
    recorded = header.get("event_layout")
    if not isinstance(recorded, list):
        return "no event layout in the header"
    ours = event_layout()
    rec_by_name = {}
    for f in recorded:
        if isinstance(f, dict) and "name" in f:
            rec_by_name[f["name"]] = f
    for f in ours:
        r = rec_by_name.get(f["name"])
        if r is None:
            return "field %s missing from the recording" % f["name"]
        for key in ("offset", "size", "type"):
            if r.get(key) != f[key]:
                return "field %s: %s %s in the recording, %s here" % (
                    f["name"], key, r.get(key), f[key])
    extra = sorted(set(rec_by_name) - {f["name"] for f in ours})
    if extra:
        return "field %s unknown to this pfntrace" % extra[0]
    return None


def merge_meta(into, new):
    """Deep-merge dict new into dict into (in place): nested dicts merge,
    anything else from new replaces."""
    for key, value in new.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merge_meta(old, value)
        elif isinstance(value, dict):
            into[key] = merge_meta({}, value)
        else:
            into[key] = value
    return into
