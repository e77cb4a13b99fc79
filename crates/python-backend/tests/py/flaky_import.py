"""Fails to import until the file named by CENOTE_FLAG_FILE exists."""
import os
import sys

if not os.path.exists(os.environ["CENOTE_FLAG_FILE"]):
    sys.stderr.write("flag file missing; refusing to start\n")
    raise RuntimeError("flag file missing")


def add(a, b):
    return a + b
