# cenote bridge: runs inside each Python worker process.
#
# Launched as `<python> -u -c <this script> <handler> <max_frame> <parent_pid>`.
# Frames: u32 big-endian length, then a UTF-8 JSON object with "t" (type) and
# "id" (request id). Protocol frames travel on private duplicates of fds 0 and
# 1; fd 1 is pointed at stderr and fd 0 at /dev/null, so print(), C-level
# writes and child processes cannot corrupt or steal frames.
import os
import sys

PROTOCOL = 1


def _setup_fds():
    frames_in = os.dup(0)  # os.dup makes non-inheritable fds
    frames_out = os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return frames_in, frames_out


_cenote_frames_in, _cenote_frames_out = _setup_fds()

import asyncio  # noqa: E402
import faulthandler  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

faulthandler.enable(file=sys.stderr, all_threads=True)

_HEADER = struct.Struct(">I")
_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
_loads = json.loads


# Results of these types need no awaiting, collecting or streaming checks.
_PLAIN = frozenset((dict, list, str, int, float, bool, type(None), tuple))


class _TooLarge(Exception):
    pass


def _die_with_group():
    # The bridge leads its own process group: take handler subprocesses too.
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(70)


def _watch_parent(parent_pid):
    # Exit when the host goes away, even while a handler is busy. Polling
    # getppid() is used because PR_SET_PDEATHSIG follows the parent *thread*.
    while True:
        if os.getppid() != parent_pid:
            _die_with_group()
        time.sleep(0.2)


