"""Batch handlers: each takes a list and returns a list, one result per item."""
import os
import time


def double(xs):
    return [x * 2 for x in xs]


def sizes(xs):
    # Each item answered with the batch it rode in: its size and the pid.
    return [[len(xs), os.getpid(), x] for x in xs]


def picky(xs):
    # Negative items fail alone: an exception in their place.
    return [ValueError("negative: %d" % x) if x < 0 else x for x in xs]


def short(xs):
    return xs[:-1]


def not_a_list(xs):
    return {"n": len(xs)}


def raises(xs):
    raise RuntimeError("the whole batch failed")


def crash(xs):
    if "die" in xs:
        os._exit(3)
    return xs


def hang(xs):
    if "hang" in xs:
        while True:
            time.sleep(0.01)
    return xs


async def slow(xs):
    import asyncio

    await asyncio.sleep(0.1)
    return xs


def lengths(blobs):
    # Items carry raw bytes: each answered with its length and a reversed copy.
    return [{"len": len(b), "rev": bytes(reversed(b))} for b in blobs]
