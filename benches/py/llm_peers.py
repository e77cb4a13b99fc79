"""Peers for the multiplexing bench.

`llm_peers.py N`: N calls of a sync 50 ms LLM stand-in through
multiprocessing.Pool(4) and ProcessPoolExecutor(4), all submitted at once (as
512 concurrent callers would); prints calls/s of each as JSON. Each process
serves one call at a time, so 4 in flight is their ceiling."""
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def complete_sync(prompt):
    time.sleep(0.05)
    return "ok " + prompt[:16]


def rate(run, n):
    began = time.perf_counter()
    out = run(["prompt %d" % i for i in range(n)])
    assert len(out) == n
    return n / (time.perf_counter() - began)


def main():
    n = int(sys.argv[1])
    with multiprocessing.Pool(4) as pool:
        mp = rate(lambda prompts: pool.map(complete_sync, prompts, chunksize=1), n)
    with ProcessPoolExecutor(4) as ex:
        ppe = rate(lambda prompts: list(ex.map(complete_sync, prompts)), n)
    print(json.dumps({"mp_pool": mp, "ppe": ppe}))


if __name__ == "__main__":
    main()