class Bridge:
    def __init__(self, module, max_frame):
        self.module = module
        self.max_frame = max_frame
        self.reader = os.fdopen(_cenote_frames_in, "rb", buffering=1 << 16)
        self.loop = None
        self.found = {}

    # ---- wire -------------------------------------------------------------
    def write(self, data):
        view = memoryview(data)
        while view:
            n = os.write(_cenote_frames_out, view)
            view = view[n:]

    def encode(self, obj):
        payload = _dumps(obj).encode("utf-8")
        if len(payload) > self.max_frame:
            raise _TooLarge(len(payload))
        return _HEADER.pack(len(payload)) + payload

    def send(self, obj):
        self.write(self.encode(obj))

    def send_error(self, rid, kind, type_name, message, tb=""):
        self.send(
            {
                "t": "error",
                "id": rid,
                "kind": kind,
                "type": type_name,
                "message": message,
                "traceback": tb,
            }
        )

    def send_value(self, rid, frame_type, key, value, function):
        try:
            data = self.encode({"t": frame_type, "id": rid, key: value})
        except _TooLarge as e:
            self.send_error(
                rid,
                "too_large",
                "FrameTooLarge",
                "%s produced %d bytes of JSON, over the max frame size of %d bytes"
                % (function, e.args[0], self.max_frame),
            )
            return False
        except (TypeError, ValueError, UnicodeError, RecursionError) as e:
            self.send_error(
                rid,
                "unserializable",
                type(e).__name__,
                "%s returned a value that is not JSON-serializable: %s" % (function, e),
            )
            return False
        self.write(data)
        return True

    def read(self):
        head = self.reader.read(4)
        if len(head) < 4:
            return None
        (n,) = _HEADER.unpack(head)
        if n > self.max_frame:
            sys.stderr.write(
                "cenote bridge: incoming frame of %d bytes exceeds max frame size %d\n"
                % (n, self.max_frame)
            )
            os._exit(65)
        body = self.reader.read(n)
        if len(body) < n:
            return None
        return body

    # ---- calls ------------------------------------------------------------
    def functions(self):
        return sorted(
            name
            for name in dir(self.module)
            if not name.startswith("_") and callable(getattr(self.module, name, None))
            and not inspect.isclass(getattr(self.module, name, None))
            and not inspect.ismodule(getattr(self.module, name, None))
        )

    def lookup(self, name):
        # Fast path: a name looked up before whose module attribute is still
        # the same object (modules may rebind their functions).
        fn = self.found.get(name)
        if fn is not None and self.module.__dict__.get(name) is fn:
            return fn
        if not isinstance(name, str) or name.startswith("_"):
            return None
        fn = getattr(self.module, name, None)
        if fn is None or not callable(fn) or inspect.ismodule(fn):
            return None
        self.found[name] = fn
        return fn

    def run(self, awaitable):
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        return self.loop.run_until_complete(awaitable)

    def raised(self, rid, function, exc, skip_bridge_frame=True):
        tb = exc.__traceback__
        if skip_bridge_frame and tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        self.send_error(rid, "raised", type(exc).__qualname__, str(exc), text)

    def call(self, msg):
        rid = msg.get("id", 0)
        name = msg.get("fn")
        fn = self.lookup(name)
        if fn is None:
            self.send_error(
                rid,
                "unknown_function",
                "UnknownFunction",
                "%r is not a public function of the handler module %s (it has: %s)"
                % (name, self.module.__name__, ", ".join(self.functions())),
            )
            return
        args = msg.get("args")
        kwargs = msg.get("kwargs") or {}
        if args is None:
            pos = ()
        elif isinstance(args, list):
            pos = args
        elif isinstance(args, dict):
            pos = ()
            kwargs = dict(args, **kwargs)
        else:
            pos = (args,)
        stream = bool(msg.get("stream"))
        try:
            result = fn(*pos, **kwargs)
        except TypeError as e:
            if e.__traceback__ is not None and e.__traceback__.tb_next is None:
                # Raised by the call itself, not inside the handler: the
                # arguments do not fit the signature.
                self.send_error(
                    rid,
                    "bad_args",
                    "TypeError",
                    "arguments do not fit %s%s: %s" % (name, _signature(fn), e),
                )
            else:
                self.raised(rid, name, e)
            return
        except Exception as e:
            self.raised(rid, name, e)
            return
        if not stream and type(result) in _PLAIN:
            self.send_value(rid, "result", "value", result, name)
            return
        try:
            if inspect.isawaitable(result):
                result = self.run(result)
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                if stream:
                    self.stream(rid, name, result)
                    return
                result = self.collect(result)
        except Exception as e:
            self.raised(rid, name, e, skip_bridge_frame=False)
            return
        if stream:
            if self.send_value(rid, "chunk", "data", result, name):
                self.send({"t": "end", "id": rid})
        else:
            self.send_value(rid, "result", "value", result, name)

    def collect(self, gen):
        if inspect.isasyncgen(gen):
            async def drain():
                return [item async for item in gen]

            return self.run(drain())
        return list(gen)

    def stream(self, rid, name, gen):
        is_async = inspect.isasyncgen(gen)
        try:
            while True:
                try:
                    if is_async:
                        item = self.run(gen.__anext__())
                    else:
                        item = next(gen)
                except (StopIteration, StopAsyncIteration):
                    break
                if not self.send_value(rid, "chunk", "data", item, name):
                    return
        except Exception as e:
            self.raised(rid, name, e, skip_bridge_frame=False)
            return
        finally:
            try:
                if is_async:
                    self.run(gen.aclose())
                else:
                    gen.close()
            except Exception:
                pass
        self.send({"t": "end", "id": rid})

    def serve(self):
        while True:
            body = self.read()
            if body is None:
                return
            try:
                msg = _loads(body)
                kind = msg["t"]
                rid = msg.get("id", 0)
            except Exception as e:
                self.send_error(0, "bad_request", type(e).__name__, "undecodable frame: %s" % e)
                continue
            if kind == "call":
                self.call(msg)
            elif kind == "ping":
                self.send({"t": "pong", "id": rid})
            elif kind == "shutdown":
                return
            else:
                self.send_error(rid, "bad_request", "BadRequest", "unknown frame type %r" % (kind,))


def _signature(fn):
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _load(spec):
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        name = os.path.splitext(os.path.basename(path))[0]
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("cannot load handler file %s" % path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def main():
    spec, max_frame, parent_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if os.getppid() != parent_pid:
        _die_with_group()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="cenote-watchdog").start()
    bridge = Bridge(None, max_frame)
    try:
        module = _load(spec)
    except BaseException as e:
        traceback.print_exc()
        sys.stderr.flush()
        bridge.send_error(0, "import", type(e).__qualname__, "%s: %s" % (type(e).__qualname__, e),
                          "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        os._exit(3)
    bridge.module = module
    bridge.send(
        {
            "t": "ready",
            "id": 0,
            "pid": os.getpid(),
            "version": platform.python_version(),
            "protocol": PROTOCOL,
            "functions": bridge.functions(),
        }
    )
    bridge.serve()
    sys.stderr.flush()


main()
