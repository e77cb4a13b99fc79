# Handlers for the late-call tests: every kind of code a call past its
# deadline can be stuck in, each leaving a mark when its cleanup runs.
import asyncio
import itertools
import os
import time

import cenote


def _mark(path):
    # Leave a file behind: the handler's `finally` ran.
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def pid():
    return os.getpid()


def echo(value=None):
    return value


def work(value, seconds=0.005):
    # A short call: sleeps, then answers with what it was given.
    time.sleep(seconds)
    return value


def reply_after(value, seconds):
    time.sleep(seconds)
    return value


async def async_hang(seconds=30, mark=None):
    try:
        await asyncio.sleep(seconds)
        return "finished"
    finally:
        _mark(mark)


def busy_loop(seconds=30, mark=None):
    # Pure Python: a bytecode boundary every iteration.
    try:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n
    finally:
        _mark(mark)


def sleep_sync(seconds=30, mark=None):
    # Blocked in C (time.sleep): only a signal wakes it.
    try:
        time.sleep(seconds)
        return "slept"
    finally:
        _mark(mark)


def catch_cancelled(seconds=30, mark=None):
    # A sync handler that cleans up on cenote.Cancelled itself, then lets
    # it go on.
    try:
        time.sleep(seconds)
    except cenote.Cancelled:
        _mark(mark)
        raise
    return "not cancelled"


def stubborn(seconds=30):
    # Swallows every exception, cancellation included, and keeps going.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.01)
        except BaseException:
            pass
    return "stubborn"


def c_loop(n=10**10):
    # A loop in C that never returns to the interpreter: nothing can
    # interrupt it.
    return sum(itertools.repeat(1, n))


def count(n, delay=0.0, mark=None):
    try:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i
    finally:
        _mark(mark)


async def async_count(n, delay=0.0, mark=None):
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            yield i
    finally:
        _mark(mark)
