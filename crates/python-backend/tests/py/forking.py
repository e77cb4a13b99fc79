"""Handlers for the fork-server tests: what each worker is, and a hook."""
import os
import random

HOOKED_IN = None
IMPORTED_IN = os.getpid()


def cenote_after_fork():
    global HOOKED_IN
    HOOKED_IN = os.getpid()


def who():
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgrp(),
        "hooked_in": HOOKED_IN,
        "imported_in": IMPORTED_IN,
        "random": random.random(),
    }


def spawn_child():
    import subprocess
    child = subprocess.Popen(["sleep", "60"])
    return child.pid


def loaded(name):
    import sys
    return name in sys.modules
