# cenote bridge: runs inside each Python worker process.
#
# Launched as `<python> -u -c <script> <handler> <max_frame> <parent_pid>
# <concurrency> <shm_threshold>`,
# with the frame pipes on fds 0 and 1, stderr on 2, the cancel pipe on fd 3,
# and with a shm_threshold above 0 its shared-memory regions on fds 4 and 5
# (a fork server's worker gets the same fds, passed to it).
# <script> is this file with three classes put in front of it, generated
# from the crate's protocol.rs (see bridge.rs): `ErrorKind`, the kinds an
# error frame carries, `BridgeExit`, this process's exit codes, and `Wire`,
# the protocol version and the frame constants. Both sides use them by name;
# a kind or a code is never spelled out here.
#
# Frames: a u32 big-endian word, then the body. The word's low 31 bits are
# the body's size; with its top bit (Wire.ATTACHMENTS_FLAG) set, the body is
# u32 count, count u32 lengths, the JSON, then the raw attachments, else it
# is the JSON alone. The JSON is an object with "t" (type) and "id" (request
# id); in a frame with attachments, an object whose one key is
# Wire.PLACEHOLDER stands for the attachment of that index. A handler gets
# attachments as `bytes` (large ones in shared memory as memoryviews: see
# below); it may return bytes, bytearray or memoryview
# anywhere in a result, and they travel as attachments.
#
# Shared memory (protocol 6): with a threshold above 0 (argv, or the fork
# request's "shm"), fds 4 and 5 are this worker's two memfd regions, made by
# the host (see cenote-python's shm/mod.rs for the design). A table entry
# with Wire.SHARED_FLAG set is an attachment in shared memory: its part of
# the body is a descriptor, u64 offset and u64 length. The host puts a
# call's large bytes in the region on fd 4; the handler gets them as a
# read-only memoryview over the region, valid until it returns (copy what it
# keeps). Results' large bytes go into the region on fd 5, allocated here
# (cenote.buffer(n) hands a handler a block to fill in place). A block is
# Wire.SHM_HEADER bytes of header, whose first byte is its flag (1: handed
# over, 0: free), then the payload; the reader clears the flag when done,
# and the writer frees the block on its next allocation. Protocol frames
# travel on private duplicates of fds 0 and 1; fd 1 is pointed at stderr
# and fd 0 at /dev/null, so print(), C-level writes and child processes
# cannot corrupt or steal frames.
#
# The handler module:
# - A file is registered under its file name, so its neighbours can import
#   it, unless `import <that name>` finds another module (a `json.py`,
#   `logging.py`): then under a private name, so that neither the bridge nor
#   the handler's own `import json` gets the file. Its directory, and the
#   working directory, go on sys.path after the standard library, so no file
#   in them shadows a standard module.
# - A call may name the module's public (no leading `_`) callables other than
#   classes: exactly the `functions` of the ready frame. Any other name is
#   UNKNOWN_FUNCTION, a call frame without a string name BAD_REQUEST; either
#   way the bridge serves the next call.
#
# Cancelling: the host writes the id of a request it gave up on (its
# deadline passed, or its caller left) to the cancel pipe, 8 bytes big-endian.
# A thread reads them (the main thread is busy running handlers) and stops
# the call where it runs:
# - a sync handler (or a sync generator's step) is interrupted by a signal
#   (_CANCEL_SIGNAL) sent to the main thread, whose handler raises
#   `cenote.Cancelled` at the next bytecode, or in a blocking call such as
#   time.sleep. The signal is acted on only while a handler runs
#   ("interruptible"), never while the bridge reads or writes frames;
# - an `async def` handler (or an async generator's step) has its task
#   cancelled: asyncio.CancelledError at its current await;
# - a call not started yet is answered without running;
# - between a stream's items, the generator is closed (GeneratorExit).
# The call is then answered with an error frame of kind CANCELLED, which the
# host waits for (within its grace) before it sends another request. A
# handler that swallows the exception, or loops in C code, is killed by the
# host when the grace runs out. `cenote.Cancelled` derives from BaseException,
# as CancelledError does, so `except Exception` does not swallow it; a
# handler cleans up in `try/finally`.
#
# Exits:
# - `sys.exit()` (any `SystemExit`) in a handler ends the call, not the
#   process: the call fails with SYSTEM_EXIT and the bridge serves on.
#   While the module imports, it is an import failure (IMPORT_FAILED).
# - `os._exit(n)` in a handler (or C code calling exit) ends the process
#   with n; the host reports a crash with that code.
# - Any other BaseException out of a handler (KeyboardInterrupt...) ends the
#   bridge with INTERNAL, as does a bug of its own.
# - OK: stdin closed or a shutdown frame. PROTOCOL: an incoming frame over
#   the max frame size, or whose attachment table does not fit it. PARENT_GONE: the host went away; the bridge kills
#   its process group (itself included, so this code is seen only if that
#   fails).
import os
import stat
import sys


def _setup_fds():
    frames_in = os.dup(0)  # os.dup makes non-inheritable fds
    frames_out = os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return frames_in, frames_out


def _after_stdlib():
    # The sys.path index just past the standard library's entries (its zip,
    # its directory, lib-dynload): a directory put there adds modules but
    # cannot shadow standard ones. The end of sys.path if none is found.
    std = os.path.dirname(getattr(os, "__file__", ""))
    end = None
    for i, entry in enumerate(sys.path):
        parent, base = os.path.split(entry)
        if std and (
            entry == std
            or parent == std and base == "lib-dynload"
            or parent == os.path.dirname(std) and base.endswith(".zip")
        ):
            end = i + 1
    return len(sys.path) if end is None else end


def _unshadow_cwd():
    # `-c` puts the working directory first on sys.path, where a `json.py`
    # in it would replace the standard json for the bridge and handlers.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
        sys.path.insert(_after_stdlib(), "")


def _take_cancel_fd():
    # The cancel pipe's read end, on fd 3 from the host: kept on a private
    # fd that handler subprocesses do not inherit.
    try:
        if not stat.S_ISFIFO(os.fstat(3).st_mode):
            raise OSError("fd 3 is not a pipe")
        fd = os.dup(3)
    except OSError as e:
        sys.stderr.write("cenote bridge: no cancel pipe on fd 3 (%s); the bridge is started "
                         "by cenote-python, which passes one\n" % e)
        sys.stderr.flush()
        os._exit(BridgeExit.INTERNAL)
    os.close(3)
    return fd


