#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into corpus/<target>/ (run once; the
seeds are committed). Each seed is a small valid input: well-formed virtqueue
chains, a register sequence that brings a device up, API requests, a config file,
a command line, an ELF and a bzImage header. Layouts follow src/queue.rs and the
targets' doc comments. corpus/snapshot is not written here: its two seeds are the
state file of the smoke test's snapshot (a tiny guest, 1 vCPU), whole (first byte
0) and as a bare payload (first byte 1)."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
NEXT, WRITE, INDIRECT = 1, 2, 4
QSIZE = 16
STRIDE = 0x200


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


class Image:
    """Guest memory from address 0 with queues laid out as virtio-queue's mock does."""

    def __init__(self):
        self.mem = bytearray()

    def put(self, addr, data):
        if len(self.mem) < addr + len(data):
            self.mem.extend(b"\0" * (addr + len(data) - len(self.mem)))
        self.mem[addr:addr + len(data)] = data

    def desc(self, queue, index, addr, length, flags=0, nxt=0):
        self.put(queue * STRIDE + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))

    def avail(self, queue, heads):
        base = queue * STRIDE + 16 * QSIZE
        self.put(base, struct.pack("<HH", 0, len(heads)))
        self.put(base + 4, b"".join(struct.pack("<H", h) for h in heads))

    def chain(self, queue, first, bufs):
        """bufs: (addr, len, flags) in order; NEXT is added."""
        for i, (addr, length, flags) in enumerate(bufs):
            last = i + 1 == len(bufs)
            self.desc(queue, first + i, addr, length, flags | (0 if last else NEXT), 0 if last else first + i + 1)

    def seed(self, options=b"\0\0\0\0"):
        return bytes(options) + bytes(self.mem)


def block_seeds():
    # Header at 0x400 + 16 * slot, status at 0x480 + slot, data at 0x600.
    def header(img, slot, kind, sector):
        img.put(0x400 + 16 * slot, struct.pack("<IIQ", kind, 0, sector))
        img.put(0x480 + slot, b"\xff")  # the status byte, until the device writes it

    img = Image()
    header(img, 0, 0, 1)  # IN: read sector 1
    img.chain(0, 0, [(0x400, 16, 0), (0x600, 512, WRITE), (0x480, 1, WRITE)])
    img.avail(0, [0])
    write("block", "read", img.seed())

    img = Image()
    header(img, 0, 1, 2)  # OUT: write sectors 2-3 from two buffers
    img.put(0x600, b"\xab" * 1024)
    img.chain(0, 0, [(0x400, 16, 0), (0x600, 512, 0), (0x800, 512, 0), (0x480, 1, WRITE)])
    img.avail(0, [0])
    write("block", "write", img.seed())

    img = Image()
    header(img, 0, 4, 0)  # FLUSH
    header(img, 1, 8, 0)  # GET_ID
    img.chain(0, 0, [(0x400, 16, 0), (0x480, 1, WRITE)])
    img.chain(0, 2, [(0x410, 16, 0), (0x600, 20, WRITE), (0x481, 1, WRITE)])
    img.avail(0, [0, 2])
    write("block", "flush-getid", img.seed(b"\x02\0\0\0"))

    img = Image()
    header(img, 0, 0, 0)  # IN through an indirect table at 0x900
    img.desc(0, 0, 0x900, 48, INDIRECT)
    for i, (addr, length, flags) in enumerate([(0x400, 16, 0), (0x600, 512, WRITE), (0x480, 1, WRITE)]):
        last = i == 2
        img.put(0x900 + 16 * i, struct.pack("<QIHH", addr, length, flags | (0 if last else NEXT), 0 if last else i + 1))
    img.avail(0, [0])
    write("block", "indirect", img.seed(b"\x04\0\0\0"))


def net_seeds():
    img = Image()
    img.chain(0, 0, [(0x400, 1526, WRITE)])  # one receive buffer
    img.chain(0, 1, [(0x400, 12, WRITE), (0x410, 100, WRITE)])  # header and frame apart
    img.avail(0, [0, 1])
    frame = b"\0" * 12 + bytes.fromhex("ffffffffffff525400123456") + b"\x08\x06" + b"\x5a" * 46
    img.put(0xa00, frame)
    img.chain(1, 0, [(0xa00, len(frame), 0)])
    img.chain(1, 1, [(0xa00, 12, 0), (0xa0c, len(frame) - 12, 0)])
    img.avail(1, [0, 1])
    write("net", "rx-tx", img.seed(struct.pack("<HBB", 72, 1, 0)))


def console_seeds():
    img = Image()
    img.chain(0, 0, [(0x400, 64, WRITE)])
    img.chain(0, 1, [(0x440, 8, WRITE), (0x448, 8, WRITE)])
    img.avail(0, [0, 1])
    img.put(0x600, b"hello, console\n")
    img.chain(1, 0, [(0x600, 15, 0)])
    img.avail(1, [0])
    write("console", "rx-tx", img.seed(struct.pack("<HH", 10, 0)))


