"""Handlers for the payload bench: the same echo, of raw bytes and of the
base64 text users send when their only wire is JSON."""
import base64


def echo(data):
    return data


def echo_base64(text):
    # What a handler does with base64 today: decode to work on the bytes,
    # encode the result to send it back.
    data = base64.b64decode(text)
    return base64.b64encode(data).decode("ascii")
