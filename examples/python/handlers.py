"""Example handlers for a cenote Python pool.

Every public function here can be called by name from Rust:
`pool.call(PyCall::new("echo", json!({"value": 1})))`. Arguments arrive as
JSON: an array is passed positionally, an object as keyword arguments. Raw
bytes sent from Rust arrive as `bytes` (from 64 KiB on, as a read-only
memoryview on shared memory, valid until the handler returns), and `bytes`
(or a bytearray or memoryview) returned go back as raw bytes, with no base64
on the way.
"""
import asyncio
import hashlib
import math
import os
import time
import zlib

_INVERT = bytes(255 - b for b in range(256))


def echo(value=None, **extra):
    """Return what was sent (the round-trip baseline)."""
    if extra:
        return {"value": value, **extra}
    return value


def add(a, b):
    """Add two numbers."""
    return a + b


def primes(limit=10_000):
    """CPU-bound work: count the primes below `limit`."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(math.isqrt(limit - 1)) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


def embed(text, dims=8):
    """A stand-in for a model call: a deterministic unit vector per text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [digest[i % len(digest)] - 127.5 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embed_batch(texts, launch=0.002):
    """A batched model call: one fixed cost per call (`launch` seconds, as a
    kernel launch or a request to a model server), then `embed` per text.
    An empty text fails alone: a ValueError in its place."""
    time.sleep(launch)
    return [embed(t) if t else ValueError("empty text") for t in texts]


def sleep(seconds):
    """Block for `seconds` (for timeouts and cancellation)."""
    time.sleep(seconds)
    return seconds


def count(n, delay=0.0):
    """A generator handler: streamed back item by item."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield {"i": i, "square": i * i}


def chunks(n, size=65536):
    """A generator of raw bytes: n chunks of `size` bytes, chunk i filled
    with i % 256."""
    for i in range(n):
        yield bytes([i % 256]) * size


def whoami(delay=0.0):
    """The worker's pid, after `delay` seconds."""
    if delay:
        time.sleep(delay)
    return os.getpid()


async def fetch(key, delay=0.01):
    """An async handler, run on the worker's event loop."""
    await asyncio.sleep(delay)
    return {"key": key, "fetched_at": time.time()}


async def tokens(text, delay=0.0):
    """An async generator: streams the words of `text`."""
    for word in text.split():
        if delay:
            await asyncio.sleep(delay)
        yield word


_TALLIES = {}


def tally(session):
    """State kept in the worker process: how many calls this process has
    served for `session`. A session (CallOptions::affinity) keeps its calls
    on one worker, so its count goes 1, 2, 3... with no gap and no repeat."""
    _TALLIES[session] = _TALLIES.get(session, 0) + 1
    return {"session": session, "count": _TALLIES[session], "pid": os.getpid()}


def fail(message="something went wrong"):
    """Raise, to show how Python exceptions reach Rust."""
    raise ValueError(message)


def noisy(value=None):
    """Print to stdout: it goes to the worker's stderr log, not the protocol."""
    print("noisy handler says hello")
    return value


def digest(data):
    """Raw bytes in, JSON out."""
    return {"length": len(data), "crc32": zlib.crc32(data)}


def invert(data):
    """Raw bytes in and out: every byte inverted. Large payloads arrive as a
    read-only memoryview on shared memory (no copy); bytes(data) makes one
    copy where bytes methods are needed."""
    return bytes(data).translate(_INVERT)