def _take_regions():
    # The shared-memory regions on fds 4 and 5, kept on private fds.
    try:
        fds = []
        for fd in (4, 5):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError("fd %d is not a memfd" % fd)
            fds.append(os.dup(fd))
            os.close(fd)
        return fds
    except OSError as e:
        sys.stderr.write("cenote bridge: no shared-memory regions on fds 4 and 5 (%s)\n" % e)
        sys.stderr.flush()
        os._exit(BridgeExit.INTERNAL)


# Before the frame fds are duplicated: they must not land on fd 3. A fork
# server's fd 3 is its control socket, and its workers take theirs after
# they are forked.
_spawned = sys.argv[1:2] != ["--zygote"]
_cenote_cancels = _take_cancel_fd() if _spawned else None
_cenote_regions = _take_regions() if _spawned and int(sys.argv[5]) > 0 else None
_cenote_frames_in, _cenote_frames_out = _setup_fds()
_unshadow_cwd()

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
import faulthandler  # noqa: E402
import fcntl  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

# The crashing thread only: the watchdog thread's stack is noise that would
# push the handler's last words out of the stderr tail of a crash report.
faulthandler.enable(file=sys.stderr, all_threads=False)

_WORD = struct.Struct(">I")
_CANCEL_ID = struct.Struct(">Q")
# A real-time signal where there are some (they are left to applications),
# else SIGUSR2. Handlers must leave it alone.
_CANCEL_SIGNAL = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2


class Cancelled(BaseException):
    # Raised in a sync handler whose call the host cancelled (its deadline
    # passed, or its caller left). A BaseException, as CancelledError is, so
    # that `except Exception` does not swallow it: clean up in try/finally.
    pass


def _public_module():
    # What handlers can import as `cenote` inside a worker.
    import types

    module = types.ModuleType("cenote", "The cenote bridge, as seen by the handlers it runs.")
    module.Cancelled = Cancelled
    module.buffer = buffer
    sys.modules.setdefault("cenote", module)
_BODY_MASK = Wire.ATTACHMENTS_FLAG - 1
_BYTES = (bytes, bytearray, memoryview)

# What the encoder found to send as attachments, in placeholder order. The
# bridge encodes one frame at a time, on one thread.
_attached = []


def _attach(obj):
    # The encoder's hook for what JSON cannot hold: bytes become attachments.
    if isinstance(obj, _BYTES):
        _attached.append(obj)
        return {Wire.PLACEHOLDER: len(_attached) - 1}
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _flat(obj):
    # A buffer as a flat run of bytes (numpy-style views included).
    view = memoryview(obj)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def buffer(n):
    """A writable memoryview of `n` bytes to build a result in place.

    Return the view itself (not a slice or a copy) in the result, and with
    shared memory on and `n` at its threshold or more, it reaches the host
    with no copy: it is a block of this worker's region. Otherwise it is an
    ordinary buffer, sent as any bytes are. A block not returned is free
    again once nothing refers to the view."""
    n = int(n)
    if n < 0:
        raise ValueError("cenote.buffer(n) needs n >= 0, got %d" % n)
    view = _shm.lend(n) if _shm is not None and n >= _shm.threshold else None
    return view if view is not None else memoryview(bytearray(n))


_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class _Mapping:
    # One region, mapped here whole; mapped again when it grew.
    def __init__(self, fd):
        self.fd = fd
        self.view = None
        self.size = 0

    def covers(self, end):
        # Whether bytes up to `end` lie in the region (mapping it again if
        # the other side grew it).
        if end <= self.size:
            return True
        size = os.fstat(self.fd).st_size
        if end > size:
            return False
        self.remap(size)
        return True

    def remap(self, size, touch=False):
        # A new mapping of the whole region; views over the old one keep it
        # alive, and see the same pages.
        m = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        if touch:
            try:
                m.madvise(_POPULATE_WRITE)
            except (OSError, ValueError):
                pass
        self.view = memoryview(m)
        self.size = size


