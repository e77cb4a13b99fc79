# Handlers for the binary payload tests: they report what arrived, make
# bytes of a known pattern, and break the wire on purpose.
import array
import os
import struct
import time
import zlib


def _pattern(n, seed=0):
    block = bytes((seed + i) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def _describe(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"type": type(v).__name__, "len": len(v), "sum": zlib.adler32(v)}
    if isinstance(v, dict):
        return {k: _describe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_describe(x) for x in v]
    return v


def describe(*args, **kwargs):
    return {"args": [_describe(a) for a in args], "kwargs": _describe(kwargs)}


def echo(value=None):
    return value


def make(n, kind="bytes", seed=0):
    data = _pattern(n, seed)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "ints":
        # A view whose items are not bytes: sent as its raw memory.
        return memoryview(array.array("i", [1, 2, 3]))
    if kind == "nested":
        return {"n": n, "parts": [data[: n // 2], {"rest": bytearray(data[n // 2:])}], "empty": b""}
    return data


def chunks(count, size):
    for i in range(count):
        yield {"i": i, "data": _pattern(size, i)}


def _frames_out():
    import __main__
    return __main__._cenote_frames_out


def _attached_frame(rid, declared, sent):
    # A result frame announcing one attachment of `declared` bytes, of
    # which `sent` are written.
    body = b'{"t":"result","id":%d,"value":{"$cenote_bytes":0}}' % rid
    size = 4 + 4 + len(body) + declared
    head = struct.pack(">III", size | (1 << 31), 1, declared)
    return head + body + b"z" * sent


def truncated():
    # Half an attachment, then the process ends.
    os.write(_frames_out(), _attached_frame(1, 1000, 500))
    os._exit(3)


def bad_table():
    # A table of 5 attachments in a frame of 8 bytes.
    os.write(_frames_out(), struct.pack(">III", 8 | (1 << 31), 5, 0))
    time.sleep(30)


def attachments_on_a_pong():
    body = b'{"t":"pong","id":1}'
    os.write(_frames_out(), struct.pack(">III", (8 + len(body) + 1) | (1 << 31), 1, 1) + body + b"x")
    time.sleep(30)


def pid():
    return os.getpid()