def rng_seeds():
    img = Image()
    img.chain(0, 0, [(0x400, 64, WRITE)])
    img.chain(0, 1, [(0x500, 16, WRITE), (0x600, 32, WRITE)])
    img.avail(0, [0, 1])
    write("rng", "two-requests", img.seed())


def vsock_seeds():
    # virtio_vsock_hdr: src_cid, dst_cid, src_port, dst_port, len, type, op, flags,
    # buf_alloc, fwd_cnt. Guest CID 3, host CID 2; STREAM = 1.
    def hdr(op, length=0, src_port=1000, dst_port=5000, flags=0):
        return struct.pack("<QQIIIHHIII", 3, 2, src_port, dst_port, length, 1, op, flags, 65536, 0)

    REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST = 1, 2, 3, 4, 5, 6, 7
    img = Image()
    # rx buffers: one for a header and data together, one split.
    img.chain(0, 0, [(0x1000, 44 + 256, WRITE)])
    img.chain(0, 1, [(0x1200, 44, WRITE), (0x1300, 256, WRITE)])
    img.avail(0, [0, 1])
    # tx: a request to the host listener on port 5000, data (header and payload
    # apart), a credit request, a shutdown; an answer to the host's connection.
    img.put(0x2000, hdr(REQUEST))
    img.put(0x2100, hdr(RW, 5))
    img.put(0x2180, b"hello")
    img.put(0x2200, hdr(CREDIT_REQUEST))
    img.put(0x2300, hdr(SHUTDOWN, flags=3))
    img.chain(1, 0, [(0x2000, 44, 0)])
    img.chain(1, 1, [(0x2100, 44, 0), (0x2180, 5, 0)])
    img.chain(1, 3, [(0x2200, 44, 0)])
    img.chain(1, 4, [(0x2300, 44, 0)])
    img.avail(1, [0, 1, 3, 4])
    write("vsock", "request-rw-shutdown", img.seed())

    img = Image()
    img.chain(0, 0, [(0x1000, 44 + 256, WRITE)])
    img.avail(0, [0])
    # The host's CONNECT 1234 (option bit 0) gets this guest's RESPONSE, then data
    # and a reset; the host's first local port is 1 << 30.
    img.put(0x2000, hdr(RESPONSE, src_port=1234, dst_port=1 << 30))
    img.put(0x2100, hdr(RW, 3, src_port=1234, dst_port=1 << 30) + b"abc")
    img.put(0x2200, hdr(RST, src_port=1234, dst_port=1 << 30))
    img.chain(1, 0, [(0x2000, 44, 0)])
    img.chain(1, 1, [(0x2100, 47, 0)])
    img.chain(1, 2, [(0x2200, 44, 0)])
    img.avail(1, [0, 1, 2])
    write("vsock", "host-connect", img.seed(b"\x01\0\0\0"))


def mmio_seeds():
    WIDTH = {1: 0, 2: 1, 4: 2, 8: 3, 0: 4, 3: 5}

    def rd(off, width=4):
        return struct.pack("<BBH", 0, WIDTH[width], off)

    def wr(off, value, width=4):
        return struct.pack("<BBH", 1, WIDTH[width], off) + value.to_bytes(width, "little")

    def mem(addr, data):
        return struct.pack("<BHB", 3, addr, len(data)) + data

    ops = rd(0x000) + rd(0x004) + rd(0x008) + rd(0x00c)
    ops += wr(0x070, 1) + wr(0x070, 3)
    ops += wr(0x014, 1) + rd(0x010) + wr(0x024, 1) + wr(0x020, 1) + wr(0x024, 0) + wr(0x020, 0)
    ops += wr(0x070, 0xb) + rd(0x070)
    ops += wr(0x030, 0) + rd(0x034) + wr(0x038, 16)
    ops += wr(0x080, 0x1000) + wr(0x084, 0) + wr(0x090, 0x1100) + wr(0x094, 0)
    ops += wr(0x0a0, 0x1200) + wr(0x0a4, 0) + wr(0x044, 1)
    ops += wr(0x070, 0xf) + rd(0x070)
    ops += mem(0x1000, struct.pack("<QIHH", 0x2000, 64, WRITE, 0))
    ops += mem(0x1100, struct.pack("<HHH", 0, 1, 0))
    ops += wr(0x050, 0) + bytes([2, 0])
    ops += rd(0x060) + wr(0x064, 1) + rd(0x0fc) + rd(0x100) + rd(0x100, 1)
    ops += wr(0x070, 0) + rd(0x070)
    write("mmio", "bring-up-and-reset", ops)
    write("mmio", "odd-widths", rd(0x000, 1) + rd(0x001, 2) + rd(0x0ff, 8) + rd(0xffd, 3)
          + wr(0x070, 0xff, 1) + wr(0x030, 7, 2) + rd(0x034, 0) + wr(0x100, 0x1122334455667788, 8))


