"""Handlers that misbehave on purpose, for cenote's failure tests."""
import asyncio
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time

_hoard = []


def echo(value=None):
    return value


def add(a, b):
    return a + b


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def pid():
    return os.getpid()


def raise_value(message="bad value"):
    raise ValueError(message)


def raise_inside_typeerror():
    return len(5)


def exit_now(code=3):
    sys.stderr.write("about to exit with %d\n" % code)
    sys.stderr.flush()
    os._exit(code)


def kill_self():
    sys.stderr.write("about to SIGKILL myself\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def segfault():
    sys.stderr.write("about to segfault\n")
    sys.stderr.flush()
    ctypes.string_at(0)


def unserializable():
    return {1, 2, 3}


def not_a_number():
    return float("nan")


def big(n):
    return "x" * n


def noise(value=None):
    print("print() from a handler")
    sys.stdout.write("sys.stdout.write from a handler\n")
    os.write(1, b"os.write(1) from a handler\n")
    libc = ctypes.CDLL(None)
    libc.printf(b"printf from C\n")
    libc.fflush(None)
    subprocess.run(["echo", "child process output"], check=True)
    return value


def stderr_lines(n):
    for i in range(n):
        sys.stderr.write("line %d\n" % i)
    sys.stderr.flush()
    return n


def garbage():
    import __main__
    os.write(__main__._cenote_frames_out, b"\x00\x00\x00\x05hello")
    time.sleep(5)


def huge_header():
    import __main__
    os.write(__main__._cenote_frames_out, b"\xff\xff\xff\xf0")
    time.sleep(5)


def spawn_sleeper(seconds=60):
    """Start a grandchild in the worker's process group and return its pid."""
    p = subprocess.Popen(["sleep", str(seconds)])
    return p.pid


def spawn_and_hang(seconds=60):
    subprocess.Popen(["sleep", str(seconds)])
    time.sleep(seconds)


def grow(mb):
    _hoard.append(bytearray(mb * 1024 * 1024))
    for chunk in _hoard:
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
    return len(_hoard)


def count(n, delay=0.0):
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield i


def gen_fails(after):
    for i in range(after):
        yield i
    raise RuntimeError("generator broke after %d items" % after)


async def async_add(a, b, delay=0.0):
    await asyncio.sleep(delay)
    return a + b


async def async_count(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def kwargs_echo(**kw):
    return kw


def positional(a, b, c=3):
    return [a, b, c]


# What is callable by name: callables other than classes.
class Widget:
    """A class: neither listed nor callable by name."""

    def __init__(self, size=1):
        self.size = size


add_ten = functools.partial(add, 10)


# Exits from inside a handler.
def sys_exit(code=None):
    sys.exit(code)


async def async_sys_exit(code=None):
    await asyncio.sleep(0)
    sys.exit(code)


def gen_sys_exit(after):
    for i in range(after):
        yield i
    sys.exit(after)


def interrupt():
    sys.stderr.write("about to raise KeyboardInterrupt\n")
    raise KeyboardInterrupt("from a handler")


# Session state, for the affinity tests: each process counts calls per
# session, so a call that reaches another worker than its session's answers
# a count that does not follow.
_sessions = {}


def session_bump(session):
    _sessions[session] = _sessions.get(session, 0) + 1
    return [os.getpid(), _sessions[session]]