class _Shm:
    # This worker's regions: `inbox` (fd 4) holds calls' large bytes, written
    # by the host; `outbox` (fd 5) results', allocated here.
    def __init__(self, fds, threshold, max_frame):
        grain = Wire.SHM_GRAIN
        self.threshold = threshold
        self.cap = -(-2 * (max_frame + Wire.SHM_HEADER + Wire.SHM_ALIGN) // grain) * grain
        self.inbox = _Mapping(fds[0])
        self.outbox = _Mapping(fds[1])
        self.lock = threading.Lock()
        self.held = {}  # outbox block -> its size, handed over or lent
        self.lent = {}  # id(view) -> (view, block): cenote.buffer views not sent
        self.calls = {}  # request id -> its inbox blocks

    # ---- the host's bytes in ------------------------------------------------
    def view_of(self, descriptor):
        # A call's bytes, named by a descriptor: (read-only view, block), or
        # None if the descriptor is out of the region.
        offset, n = _DESCRIPTOR.unpack(descriptor)
        block = offset - Wire.SHM_HEADER
        if block < 0 or block % Wire.SHM_ALIGN or not self.inbox.covers(offset + n):
            return None
        return self.inbox.view[offset:offset + n].toreadonly(), block

    def release(self, rid):
        # A call ended: its blocks are the host's again.
        self.release_blocks(self.calls.pop(rid, ()))

    def release_blocks(self, blocks):
        for block in blocks:
            self.inbox.view[block] = 0

    # ---- results' bytes out -------------------------------------------------
    def put(self, data):
        # The descriptor of `data` in the outbox (copied in, unless it is a
        # lent block), or None if no block fits.
        n = data.nbytes
        with self.lock:
            lent = self.lent.pop(id(data), None)
            if lent is not None and lent[0] is data:
                return _DESCRIPTOR.pack(lent[1] + Wire.SHM_HEADER, n)
            if lent is not None:
                self.lent[id(data)] = lent
            block = self.alloc(n)
            if block is None:
                return None
            start = block + Wire.SHM_HEADER
            self.outbox.view[start:start + n] = data
            self.outbox.view[block] = 1
        return _DESCRIPTOR.pack(start, n)

    def lend(self, n):
        with self.lock:
            block = self.alloc(n)
            if block is None:
                return None
            start = block + Wire.SHM_HEADER
            view = self.outbox.view[start:start + n]
            self.outbox.view[block] = 1
            self.lent[id(view)] = (view, block)
            return view

    def alloc(self, n):
        # A free block for `n` bytes (under the lock), the region grown if
        # needed, up to the cap; None if none fits.
        size = Wire.SHM_HEADER + -(-n // Wire.SHM_ALIGN) * Wire.SHM_ALIGN
        self.sweep()
        block = self.fit(size)
        if block is None:
            end = max((b + l for b, l in self.held.items()), default=0)
            grain = Wire.SHM_GRAIN
            want = min(self.cap, -(-max(end + size, 2 * self.outbox.size) // grain) * grain)
            if want <= self.outbox.size:
                return None
            try:
                if os.fstat(self.outbox.fd).st_size < want:
                    os.ftruncate(self.outbox.fd, want)
                self.outbox.remap(want, touch=True)
            except OSError:
                return None
            block = self.fit(size)
            if block is None:
                return None
        self.held[block] = size
        return block

    def fit(self, size):
        start = 0
        for block in sorted(self.held):
            if block - start >= size:
                return start
            start = block + self.held[block]
        return start if self.outbox.size - start >= size else None

    def sweep(self):
        # Free the blocks the host has read, and lent ones nobody holds.
        view = self.outbox.view
        if view is None:
            return
        for key, (lent, block) in list(self.lent.items()):
            # Referred to only by this table, this loop and the call.
            if sys.getrefcount(lent) <= 3:
                del self.lent[key]
                view[block] = 0
        for block in [b for b in self.held if view[b] == 0]:
            del self.held[block]


_DESCRIPTOR = struct.Struct(">QQ")
# This worker's shared memory (None: all bytes go through the pipe).
_shm = None


_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_attach
).encode
_loads = json.loads


def _loads_attached(body, attachments):
    # The JSON of a frame with attachments, placeholders replaced by their
    # bytes; also the placeholders that name no attachment.
    bad = []

    def resolve(obj):
        if len(obj) == 1 and Wire.PLACEHOLDER in obj:
            index = obj[Wire.PLACEHOLDER]
            if type(index) is int and 0 <= index < len(attachments):
                return attachments[index]
            bad.append(index)
        return obj

    return json.loads(body, object_hook=resolve), bad


def _batch_items(value):
    # A batch handler's list, its exception items as item errors: an
    # exception in an item's place fails that item alone. Anything but a
    # list goes as it is, for the host to refuse.
    if type(value) not in (list, tuple):
        return value
    return [_item_error(v) if isinstance(v, BaseException) else v for v in value]


def _item_error(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {Wire.ITEM_ERROR: {"type": type(exc).__qualname__, "message": str(exc), "traceback": tb}}


# Results of these types need no awaiting, collecting or streaming checks.
_PLAIN = frozenset((dict, list, str, int, float, bool, type(None), tuple))

# What a handler may raise and the bridge still serve: SystemExit included,
# so that sys.exit() in a handler ends its call, not the worker.
_CAUGHT = (Exception, SystemExit)

# The prefix of the name a handler file is registered under when its own
# name belongs to another module.
_PRIVATE_PREFIX = "_cenote_handler_"


class _TooLarge(Exception):
    pass


def _past_bridge(tb):
    # The traceback from its first frame that is not the bridge's own
    # (None if all are): what a handler's author wants to read.
    while tb is not None and tb.tb_frame.f_globals is _BRIDGE_GLOBALS:
        tb = tb.tb_next
    return tb


_BRIDGE_GLOBALS = globals()


def _die_with_group():
    # The bridge leads its own process group: take handler subprocesses too.
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(BridgeExit.PARENT_GONE)


def _watch_parent(parent_pid):
    # Exit when the host goes away, even while a handler is busy. Polling
    # getppid() is used because PR_SET_PDEATHSIG follows the parent *thread*.
    while True:
        if os.getppid() != parent_pid:
            _die_with_group()
        time.sleep(0.2)


def _is_public(name):
    return name.isidentifier() and not name.startswith("_")


def _is_handler(obj):
    # What a call may name (of the public attributes): callables other than
    # classes. The ready frame lists exactly these.
    return callable(obj) and not inspect.isclass(obj) and not inspect.ismodule(obj)


class Bridge:
    def __init__(self, module, max_frame):
        self.module = module
        self.max_frame = max_frame
        self.reader = os.fdopen(_cenote_frames_in, "rb", buffering=1 << 16)
        self.loop = None
        self.found = {}
        # Shared with the cancel thread (plain attribute reads and writes,
        # each atomic under the GIL):
        # - current: the request the main thread is serving (0: none);
        # - cancel_req: the last request the host asked to cancel;
        # - interruptible: a sync handler of `current` runs now, and the
        #   cancel signal may raise in it;
        # - task: the asyncio task running a step of `current`, if any.
        self.current = 0
        self.cancel_req = 0
        self.interruptible = False
        self.task = None
        # A frame is encoded and written whole under this lock: with
        # concurrency above 1, calls answer from several threads (and the
        # encoder's found-bytes list is one for all).
        self.wlock = threading.Lock()
        # The concurrent server, when the worker serves more than one call
        # at once (None: one at a time, on the main thread).
        self.conc = None
        # Requests sent as batches (a list in, a list out), until answered:
        # their result's exception items travel as item errors.
        self.batch_rids = set()

    # ---- wire -------------------------------------------------------------
    def write(self, parts):
        # One frame, as a list of buffers: a single write for a plain
        # frame, vectored writes (no copies) for one with attachments.
        if len(parts) == 1:
            view = memoryview(parts[0])
            while view:
                n = os.write(_cenote_frames_out, view)
                view = view[n:]
            return
        views = [memoryview(p) for p in parts if len(p)]
        while views:
            n = os.writev(_cenote_frames_out, views[:512])
            while views and n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            if n:
                views[0] = views[0][n:]

    def encode(self, obj):
        try:
            payload = _dumps(obj).encode("utf-8")
            found = [_flat(b) for b in _attached]
        finally:
            del _attached[:]
        if not found:
            if len(payload) > self.max_frame:
                raise _TooLarge(len(payload))
            return [_WORD.pack(len(payload)) + payload]
        lengths = [b.nbytes for b in found]
        size = 4 + 4 * len(found) + len(payload) + sum(lengths)
        if size > self.max_frame:
            raise _TooLarge(size)
        if _shm is not None:
            for i, b in enumerate(found):
                if lengths[i] >= _shm.threshold:
                    descriptor = _shm.put(b)
                    if descriptor is not None:
                        size -= lengths[i] - Wire.DESCRIPTOR_LEN
                        found[i] = descriptor
                        lengths[i] = Wire.DESCRIPTOR_LEN | Wire.SHARED_FLAG
        table = struct.pack(">%dI" % (len(found) + 1), len(found), *lengths)
        return [_WORD.pack(size | Wire.ATTACHMENTS_FLAG) + table, payload] + found

    def send(self, obj):
        with self.wlock:
            self.write(self.encode(obj))

    def ended(self, rid):
        # Call `rid` is answered for good: its shared-memory blocks go back.
        if _shm is not None:
            _shm.release(rid)

    def end(self, rid):
        self.ended(rid)
        self.send({"t": "end", "id": rid})

    def send_error(self, rid, kind, type_name, message, tb=""):
        self.ended(rid)
        self.batch_rids.discard(rid)
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
        if rid in self.batch_rids:
            self.batch_rids.discard(rid)
            value = _batch_items(value)
        with self.wlock:
            try:
                data = self.encode({"t": frame_type, "id": rid, key: value})
            except _TooLarge as e:
                error = (
                    ErrorKind.TOO_LARGE,
                    "FrameTooLarge",
                    "%s produced %d bytes (JSON and raw bytes), over the max frame size of %d bytes"
                    % (function, e.args[0], self.max_frame),
                )
            except (TypeError, ValueError, UnicodeError, RecursionError) as e:
                error = (
                    ErrorKind.UNSERIALIZABLE,
                    type(e).__name__,
                    "%s returned a value that is not JSON-serializable: %s" % (function, e),
                )
            else:
                # The call's blocks go back with its result. Serving one call
                # at a time, before the write: the host places nothing until
                # it has read the result, and its next call then finds the
                # blocks free. Serving several, after it: the result may be
                # the call's own bytes, and another call may be placed any
                # time.
                last = frame_type == "result"
                if last and self.conc is None:
                    self.ended(rid)
                self.write(data)
                if last and self.conc is not None:
                    self.ended(rid)
                return True
        self.send_error(rid, *error)
        return False

    def read_exactly(self, n):
        # n bytes, or None at the end of the stream. A large read goes
        # straight from the pipe into the bytes object it returns.
        data = self.reader.read(n)
        return data if len(data) == n else None

    def read(self):
        # The next frame as (JSON, attachments or None); None at the end.
        head = self.read_exactly(4)
        if head is None:
            return None
        (word,) = _WORD.unpack(head)
        n = word & _BODY_MASK
        if n > self.max_frame:
            self.broken("incoming frame of %d bytes exceeds max frame size %d" % (n, self.max_frame))
        if not word & Wire.ATTACHMENTS_FLAG:
            body = self.read_exactly(n)
            return None if body is None else (body, None, ())
        if n < 4:
            self.broken("a frame of %d bytes is too small for its attachment table" % n)
        count = self.read_exactly(4)
        if count is None:
            return None
        (count,) = _WORD.unpack(count)
        if 4 + 4 * count > n:
            self.broken("a table of %d attachments does not fit a frame of %d bytes" % (count, n))
        table = self.read_exactly(4 * count)
        if table is None:
            return None
        entries = struct.unpack(">%dI" % count, table)
        lengths = [e & ~Wire.SHARED_FLAG for e in entries]
        json_len = n - 4 - 4 * count - sum(lengths)
        if json_len < 0:
            self.broken("attachments of %d bytes do not fit a frame of %d" % (sum(lengths), n))
        body = self.read_exactly(json_len)
        attachments = [self.read_exactly(length) for length in lengths]
        if body is None or None in attachments:
            return None
        blocks = []
        for i, entry in enumerate(entries):
            if entry & Wire.SHARED_FLAG:
                if _shm is None or lengths[i] != Wire.DESCRIPTOR_LEN:
                    self.broken("a shared-memory attachment without a region or a descriptor")
                found = _shm.view_of(attachments[i])
                if found is None:
                    self.broken("a shared-memory descriptor out of the region: %r"
                                % (_DESCRIPTOR.unpack(attachments[i]),))
                attachments[i], block = found
                blocks.append(block)
        return body, attachments, blocks

    def broken(self, what):
        # The host sent a frame this bridge cannot read past.
        sys.stderr.write("cenote bridge: %s\n" % what)
        sys.stderr.flush()
        os._exit(BridgeExit.PROTOCOL)

    # ---- calls ------------------------------------------------------------
    def functions(self):
        return sorted(
            name
            for name in dir(self.module)
            if _is_public(name) and _is_handler(getattr(self.module, name, None))
        )

    def lookup(self, name):
        # Fast path: a name looked up before whose module attribute is still
        # the same object (modules may rebind their functions).
        fn = self.found.get(name)
        if fn is not None and self.module.__dict__.get(name) is fn:
            return fn
        if not _is_public(name):
            return None
        fn = getattr(self.module, name, None)
        if not _is_handler(fn):
            return None
        self.found[name] = fn
        return fn

    def unknown(self, rid, name):
        if _is_public(name):
            what = "%r is not a public function of the handler module %s" % (
                name,
                self.module.__name__,
            )
        else:
            what = "%r is not a function name (an identifier without a leading _)" % (
                name,
            )
        self.send_error(
            rid,
            ErrorKind.UNKNOWN_FUNCTION,
            "UnknownFunction",
            "%s; it has: %s" % (what, ", ".join(self.functions())),
        )

    # ---- running handler code, cancellably ---------------------------------
    #
    # A call runs its handler's code through a runner: `step(fn, ...)` for
    # sync code, `wait(awaitable)` for async code, `close_async(gen)` to end
    # an async generator. One call at a time, the bridge itself is the
    # runner, on the main thread; with concurrency, a call thread is (see
    # _Concurrent). Either way the runner is what a cancel reaches.
    def wait(self, awaitable):
        # Await a handler's awaitable on the worker's one loop, as a task the
        # cancel thread can cancel.
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        task = self.loop.create_task(awaitable)
        self.task = task
        try:
            if self.cancel_req == self.current:
                task.cancel()
            return self.loop.run_until_complete(task)
        finally:
            self.task = None

    def step(self, fn, *args, **kwargs):
        # Run sync handler code where the cancel signal may interrupt it.
        self.interruptible = True
        try:
            if self.cancel_req == self.current:
                self.interruptible = False
                raise Cancelled("request %d was cancelled before it ran" % self.current)
            return fn(*args, **kwargs)
        finally:
            self.interruptible = False

    def close_async(self, gen):
        self.loop.run_until_complete(gen.aclose())

    def cancel(self, rid):
        # On the cancel thread: the host gave up on request `rid`.
        if self.conc is not None:
            return self.conc.cancel(rid)
        self.cancel_req = rid
        if self.current != rid:
            # Done already, or not started (then `step`/`run` see it).
            return
        if self.task is not None:
            self.loop.call_soon_threadsafe(self._cancel_task, rid)
        elif self.interruptible:
            signal.pthread_kill(threading.main_thread().ident, _CANCEL_SIGNAL)

    def _cancel_task(self, rid):
        # On the loop: cancel the task running request `rid`, if it still is.
        task = self.task
        if task is not None and self.current == rid:
            task.cancel()

    def interrupt(self):
        # The cancel signal's handler, on the main thread: raise in the
        # handler code that runs, once, if its request is the one cancelled.
        if self.interruptible and self.current and self.current == self.cancel_req:
            self.interruptible = False
            raise Cancelled("request %d was cancelled by the host" % self.current)

    def cancelled(self, rid, exc):
        # A call ended by Cancelled or CancelledError: answered CANCELLED if
        # the host asked for it, as a raised exception otherwise (a handler's
        # own CancelledError).
        asked = self.conc.asked(rid) if self.conc is not None else self.cancel_req == rid
        if asked:
            self.send_error(rid, ErrorKind.CANCELLED, type(exc).__name__, "cancelled by the host")
        else:
            self.raised(rid, exc)

    def raised(self, rid, exc):
        # The traceback starts at the handler's code, past the bridge's.
        tb = _past_bridge(exc.__traceback__) or exc.__traceback__
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        if isinstance(exc, SystemExit):
            self.send_error(rid, ErrorKind.SYSTEM_EXIT, "SystemExit", repr(exc.code), text)
        else:
            self.send_error(rid, ErrorKind.RAISED, type(exc).__qualname__, str(exc), text)

    def call(self, msg):
        # One call at a time, on the main thread.
        rid = msg.get("id", 0)
        self.current = rid
        try:
            resolved = self.resolve(rid, msg)
            if resolved is not None:
                self.invoke(rid, *resolved, run=self)
        except (Cancelled, asyncio.CancelledError) as e:
            self.cancelled(rid, e)
        finally:
            self.current = 0

    def resolve(self, rid, msg):
        # A call frame's (name, function, args, kwargs, stream), or None once
        # it has been answered with why it cannot run.
        name = msg.get("fn")
        if not isinstance(name, str):
            self.send_error(
                rid,
                ErrorKind.BAD_REQUEST,
                "BadRequest",
                'a call names its function with a string "fn", not %s' % type(name).__name__,
            )
            return None
        fn = self.lookup(name)
        if fn is None:
            self.unknown(rid, name)
            return None
        try:
            pos, kwargs = _arguments(msg.get("args"), msg.get("kwargs"))
        except TypeError as e:
            self.send_error(rid, ErrorKind.BAD_REQUEST, "BadRequest", str(e))
            return None
        if msg.get("batch"):
            self.batch_rids.add(rid)
        return name, fn, pos, kwargs, bool(msg.get("stream"))

    def call_failed(self, rid, name, fn, e):
        # The handler raised on being called: arguments that do not fit its
        # signature (a TypeError from the call itself), or its own error.
        if isinstance(e, TypeError) and _past_bridge(e.__traceback__) is None:
            self.send_error(
                rid,
                ErrorKind.BAD_ARGS,
                "TypeError",
                "arguments do not fit %s%s: %s" % (name, _signature(fn), e),
            )
        else:
            self.raised(rid, e)

    def invoke(self, rid, name, fn, pos, kwargs, stream, run):
        # Run a resolved call through `run` and answer it.
        try:
            result = run.step(fn, *pos, **kwargs)
        except _CAUGHT as e:
            self.call_failed(rid, name, fn, e)
            return
        if not stream and type(result) in _PLAIN:
            self.send_value(rid, "result", "value", result, name)
            return
        try:
            if inspect.isawaitable(result):
                result = run.wait(result)
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                if stream:
                    self.stream(rid, name, result, run)
                    return
                result = self.collect(result, run)
        except _CAUGHT as e:
            self.raised(rid, e)
            return
        if stream:
            if self.send_value(rid, "chunk", "data", result, name):
                self.end(rid)
        else:
            self.send_value(rid, "result", "value", result, name)

    def collect(self, gen, run):
        if inspect.isasyncgen(gen):
            async def drain():
                return [item async for item in gen]

            return run.wait(drain())
        return run.step(list, gen)

    def stream(self, rid, name, gen, run):
        is_async = inspect.isasyncgen(gen)
        try:
            while True:
                try:
                    if is_async:
                        item = run.wait(gen.__anext__())
                    else:
                        item = run.step(next, gen)
                except (StopIteration, StopAsyncIteration):
                    break
                if not self.send_value(rid, "chunk", "data", item, name):
                    return
        except _CAUGHT as e:
            self.raised(rid, e)
            return
        finally:
            # Also on Cancelled between items: the generator's own cleanup
            # runs (GeneratorExit), outside any cancellable step.
            try:
                if is_async:
                    run.close_async(gen)
                else:
                    gen.close()
            except _CAUGHT:
                pass
        self.end(rid)

    def decode(self, frame):
        # A frame's (kind, id, message), or None once it has been answered
        # as undecodable. Its shared-memory blocks are the call's until it
        # ends (released at once if there is no call).
        body, attachments, blocks = frame
        try:
            if attachments is None:
                msg, bad = _loads(body), None
            else:
                msg, bad = _loads_attached(body, attachments)
            kind = msg["t"]
            rid = msg.get("id", 0)
        except Exception as e:
            if blocks:
                _shm.release_blocks(blocks)
            self.send_error(0, ErrorKind.BAD_REQUEST, type(e).__name__, "undecodable frame: %s" % e)
            return None
        if blocks:
            if kind == "call" and isinstance(rid, int) and rid not in _shm.calls:
                _shm.calls[rid] = blocks
            else:
                _shm.release_blocks(blocks)
        if bad:
            self.send_error(
                rid,
                ErrorKind.BAD_REQUEST,
                "BadRequest",
                "a placeholder refers to attachment %r, but the call carries %d"
                % (bad[0], len(attachments)),
            )
            return None
        return kind, rid, msg

    def odd_frame(self, kind, rid, e):
        # Odd input that slipped past the checks must not end the bridge:
        # answer it and serve on.
        traceback.print_exc()
        self.send_error(
            rid,
            ErrorKind.BAD_REQUEST,
            type(e).__name__,
            "the bridge could not handle a %r frame: %s" % (kind, e),
        )

    def serve(self):
        # One call at a time: read a frame, serve it, answer, repeat.
        while True:
            frame = self.read()
            if frame is None:
                return
            decoded = self.decode(frame)
            if decoded is None:
                continue
            kind, rid, msg = decoded
            if kind == "shutdown":
                return
            try:
                self.handle(kind, rid, msg)
            except Exception as e:
                self.odd_frame(kind, rid, e)

    def handle(self, kind, rid, msg):
        if kind == "call":
            self.call(msg)
        elif kind == "ping":
            self.send({"t": "pong", "id": rid})
        else:
            self.send_error(rid, ErrorKind.BAD_REQUEST, "BadRequest", "unknown frame type %r" % (kind,))

class _Concurrent:
    # Serves up to `k` calls at once (PythonConfig::concurrency): an `async
    # def` handler runs as a task on the worker's one event loop, which the
    # main thread runs; a sync handler runs on one of up to `k` call
    # threads. A reader thread reads frames and hands them to the loop.
    # Answers are written whole, under the bridge's write lock, by whoever
    # finishes the call.
    #
    # A cancel (from the cancel thread) reaches a task by Task.cancel, a call
    # thread by PyThreadState_SetAsyncExc (Cancelled at its next bytecode;
    # code blocked in C, such as time.sleep, is not reached and the host
    # kills the process once its grace runs out), and a call not read yet
    # when it arrives. A call thread is "armed" (open to a cancel) only
    # while it runs handler code for its call, never while it writes a
    # frame: arming and disarming take the lock the cancel thread takes,
    # and disarming voids a cancel that has not landed yet.

    def __init__(self, bridge, k):
        import ctypes
        import queue

        self.bridge = bridge
        self.k = k
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        bridge.loop = self.loop
        # PyThreadState_SetAsyncExc(thread, exc): raise `exc` in that
        # thread at its next bytecode; a NULL exc (None here, with no
        # argtypes set) voids one that has not landed yet.
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        self._set_exc = lambda tid: set_async_exc(ctypes.c_ulong(tid), ctypes.py_object(Cancelled))
        self._clear_exc = lambda tid: set_async_exc(ctypes.c_ulong(tid), None)
        # Under `lock`, shared with the cancel thread and the call threads:
        self.lock = threading.Lock()
        self.highest = 0  # the highest request id read
        self.live = set()  # ids of calls read and not answered yet
        self.cancelled = set()  # ids the host asked to cancel, live or not read yet
        self.tasks = {}  # id -> the asyncio task (or future) running it
        self.armed = {}  # call thread ident -> the id it runs handler code for
        self.jobs = queue.SimpleQueue()
        self.threads = 0
        self.idle = 0

    def asked(self, rid):
        with self.lock:
            return rid in self.cancelled

    # ---- frames in ------------------------------------------------------------
    def serve(self):
        threading.Thread(target=self.read_frames, daemon=True, name="cenote-reader").start()
        self.loop.run_forever()

    def read_frames(self):
        while True:
            frame = self.bridge.read()
            self.loop.call_soon_threadsafe(self.dispatch, frame)
            if frame is None:
                return

    def dispatch(self, frame):
        # On the loop: one frame the reader read (None at the end).
        b = self.bridge
        if frame is None:
            self.loop.stop()
            return
        decoded = b.decode(frame)
        if decoded is None:
            return
        kind, rid, msg = decoded
        try:
            if kind == "call":
                self.start(rid, msg)
            elif kind == "shutdown":
                self.loop.stop()
            else:
                b.handle(kind, rid, msg)
        except Exception as e:
            b.odd_frame(kind, rid, e)

    def start(self, rid, msg):
        b = self.bridge
        with self.lock:
            self.highest = max(self.highest, rid)
            self.live.add(rid)
        resolved = b.resolve(rid, msg)
        if resolved is None:
            self.done(rid)
            return
        name, fn, pos, kwargs, stream = resolved
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            task = self.loop.create_task(self.invoke_async(rid, name, fn, pos, kwargs, stream))
            task.add_done_callback(lambda t: self.unstarted(rid, t))
            with self.lock:
                self.tasks[rid] = task
                if rid in self.cancelled:
                    task.cancel()
        else:
            self.submit(lambda: self.invoke_sync(rid, name, fn, pos, kwargs, stream))

    def done(self, rid):
        with self.lock:
            self.live.discard(rid)
            self.cancelled.discard(rid)
            self.tasks.pop(rid, None)

    def unstarted(self, rid, task):
        # A task cancelled before its first step never ran invoke_async, so
        # nothing answered its call: answer it here.
        if task.cancelled():
            self.bridge.send_error(rid, ErrorKind.CANCELLED, "CancelledError", "cancelled by the host")
            self.done(rid)

    # ---- async handlers: tasks on the loop --------------------------------------
    async def invoke_async(self, rid, name, fn, pos, kwargs, stream):
        b = self.bridge
        try:
            try:
                result = fn(*pos, **kwargs)
            except _CAUGHT as e:
                b.call_failed(rid, name, fn, e)
                return
            if inspect.isasyncgen(result):
                if stream:
                    await self.stream_async(rid, name, result)
                    return
                result = [item async for item in result]
            elif inspect.isawaitable(result):
                result = await result
            if stream:
                if b.send_value(rid, "chunk", "data", result, name):
                    b.end(rid)
            else:
                b.send_value(rid, "result", "value", result, name)
        except (Cancelled, asyncio.CancelledError) as e:
            b.cancelled(rid, e)
        except _CAUGHT as e:
            b.raised(rid, e)
        finally:
            self.done(rid)

    async def stream_async(self, rid, name, gen):
        b = self.bridge
        try:
            async for item in gen:
                if not b.send_value(rid, "chunk", "data", item, name):
                    return
        finally:
            try:
                await gen.aclose()
            except _CAUGHT:
                pass
        b.end(rid)

    # ---- sync handlers: call threads ----------------------------------------------
    def submit(self, job):
        # Each job takes an idle call thread, or starts one: the host sends
        # at most k calls at once, so none waits for a thread.
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
                grow = False
            else:
                grow = self.threads < self.k
                self.threads += grow
        self.jobs.put(job)
        if grow:
            threading.Thread(target=self.call_thread, daemon=True, name="cenote-call").start()

    def call_thread(self):
        while True:
            job = self.jobs.get()
            try:
                job()
            except BaseException:
                # A cancel that landed after its call was answered: nothing
                # is left to stop.
                pass
            with self.lock:
                self.idle += 1

    def invoke_sync(self, rid, name, fn, pos, kwargs, stream):
        b = self.bridge
        try:
            b.invoke(rid, name, fn, pos, kwargs, stream, run=_CallThread(self, rid))
        except (Cancelled, asyncio.CancelledError) as e:
            b.cancelled(rid, e)
        finally:
            self.done(rid)

    def step(self, rid, fn, *args, **kwargs):
        # Run sync handler code of call `rid` on this call thread, armed.
        tid = threading.get_ident()
        with self.lock:
            if rid in self.cancelled:
                raise Cancelled("request %d was cancelled before it ran" % rid)
            self.armed[tid] = rid
        try:
            return fn(*args, **kwargs)
        finally:
            with self.lock:
                self.armed.pop(tid, None)
                self._clear_exc(tid)

    def wait(self, rid, awaitable):
        # A sync handler's awaitable, from a call thread: awaited on the
        # loop, as a task a cancel can reach.
        async def awaited():
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(awaited(), self.loop)
        with self.lock:
            self.tasks[rid] = future
            cancel = rid in self.cancelled
        if cancel:
            future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Cancelled("request %d was cancelled by the host" % rid) from None
        finally:
            with self.lock:
                self.tasks.pop(rid, None)

    # ---- cancels ----------------------------------------------------------------
    def cancel(self, rid):
        # On the cancel thread.
        with self.lock:
            if rid <= self.highest and rid not in self.live:
                return  # answered already
            self.cancelled.add(rid)
            task = self.tasks.get(rid)
            for tid, armed in self.armed.items():
                if armed == rid:
                    self._set_exc(tid)
        if task is None:
            return
        if isinstance(task, asyncio.Task):
            self.loop.call_soon_threadsafe(task.cancel)
        else:
            task.cancel()


class _CallThread:
    # The runner of one sync call on a call thread (see Bridge.wait).
    __slots__ = ("conc", "rid")

    def __init__(self, conc, rid):
        self.conc, self.rid = conc, rid

    def step(self, fn, *args, **kwargs):
        return self.conc.step(self.rid, fn, *args, **kwargs)

    def wait(self, awaitable):
        return self.conc.wait(self.rid, awaitable)

    def close_async(self, gen):
        asyncio.run_coroutine_threadsafe(gen.aclose(), self.conc.loop).result()


def _arguments(args, kwargs):
    # A call's JSON arguments as Python's: an array is positional, an object
    # keywords, null none, anything else the one positional argument; the
    # object "kwargs" is merged over them.
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict):
        raise TypeError('"kwargs" must be an object, not %s' % type(kwargs).__name__)
    if args is None:
        return (), kwargs
    if isinstance(args, list):
        return args, kwargs
    if isinstance(args, dict):
        return (), dict(args, **kwargs)
    return (args,), kwargs


def _signature(fn):
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _module_name(stem, path):
    # The file's own name, when `import <stem>` finds this very file (so its
    # neighbours share the module); otherwise the name means another module
    # (json, logging...), or none, and the file gets a private one.
    if stem.isidentifier():
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin and os.path.realpath(found.origin) == os.path.realpath(path):
            return stem
    return _PRIVATE_PREFIX + stem


def _load(spec):
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        directory, filename = os.path.split(path)
        if directory not in sys.path:
            sys.path.insert(_after_stdlib(), directory)
        name = _module_name(os.path.splitext(filename)[0], path)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("cannot load handler file %s" % path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def _watch_cancels(bridge, fd):
    # The cancel thread: the ids of requests the host gave up on, each 8
    # bytes (written whole: a pipe write that small is atomic).
    pending = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return  # the host closed the pipe: it is going away
        pending += data
        whole = len(pending) - len(pending) % _CANCEL_ID.size
        for (rid,) in _CANCEL_ID.iter_unpack(pending[:whole]):
            bridge.cancel(rid)
        pending = pending[whole:]


def _serve(module, max_frame, cancel_fd, concurrency, regions, threshold):
    # Say ready, then serve calls until stdin closes or a shutdown frame.
    global _shm
    if regions is not None:
        _shm = _Shm(regions, threshold, max_frame)
    bridge = Bridge(module, max_frame)
    if concurrency > 1:
        bridge.conc = _Concurrent(bridge, concurrency)
    else:
        signal.signal(_CANCEL_SIGNAL, lambda *_: bridge.interrupt())
    threading.Thread(
        target=_watch_cancels, args=(bridge, cancel_fd), daemon=True, name="cenote-cancels"
    ).start()
    bridge.send(
        {
            "t": "ready",
            "id": 0,
            "pid": os.getpid(),
            "version": platform.python_version(),
            "protocol": Wire.PROTOCOL,
            "concurrency": concurrency,
            "functions": bridge.functions(),
        }
    )
    (bridge.conc or bridge).serve()


def _import_failed(send, e):
    traceback.print_exc()
    sys.stderr.flush()
    send(0, ErrorKind.IMPORT, type(e).__qualname__, "%s: %s" % (type(e).__qualname__, e),
         "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    os._exit(BridgeExit.IMPORT_FAILED)


def main():
    if sys.argv[1] == "--zygote":
        return _zygote(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                       [m for m in sys.argv[5].split(",") if m], int(sys.argv[6]))
    spec, max_frame, parent_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    concurrency = int(sys.argv[4])
    if os.getppid() != parent_pid:
        _die_with_group()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="cenote-watchdog").start()
    _public_module()
    try:
        module = _load(spec)
    except BaseException as e:
        _import_failed(Bridge(None, max_frame).send_error, e)
    _serve(module, max_frame, _cenote_cancels, concurrency, _cenote_regions, int(sys.argv[5]))


# ---- fork server ------------------------------------------------------------
#
# `--zygote <handler> <max_frame> <host_pid> <preload,...> <concurrency>`: import the
# preload modules and the handler once, then fork a worker for each request
# on the control socket (fd 3, SOCK_SEQPACKET; one JSON object a message):
#
#   host -> zygote: {"t":"fork","id":N} with the worker's stdin, stdout,
#                   stderr and cancel pipe fds attached (SCM_RIGHTS), which
#                   become its fds 0-3; {"t":"reap","pid":P}
#   zygote -> host: {"t":"ready","pid":P}, or {"t":"unsafe","reason":...},
#                   or {"t":"error","type":...,"message":...} (import failed);
#                   {"t":"forked","id":N,"pid":P} or {"t":"fork_failed",...};
#                   {"t":"exit","pid":P,"code":C} or {...,"signal":S}
#
# A dead worker's group is killed and its exit reported, but it is reaped
# only when the host says "reap": until then its pid cannot be reused, so a
# kill from the host can only reach what the worker started. End-of-file on
# the socket (the host is gone) kills every worker's group, reaps them and
# exits. The zygote starts no thread: it forks, and fork copies only the
# calling thread.


def _fork_unsafe():
    # Why forking this process would be unsafe, or None.
    if not sys.platform.startswith("linux"):
        return "the platform is not Linux"
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        return ("the handler's import left %d threads running; a forked worker "
                "would get only one of them (and any lock it held)" % threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return "CUDA is initialised; it cannot be used in a forked process"
        except Exception:
            pass
    policy = asyncio.get_event_loop_policy()
    loop = getattr(getattr(policy, "_local", None), "_loop", None)
    if loop is not None and not loop.is_closed():
        return "an asyncio event loop exists; its epoll fd would be shared by every worker"
    return None


def _zygote(spec, max_frame, host_pid, preload, concurrency):
    import gc
    import selectors
    import socket

    ctl = socket.socket(fileno=3)

    def send(obj):
        ctl.send(_dumps(obj).encode("utf-8"))

    def send_import_error(_rid, _kind, type_name, message, _tb):
        send({"t": "error", "type": type_name, "message": message})

    _public_module()
    try:
        for name in preload:
            importlib.import_module(name)
        module = _load(spec)
    except BaseException as e:
        _import_failed(send_import_error, e)
    reason = _fork_unsafe()
    if reason is not None:
        send({"t": "unsafe", "reason": reason})
        os._exit(BridgeExit.OK)
    gc.collect()
    gc.freeze()
    send({"t": "ready", "pid": os.getpid()})

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    workers = {}  # pid -> exit reported

    def shut_down():
        for pid in workers:
            _killpg(pid)
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(BridgeExit.OK)

    while True:
        for key, _ in sel.select():
            if key.fileobj == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
        while True:
            try:
                msg, fds = _recv_fds(ctl, socket)
            except BlockingIOError:
                break
            except OSError:
                shut_down()
            if not msg:
                shut_down()
            try:
                req = _loads(msg)
            except ValueError:
                for fd in fds:
                    os.close(fd)
                continue
            if req.get("t") == "fork":
                shm = req.get("shm", 0)
                pid = _fork(req.get("id", 0), fds, send, module,
                            (max_frame, concurrency, shm if type(shm) is int else 0),
                            (ctl, sel, wake_r, wake_w))
                if pid:
                    workers[pid] = False
            elif req.get("t") == "reap":
                pid = req.get("pid")
                if workers.get(pid):
                    del workers[pid]
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass
        for pid, reported in workers.items():
            if reported:
                continue
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None:
                continue
            _killpg(pid)
            workers[pid] = True
            if info.si_code == os.CLD_EXITED:
                send({"t": "exit", "pid": pid, "code": info.si_status})
            else:
                send({"t": "exit", "pid": pid, "signal": info.si_status})


# The fds a fork request carries: the worker's fds 0, 1, 2 and 3, and 4
# and 5 (its shared-memory regions) when it has them.
_FORK_FDS = 4
_FORK_FDS_SHM = 6


def _recv_fds(ctl, socket):
    # One control message and the fds attached to it, without blocking.
    # (socket.recv_fds ignores its flags argument before Python 3.12.)
    import array
    fds = array.array("i")
    msg, ancdata, _, _ = ctl.recvmsg(65536, socket.CMSG_LEN(_FORK_FDS_SHM * fds.itemsize), socket.MSG_DONTWAIT)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def _killpg(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _fork(rid, fds, send, module, settings, zygote_fds):
    # Fork one worker with `fds` as its stdin, stdout and stderr; the pid.
    want = _FORK_FDS_SHM if settings[2] > 0 else _FORK_FDS
    if len(fds) != want:
        for fd in fds:
            os.close(fd)
        send({"t": "fork_failed", "id": rid, "message": "a fork request needs %d fds, got %d" % (want, len(fds))})
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        for fd in fds:
            os.close(fd)
        send({"t": "fork_failed", "id": rid, "message": str(e)})
        return None
    if pid == 0:
        # The worker never returns into the zygote's loop.
        try:
            _worker(fds, module, settings, zygote_fds)
            sys.stderr.flush()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(BridgeExit.INTERNAL)
        os._exit(BridgeExit.OK)
    try:
        os.setpgid(pid, pid)  # the child does it too: whoever comes first
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    send({"t": "forked", "id": rid, "pid": pid})
    return pid


def _worker(fds, module, settings, zygote_fds):
    # In a freshly forked worker: become a bridge like a spawned one.
    global _cenote_frames_in, _cenote_frames_out
    zygote = os.getppid()
    try:
        os.setpgid(0, 0)  # the zygote does it too: whoever comes first
    except OSError:
        pass
    ctl, sel, wake_r, wake_w = zygote_fds
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sel.close()
    ctl.close()
    os.close(wake_r)
    os.close(wake_w)
    # The fork server's own frame fds first (they may be 4 and 5); then the
    # worker's fds, each moved above every target first, so that no move
    # closes an fd still to move.
    os.close(_cenote_frames_in)
    os.close(_cenote_frames_out)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)
    _cenote_frames_in, _cenote_frames_out = _setup_fds()
    cancel_fd = _take_cancel_fd()
    max_frame, concurrency, threshold = settings
    regions = _take_regions() if threshold > 0 else None
    # The zygote may die: then this worker takes its own group down.
    threading.Thread(target=_watch_parent, args=(zygote,), daemon=True, name="cenote-watchdog").start()
    _after_fork(module, max_frame)
    _serve(module, max_frame, cancel_fd, concurrency, regions, threshold)


def _after_fork(module, max_frame):
    # Every worker must draw its own random numbers (stdlib random reseeds
    # itself at fork; numpy's global RNG does not), then the handler's hook
    # reopens what must not be shared (connections, threads).
    import random
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed()
        except Exception:
            traceback.print_exc()
    hook = getattr(module, "cenote_after_fork", None)
    if callable(hook):
        try:
            hook()
        except BaseException as e:
            _import_failed(Bridge(None, max_frame).send_error, e)


try:
    main()
except BaseException:
    # Handlers' exceptions are answered as errors: this is a bug of the
    # bridge, a broken pipe, or a KeyboardInterrupt-like one from a handler.
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(BridgeExit.INTERNAL)
sys.stderr.flush()
sys.exit(BridgeExit.OK)
