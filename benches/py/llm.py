"""An LLM stand-in for the multiplexing bench: a call that waits 50 ms
(on the network, say) and returns a short string, async and sync."""
import asyncio
import os
import time


async def complete(prompt):
    await asyncio.sleep(0.05)
    return "ok " + prompt[:16]


def complete_sync(prompt):
    time.sleep(0.05)
    return "ok " + prompt[:16]


def pid():
    return os.getpid()
