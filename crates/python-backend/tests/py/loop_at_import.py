"""A handler whose import creates an asyncio event loop: its epoll fd would
be shared by every forked worker, so the fork server is not used."""
import asyncio

asyncio.set_event_loop(asyncio.new_event_loop())


def ping():
    return "pong"