API_BODIES = {
    0: {"vcpu_count": 2, "mem_size_mib": 256, "smt": False},
    1: {"mem_size_mib": 512},
    2: {"kernel_image_path": "/proc/self/exe", "boot_args": "console=ttyS0 reboot=k"},
    3: {"drive_id": "rootfs", "path_on_host": "/dev/null", "is_root_device": True, "is_read_only": True,
        "cache_type": "Writeback", "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000}}},
    4: {"drive_id": "rootfs", "path_on_host": "/dev/null"},
    5: {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:12:34:56",
        "rx_rate_limiter": {"ops": {"size": 100, "one_time_burst": 10, "refill_time": 100}}},
    6: {"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 10}}},
    7: {"log_path": "/dev/null", "level": "Debug", "show_level": True},
    8: {"metrics_path": "/dev/null"},
    9: {"rate_limiter": {"bandwidth": {"size": 4096, "refill_time": 100}}},
    10: {"serial_out_path": "/dev/null"},
    11: {"action_type": "SendCtrlAltDel"},
    12: {"state": "Paused"},
}


def api_seeds():
    for sel, body in API_BODIES.items():
        write("api", f"body-{sel:02}", bytes([sel]) + json.dumps(body).encode())
    write("api", "shutdown", bytes([11]) + json.dumps({"action_type": "Shutdown", "timeout_s": 5}).encode())


def http_request(method, path, body=None, extra=""):
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    return (head + f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def http_seeds():
    stream = http_request("PUT", "/machine-config", API_BODIES[0])
    stream += http_request("PUT", "/drives/rootfs", API_BODIES[3])
    stream += http_request("GET", "/vm/config")
    stream += http_request("PATCH", "/drives/rootfs", API_BODIES[4], "Connection: close\r\n")
    write("http", "pipelined", b"\xff" + stream)
    write("http", "byte-at-a-time", b"\x00" + http_request("PUT", "/actions", API_BODIES[11]))
    write("http", "expect-continue", b"\x02" + http_request("PUT", "/boot-source", API_BODIES[2], "Expect: 100-continue\r\n"))
    write("http", "version-unsupported", b"\x10" + http_request("GET", "/version") + http_request("PUT", "/vsock", {}) + http_request("DELETE", "/"))


def config_seeds():
    doc = {
        "boot-source": API_BODIES[2],
        "machine-config": API_BODIES[0],
        "drives": [API_BODIES[3]],
        "network-interfaces": [API_BODIES[5]],
        "logger": API_BODIES[7],
        "metrics": API_BODIES[8],
        "entropy": API_BODIES[9],
        "serial": API_BODIES[10],
    }
    write("config", "full", json.dumps(doc, indent=1).encode())
    write("config", "machine-only", json.dumps({"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}).encode())


def cli_seeds():
    def argv(*args):
        return b"\0".join(a.encode() for a in args)

    write("cli", "run-all", argv("run", "--kernel", "/proc/self/exe", "--initrd", "/proc/self/exe",
                                  "--cmdline", "console=hvc0", "--vcpus", "2", "--memory", "256",
                                  "--disk", "path=/dev/null,readonly=on,id=root,cache=writeback",
                                  "--net", "tap=tap0,mac=52:54:00:12:34:56", "--console", "virtio", "--no-acpi"))
    write("cli", "run-api", argv("run", "--api-sock", "/tmp/x.sock", "--disk", "path=/dev/null", "--no-seccomp"))
    write("cli", "ctl", argv("ctl", "--api-sock", "/tmp/x.sock", "shutdown", "--timeout", "5"))


def elf_kernel():
    """A minimal ELF64 x86_64 executable: one PT_LOAD of 16 bytes at 1 MiB."""
    ehdr_size, phdr_size = 64, 56
    code = b"\xf4" * 16  # hlt
    offset = ehdr_size + phdr_size
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, ehdr_size, 0, 0,
                               ehdr_size, phdr_size, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, offset, 0x100000, 0x100000, len(code), len(code), 0x1000)
    return ehdr + phdr + code


def bzimage():
    """A bzImage: boot sector, one setup sector, a setup header of protocol 2.15 with
    XLF_KERNEL_64, and a few bytes of protected-mode kernel."""
    setup_sects = 1
    img = bytearray(512 * (1 + setup_sects))
    img[0x1f1] = setup_sects
    struct.pack_into("<H", img, 0x1fe, 0xaa55)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x020f)
    img[0x211] = 0x01  # loadflags: LOADED_HIGH
    struct.pack_into("<I", img, 0x214, 0x100000)  # code32_start
    struct.pack_into("<H", img, 0x236, 0x1)  # xloadflags: XLF_KERNEL_64
    struct.pack_into("<I", img, 0x230, 0x200000)  # kernel_alignment
    return bytes(img) + b"\xf4" * 64


def loader_seeds():
    write("loader", "elf", b"\0" + elf_kernel())
    write("loader", "bzimage", b"\0" + bzimage())
    write("loader", "initrd", b"\x01" + b"070701" + b"0" * 104 + b"TRAILER!!!\0")


if __name__ == "__main__":
    block_seeds()
    net_seeds()
    console_seeds()
    rng_seeds()
    vsock_seeds()
    mmio_seeds()
    api_seeds()
    http_seeds()
    config_seeds()
    cli_seeds()
    loader_seeds()
