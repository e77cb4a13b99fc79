"""Peers for the late-call bench.

`late_peers.py SECS`: 4 workers, 16 submitting threads, 5 ms calls, and
with hangs one call in twenty that sleeps 30 s, abandoned by its caller
after 50 ms. Prints calls/s with no hangs and with hangs, as JSON, for:
- ProcessPoolExecutor(4): a running call cannot be cancelled, so each hang
  holds its worker for its whole 30 s;
- pebble.ProcessPool(4) with a 50 ms timeout, if pebble is importable: the
  worker of a call past its timeout is killed and replaced.
"""
import json
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, TimeoutError as FutureTimeout

WORKERS, CALLERS, EVERY = 4, 16, 20


def work(value, seconds=0.005):
    time.sleep(seconds)
    return value


def hang(seconds=30):
    time.sleep(seconds)


def drive(secs, hangs, submit):
    # Calls completed per second by CALLERS threads for `secs` seconds.
    stop = time.monotonic() + secs
    done = [0]
    lock = threading.Lock()

    def caller(c):
        i = 0
        while time.monotonic() < stop:
            i += 1
            n = c * 1_000_000 + i
            # A call still waiting at the end of the run is not counted.
            if submit(hangs and n % EVERY == 0, n, max(stop - time.monotonic(), 0.001)):
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(CALLERS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(secs + 60)
    return done[0] / (time.monotonic() - began)


def ppe(secs, hangs):
    ex = ProcessPoolExecutor(WORKERS)

    def submit(is_hang, n, left):
        f = ex.submit(hang) if is_hang else ex.submit(work, n)
        try:
            f.result(timeout=min(0.05, left) if is_hang else left)
        except FutureTimeout:
            f.cancel()  # a running call cannot be cancelled: this does nothing
            return is_hang
        return True

    rate = drive(secs, hangs, submit)
    # Workers stuck in a hang would hold shutdown for 30 s: end them. The
    # executor's own thread then complains about the futures it can no
    # longer fail; that is its noise, not the run's.
    threading.excepthook = lambda _args: None
    ex.shutdown(wait=False, cancel_futures=True)
    for p in list((getattr(ex, "_processes", None) or {}).values()):
        p.kill()
    return rate


def pebble_pool(secs, hangs):
    import pebble

    pool = pebble.ProcessPool(max_workers=WORKERS)

    def submit(is_hang, n, left):
        f = pool.schedule(hang if is_hang else work, args=() if is_hang else (n,),
                          timeout=0.05 if is_hang else 30)
        try:
            f.result(timeout=left)
        except FutureTimeout:
            return is_hang
        except Exception:
            pass  # the hang's own timeout: its worker was killed
        return True

    rate = drive(secs, hangs, submit)
    pool.stop()
    pool.join(timeout=5)
    return rate


def main():
    secs = float(sys.argv[1])
    out = {"ppe": {"none": ppe(secs, False), "sync5": ppe(secs, True)}}
    try:
        import pebble  # noqa: F401
    except ImportError:
        out["pebble"] = None
    else:
        out["pebble"] = {"none": pebble_pool(secs, False), "sync5": pebble_pool(secs, True)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
