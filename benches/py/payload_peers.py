"""Peers for the payload bench.

`payload_peers.py SIZE REPS`: echo SIZE random bytes through
ProcessPoolExecutor(1) and multiprocessing.Pool(1) (pickle both ways), REPS
times each after one warm-up; prints the median seconds per round trip of
each as JSON.

`payload_peers.py --pipe SIZE`: the far end of the bare pipe: read SIZE
bytes from stdin into one buffer, write them back, until stdin closes. No
framing, no decoding: the limit of moving the bytes.
"""
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def echo(data):
    return data


def timed(call, data, reps):
    assert len(call(data)) == len(data)
    took = []
    for _ in range(reps):
        began = time.perf_counter()
        out = call(data)
        took.append(time.perf_counter() - began)
        assert len(out) == len(data)
    return statistics.median(took)


def pipe(size):
    view = memoryview(bytearray(size))
    stdin, stdout = os.fdopen(0, "rb", buffering=0), os.fdopen(1, "wb", buffering=0)
    while True:
        got = 0
        while got < size:
            n = stdin.readinto(view[got:])
            if not n:
                return
            got += n
        sent = 0
        while sent < size:
            sent += stdout.write(view[sent:])


def main():
    if sys.argv[1] == "--pipe":
        return pipe(int(sys.argv[2]))
    size, reps = int(sys.argv[1]), int(sys.argv[2])
    data = os.urandom(size)
    with ProcessPoolExecutor(1) as ex:
        ppe = timed(lambda d: ex.submit(echo, d).result(), data, reps)
    with multiprocessing.Pool(1) as pool:
        mp = timed(lambda d: pool.apply(echo, (d,)), data, reps)
    print(json.dumps({"ppe": ppe, "mp_pool": mp, "start_method": multiprocessing.get_start_method()}))


if __name__ == "__main__":
    main()
