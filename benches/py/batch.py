"""Handlers for `cargo bench --bench batch`.

The synthetic model costs 2 ms per call plus 20 us per item, as a kernel
launch plus work would (a sleep: the cost is a wait, as on an accelerator,
not this machine's CPU). `synth` takes a batch, `synth_one` one item at the
same cost.

The numpy model embeds 256 float32 values (sent as raw bytes) into 256
dimensions by a matrix product and answers the norm; numpy is optional
(`python3 -m pip install numpy`).
"""
import time

CALL_S = 0.002
ITEM_S = 0.00002


def synth(xs):
    time.sleep(CALL_S + ITEM_S * len(xs))
    return [x + 1 for x in xs]


def synth_one(x):
    time.sleep(CALL_S + ITEM_S)
    return x + 1


try:
    import numpy as np

    _W = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
except ImportError:  # the bench says how to install it
    np = None


def has_numpy():
    return np is not None


def embed(blobs):
    x = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), 256)
    return np.linalg.norm(x @ _W, axis=1).tolist()


def embed_one(blob):
    x = np.frombuffer(blob, dtype=np.float32).reshape(1, 256)
    return float(np.linalg.norm(x @ _W, axis=1)[0])
