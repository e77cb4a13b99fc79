# Handlers for the shared-memory tests: they say how bytes arrived, send
# them back, build results in place, and break the shared-memory wire on
# purpose.
import os
import struct
import time

import cenote


def arrived(data):
    # The type a payload arrived as, and whether it is a view on a region.
    shared = isinstance(data, memoryview) and type(data.obj).__name__ == "mmap"
    return {"type": type(data).__name__, "len": len(data), "shared": shared,
            "readonly": isinstance(data, memoryview) and data.readonly}


def echo(data):
    return data


def make(n):
    # Byte i is i % 251.
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def filled(n, byte):
    # A result built in place: no copy on its way to the host.
    buf = cenote.buffer(n)
    buf[:] = bytes([byte]) * n
    return {"shared": type(buf.obj).__name__ == "mmap", "data": buf}


def unreturned(n):
    # Blocks lent and dropped: free again, not leaked.
    for _ in range(8):
        buf = cenote.buffer(n)
        buf[0] = 1
    return "ok"


def numpy_sum(data):
    import numpy
    return int(numpy.frombuffer(data, dtype=numpy.uint8).sum(dtype=numpy.uint64))


def die_holding(data):
    # A crash with a call's bytes in the region.
    os._exit(3)


def _frames_out():
    import __main__
    return __main__._cenote_frames_out


def bad_descriptor(rid, offset, length):
    # A result frame whose one attachment is a descriptor the host must
    # refuse (or, with a good one, a block never handed over).
    body = b'{"t":"result","id":%d,"value":{"$cenote_bytes":0}}' % rid
    size = 4 + 4 + len(body) + 16
    head = struct.pack(">III", size | (1 << 31), 1, 16 | (1 << 31))
    os.write(_frames_out(), head + body + struct.pack(">QQ", offset, length))
    time.sleep(30)


def pid():
    return os.getpid()
