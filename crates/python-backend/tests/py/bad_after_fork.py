"""A handler whose after-fork hook fails: a start error, as an import error is."""


def cenote_after_fork():
    raise RuntimeError("cannot reopen the database")


def ping():
    return "pong"
