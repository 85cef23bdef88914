"""fentry/fexit on a module's function: the bpf(2) commands bcc 0.26 lacks.

bcc 0.26 loads a KFUNC_PROBE only against vmlinux's BTF (a module's BTF
object came with bcc 0.28), and the filesystems' vm_ops handlers live in
modules on Debian (ext4.ko, xfs.ko).  The kernel takes a module's BTF object
since 5.11 (attach_btf_obj_fd), so pfntrace loads bcc's compiled bytecode
itself: a BPF_PROG_TYPE_TRACING program against the function's BTF id in its
module's BTF object, attached with BPF_RAW_TRACEPOINT_OPEN as bcc attaches
its own.  The bytecode already holds its maps' fds (bcc writes them in as it
compiles), so nothing needs relocating.  Constants and layouts are
include/uapi/linux/bpf.h's.
"""

import ctypes
import os
import struct

NR_BPF = 321            # x86_64: probeplan.fentry_plan allows trampolines nowhere else
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_BTF_GET_FD_BY_ID = 19
BPF_BTF_GET_NEXT_ID = 23
BPF_PROG_TYPE_TRACING = 26
ATTACH_TYPES = {"fentry": 24, "fexit": 25}     # BPF_TRACE_FENTRY, BPF_TRACE_FEXIT
ATTR_SIZE = 128          # bytes past what this kernel knows must be zero: they are
LOG_SIZE = 1 << 20

# union bpf_attr as BPF_PROG_LOAD reads it, from prog_type to attach_btf_obj_fd:
# prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
# kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type,
# prog_btf_fd, func_info_rec_size, func_info, func_info_cnt,
# line_info_rec_size, line_info, line_info_cnt, attach_btf_id, attach_btf_obj_fd
PROG_LOAD = struct.Struct("<IIQQIIQII16sIIIIQIIQIII")
# struct bpf_btf_info: btf, btf_size, id, name, name_len, kernel_btf
BTF_INFO = struct.Struct("<QIIQII")
BTF_NAME_LEN = 64

_libc = ctypes.CDLL(None, use_errno=True)


class TrampolineError(Exception):
    """The kernel refused to load or attach a trampoline program; one line."""


def _bpf(cmd, attr):
    """bpf(cmd, attr): (result, the attr buffer as the kernel left it);
    result is -errno on failure."""
    buf = ctypes.create_string_buffer(bytes(attr), ATTR_SIZE)
    ret = _libc.syscall(NR_BPF, cmd, buf, ATTR_SIZE)
    return (-ctypes.get_errno() if ret < 0 else ret), buf


def prog_load_attr(insns, insn_cnt, license, log_level, log_size, log_buf, name, attach_type,
                   btf_id, btf_obj_fd):
    """The BPF_PROG_LOAD attr of a tracing program (addresses as ints)."""
    return PROG_LOAD.pack(BPF_PROG_TYPE_TRACING, insn_cnt, insns, license, log_level, log_size,
                          log_buf, 0, 0, name.encode()[:15], 0, ATTACH_TYPES[attach_type],
                          0, 0, 0, 0, 0, 0, 0, btf_id, btf_obj_fd)


def _btf_name(fd):
    name = ctypes.create_string_buffer(BTF_NAME_LEN)
    info = ctypes.create_string_buffer(BTF_INFO.pack(0, 0, 0, ctypes.addressof(name),
                                                     BTF_NAME_LEN, 0))
    ret, _ = _bpf(BPF_OBJ_GET_INFO_BY_FD,
                  struct.pack("<IIQ", fd, BTF_INFO.size, ctypes.addressof(info)))
    return name.value.decode() if ret == 0 else None


def module_btf_fd(module):
    """An fd of the kernel's BTF object of `module` (its name in
    /sys/kernel/btf), found by walking the loaded BTF objects."""
    next_id = 0
    while True:
        ret, buf = _bpf(BPF_BTF_GET_NEXT_ID, struct.pack("<II", next_id, 0))
        if ret < 0:
            raise TrampolineError("no BTF object of module %s is loaded" % module)
        next_id = struct.unpack_from("<I", buf, 4)[0]
        fd, _ = _bpf(BPF_BTF_GET_FD_BY_ID, struct.pack("<I", next_id))
        if fd < 0:
            continue    # unloaded meanwhile
        if _btf_name(fd) == module:
            return fd
        os.close(fd)


class Trampolines:
    """Tracing programs loaded and attached by hand; close() detaches them."""

    def __init__(self):
        self.programs = {}      # label -> program fd
        self._fds = []          # programs, links and BTF objects, closed together
        self._module_fds = {}

    def _btf_obj_fd(self, module):
        if not module:
            return 0            # vmlinux
        if module not in self._module_fds:
            fd = module_btf_fd(module)
            self._fds.append(fd)
            self._module_fds[module] = fd
        return self._module_fds[module]

    def _load(self, insns, name, attach_type, btf_id, btf_obj_fd, log_level):
        code = ctypes.create_string_buffer(insns, len(insns))
        license = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(LOG_SIZE if log_level else 1)
        attr = prog_load_attr(ctypes.addressof(code), len(insns) // 8, ctypes.addressof(license),
                              log_level, LOG_SIZE if log_level else 0,
                              ctypes.addressof(log) if log_level else 0, name, attach_type,
                              btf_id, btf_obj_fd)
        fd, _ = _bpf(BPF_PROG_LOAD, attr)
        return fd, log.value.decode("utf-8", "replace")

    def attach(self, insns, name, attach_type, function, btf_id, module=None):
        """Load insns (bcc's dump_func) as an fentry/fexit program on
        function (BTF id btf_id in module's BTF; vmlinux when module is None)
        and attach it.  Returns the program's fd."""
        btf_obj_fd = self._btf_obj_fd(module)
        fd, _ = self._load(insns, name, attach_type, btf_id, btf_obj_fd, 0)
        if fd < 0:
            # Again with the verifier's log, for the one line that says why.
            err, log = self._load(insns, name, attach_type, btf_id, btf_obj_fd, 1)
            lines = [line for line in log.splitlines() if line.strip()]
            raise TrampolineError("%s on %s: %s%s" % (
                attach_type, function, os.strerror(-fd),
                ": " + lines[-1] if err < 0 and lines else ""))
        self._fds.append(fd)
        link, _ = _bpf(BPF_RAW_TRACEPOINT_OPEN, struct.pack("<QI", 0, fd))
        if link < 0:
            raise TrampolineError("%s on %s: attach: %s" % (attach_type, function,
                                                             os.strerror(-link)))
        self._fds.append(link)
        self.programs["%s %s" % (name, function)] = fd
        return fd

    def close(self):
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds, self.programs, self._module_fds = [], {}, {}
