"""A handler whose import leaves a thread running: not safe to fork."""
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def ping():
    return "pong"
