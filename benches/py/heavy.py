"""A handler whose import costs about 0.35 s of CPU, like a real library's
(a synthetic cost, so the bench needs nothing installed), and optionally
holds CENOTE_BENCH_DATA_MB MiB of read-only data built at import."""
import os
import time

_began = time.process_time()
_x = 0
while time.process_time() - _began < 0.35:
    _x += sum(range(1000))

DATA = [bytes([i % 251]) * (1 << 20) for i in range(int(os.environ.get("CENOTE_BENCH_DATA_MB", "0")))]


def pid():
    return os.getpid()


def size():
    return len(DATA)


def echo(value=None):
    return value
