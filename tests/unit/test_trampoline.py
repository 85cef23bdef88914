"""The BPF_PROG_LOAD attr pfntrace builds for a trampoline program on a
module's function: each field where include/uapi/linux/bpf.h puts it."""

import struct

from pfntrace.kernel.trampoline import ATTR_SIZE, PROG_LOAD, prog_load_attr

# Byte offsets in union bpf_attr (BPF_PROG_LOAD), from the uapi header.
OFFSETS = {"prog_type": 0, "insn_cnt": 4, "insns": 8, "license": 16, "log_level": 24,
           "log_size": 28, "log_buf": 32, "prog_name": 48, "expected_attach_type": 68,
           "attach_btf_id": 108, "attach_btf_obj_fd": 112}


def test_prog_load_attr_puts_each_field_at_its_uapi_offset():
    attr = prog_load_attr(0x1111000, 57, 0x2222000, 1, 4096, 0x3333000, "handler_fexit",
                          "fexit", 100957, 24)
    assert len(attr) == PROG_LOAD.size == 116 <= ATTR_SIZE

    def u32(name):
        return struct.unpack_from("<I", attr, OFFSETS[name])[0]

    def u64(name):
        return struct.unpack_from("<Q", attr, OFFSETS[name])[0]

    assert u32("prog_type") == 26                   # BPF_PROG_TYPE_TRACING
    assert u32("insn_cnt") == 57
    assert (u64("insns"), u64("license"), u64("log_buf")) == (0x1111000, 0x2222000, 0x3333000)
    assert (u32("log_level"), u32("log_size")) == (1, 4096)
    assert attr[48:64] == b"handler_fexit\0\0\0"
    assert u32("expected_attach_type") == 25        # BPF_TRACE_FEXIT
    assert (u32("attach_btf_id"), u32("attach_btf_obj_fd")) == (100957, 24)
    fentry = prog_load_attr(0, 1, 0, 0, 0, 0, "a_name_longer_than_fifteen", "fentry", 1, 0)
    assert struct.unpack_from("<I", fentry, 68)[0] == 24       # BPF_TRACE_FENTRY
    assert fentry[48:64] == b"a_name_longer_t\0"                # 15 characters and a NUL
