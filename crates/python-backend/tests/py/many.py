# Handlers for the concurrency tests: calls that wait (async and sync) and
# answer with what they were given, so crossed answers show.
import asyncio
import os
import threading
import time


def pid():
    return os.getpid()


async def async_sleep(seconds, value=None):
    await asyncio.sleep(seconds)
    return value


def sync_sleep(seconds, value=None):
    time.sleep(seconds)
    return value


async def echo(value=None):
    await asyncio.sleep(0)
    return value


def sync_echo(value=None):
    return value


async def die_after(seconds):
    await asyncio.sleep(seconds)
    os._exit(9)


async def async_hang(seconds=30):
    await asyncio.sleep(seconds)


def stubborn(seconds=30):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.01)
        except BaseException:
            pass


def busy_loop(seconds=30):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


async def tokens(n, delay=0.001):
    for i in range(n):
        await asyncio.sleep(delay)
        yield "t%d" % i


def sync_tokens(n, delay=0.001):
    for i in range(n):
        time.sleep(delay)
        yield "t%d" % i


def threads():
    return threading.active_count()


# Session state, for affinity: each process counts calls per session, so a
# call that reaches another process than its session's answers a count that
# does not follow.
_sessions = {}
_sessions_lock = threading.Lock()


def session_bump(session):
    with _sessions_lock:
        _sessions[session] = _sessions.get(session, 0) + 1
        return [os.getpid(), _sessions[session]]
