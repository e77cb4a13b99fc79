"""Handlers for the late-call bench: a short call, and two that hang (one
async, one sync) until they are cancelled."""
import asyncio
import time


def work(value, seconds=0.005):
    time.sleep(seconds)
    return value


async def async_hang(seconds=30):
    await asyncio.sleep(seconds)


def sleep_sync(seconds=30):
    time.sleep(seconds)
