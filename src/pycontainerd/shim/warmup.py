"""Prepare the launcher's memory before it forks shims, so the shims share more of it.

A forked shim pays (as private, copy-on-write pages) for every page of the launcher it
writes, and with one shim per container that is the memory a container costs.  On CPython
3.11 the writes are: reference counts of every object a shim touches (code objects its
frames hold, functions, strings, types), the specializing interpreter rewriting the
bytecode of functions the first times they run ("quickening"), new objects landing in free
slots of the launcher's half-used pymalloc pools and malloc chunks, and the cyclic GC.
``prepare_memory`` does, in order:

- ``hot_code``/``pack_functions``/``pack_code``: a profiled round of the hot paths (the
  second: what only runs the first time is not the shims' business) finds the code the
  shims run; each such function gets a fresh function object and a fresh copy of its code
  object, allocated together (glibc's tcache and the heap's free chunks taken first, so
  that the copies go to the top of the heap, not into old holes), so the code a shim
  writes to sits on few pages instead of one page per function;
- ``warm_up``: runs the shim's hot paths — a launcher child's answer to the daemon's
  ``start_v2`` (``shim.main.answer_request``), ttrpc frames through ``TaskV2``
  (Create/Start/Wait/State/Pids/Kill/Delete/Shutdown, with a stand-in runtime script), the
  events ``Forwarder``, the reaper, ``Runc.run``, pumps — enough times for the bytecode to
  specialize, and ``warm_after_fork`` does the same for threading's at-fork handler;
- ``fill_pools``/``fill_heap``: fills the free blocks of pymalloc's pools and the free
  chunks of the C heap, so a shim's new objects go to memory of its own, packed;
- ``gc.freeze()``: the collector never walks (and writes to) the launcher's objects.

Measured (10 shims of running containers, Python 3.11): private dirty memory per shim
4.0 -> 3.5 MiB; with the second-round profile, the packed functions and the tcache taken,
2.78 -> 2.60 MiB (bench W5: PSS of daemon + shims per container 3.61 -> 3.45 MiB).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType
from typing import Any

from pycontainerd.mount import core as mounts
from pycontainerd.shim import v2layout
from pycontainerd.shim.execfifo import FIFO_NAME, FifoStart
from pycontainerd.shim.io import Pump, Sink
from pycontainerd.shim.loop import Future, Loop
from pycontainerd.shim.reaper import Reaper
from pycontainerd.shim.runc import Runc, probe_runtime, resolve_binary
from pycontainerd.shim.service import write_atomic

ROUNDS = 12


# A stand-in runtime: writes its own pid as the "container" pid and exits, so ``create``
# runs its whole path including adopting and reporting an exit.
FAKE_RUNTIME = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --pid-file) echo $$ > "$2"; shift;; esac
  shift
done
"""


def _round_io(tmp: str) -> None:
    """``Runc.run`` and a pump over a pipe to its EOF."""
    loop = Loop()
    reaper = Reaper(loop)
    runc = Runc(loop, reaper, binary="/bin/true", root=tmp, log_path=os.path.join(tmp, "log.json"))
    done = loop.spawn(runc.run(["state", "x"]))
    r, w = os.pipe2(os.O_CLOEXEC)
    sink_r, sink_w = os.pipe2(os.O_CLOEXEC)
    pump = Pump(loop, r, Sink(loop, sink_w, name="warmup"))
    os.write(w, b"x" * 100)
    os.close(w)
    timer: Future[bool] = loop.wait_for(pump.done, 5.0)
    while not (done.done() and timer.done()):
        loop.run_once(0.05)
    loop.run_once(0)
    # a Start through the exec FIFO: the init's byte, then its end closing at the exec
    os.makedirs(os.path.join(tmp, "fifo-c"), exist_ok=True)
    os.mkfifo(os.path.join(tmp, "fifo-c", FIFO_NAME))
    release = FifoStart.open(loop, tmp, "fifo-c")
    if release is not None:
        w = os.open(os.path.join(tmp, "fifo-c", FIFO_NAME), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(w, b"0")
        os.close(w)
        deadline = time.monotonic() + 5.0
        while not release.done.done() and time.monotonic() < deadline:
            loop.run_once(0.05)
    write_atomic(os.path.join(tmp, "state.json"), b"{}")
    # a Create's rootfs mounts: option parsing is pure; the mount(2) calls themselves are not rehearsed
    for m in (mounts.Mount("overlay", "overlay", ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l"]),
              mounts.Mount("bind", "/s", ["rbind", "ro"])):
        mounts.parse_options(m.options)
    os.close(sink_r)
    loop._sel.close()
    os.close(loop._wake_r)
    os.close(loop._wake_w)


def _round_v2(tmp: str) -> None:
    """The runtime v2 shim's path: ttrpc frames in, task.v2 protobufs through ``TaskV2``
    (Create/Start/Wait/State/Pids/Delete/Shutdown with the stand-in runtime), events out to a
    ``Forwarder`` (a listening socket nobody answers)."""
    from google.protobuf import any_pb2
    from google.protobuf.message import Message

    from pycontainerd.api.runtime.v2.runc.options import oci_pb2
    from pycontainerd.api.runtime.v2.task import shim_pb2 as pb
    from pycontainerd.shim import taskv2
    from pycontainerd.shim.ttrpc_loop import Forwarder, TtrpcConnection, TtrpcServer
    from pycontainerd.ttrpc.protocol import ClientConnection, Request, ResponseReceived, metadata_pairs

    loop = Loop()
    reaper = Reaper(loop)
    events = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    events.bind(os.path.join(tmp, "events"))
    events.listen(4)
    forwarder = Forwarder(loop, os.path.join(tmp, "events"), "warmup")
    tasks = taskv2.TaskV2(loop, reaper, namespace="warmup", socket_path=os.path.join(tmp, "v2"), forwarder=forwarder)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(tmp, "v2"))
    listener.listen(4)
    server = TtrpcServer(loop, listener, tasks.methods())
    ours, theirs = socket.socketpair()
    server.connections.add(TtrpcConnection(server, ours))
    theirs.setblocking(False)
    client = ClientConnection()
    md = metadata_pairs({"containerd-namespace-ttrpc": "warmup"})
    options = oci_pb2.Options(binary_name=os.path.join(tmp, "runtime"), root=tmp)
    any_options = any_pb2.Any(type_url=f"containerd.io/{taskv2.RUNC_OPTIONS}", value=options.SerializeToString())

    def call(method: str, msg: Message) -> None:
        sid, data = client.send_request(Request(taskv2.TASK, method, msg.SerializeToString(), 0, md))
        theirs.sendall(data)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            loop.run_once(0.05)
            try:
                got = theirs.recv(1 << 16)
            except BlockingIOError:
                continue
            if any(isinstance(ev, ResponseReceived) and ev.stream_id == sid for ev in client.receive_data(got)):
                return

    call("Create", pb.CreateTaskRequest(id="w", bundle=tmp, options=any_options))
    call("Start", pb.StartRequest(id="w"))
    call("Wait", pb.WaitRequest(id="w"))
    call("State", pb.StateRequest(id="w"))
    call("Pids", pb.PidsRequest(id="w"))
    call("Kill", pb.KillRequest(id="w", signal=9))
    call("Connect", pb.ConnectRequest(id="w"))
    call("Delete", pb.DeleteRequest(id="w"))
    call("State", pb.StateRequest(id="nosuch"))
    call("Shutdown", pb.ShutdownRequest(id="w"))
    server.close()
    forwarder.close()
    theirs.close()
    events.close()
    loop._sel.close()
    os.close(loop._wake_r)
    os.close(loop._wake_w)
    for name in ("v2", "events", v2layout.OPTIONS_FILE):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, name))


def _round_launch(tmp: str) -> None:
    """What a child of the launcher does before it serves: read the daemon's start_v2
    request, claim the shim (the group socket bound, here under ``tmp``; ``shim.pid`` and
    ``address`` written), answer — and once more for a group whose shim answers already."""
    from pycontainerd.shim import main, protocol

    daemon, ours = socket.socketpair()
    params = {"namespace": "warmup", "id": "w", "group": "w", "address": os.path.join(tmp, "d.sock"), "bundle": tmp,
              "ttrpc_address": os.path.join(tmp, "d.sock.ttrpc"), "options": {}}
    try:
        daemon.sendall(protocol.request(1, "start_v2", params))
        shim = main.answer_request(ours, socket_root=tmp)
        daemon.sendall(protocol.request(2, "start_v2", params))  # the group's shim listens already
        again = main.answer_request(ours, socket_root=tmp)
        protocol.Decoder().feed(daemon.recv(1 << 16))
        if shim is not None:
            shim.abandon()
        if again is not None:
            again.abandon()
    finally:
        daemon.close()
        ours.close()
    for name in (main.PID_FILE, main.ADDRESS_FILE):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, name))


def hot_code() -> set[CodeType]:
    """The code objects the hot paths run every time: a first round runs what only runs
    the first time (imports, regular expressions compiled, caches filled), then a second,
    profiled; the rehearsal's own code (this module's) is left out, no shim runs it."""
    seen: set[CodeType] = set()
    here = __file__

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename != here:
            seen.add(frame.f_code)

    warm_up(1)
    warm_up(1, profile)
    return seen


# Code every shim runs for a real container that ``warm_up`` cannot rehearse in the launcher
# (detaching from it, mounting the rootfs, a console or FIFOs, the cgroup's OOM watch, the
# exit path): packed with the hot code all the same ("module:qualname"; a name that is gone
# is skipped, tests/unit/test_shim_warmup.py checks they all resolve).
PER_SHIM_CODE = (
    "pycontainerd.shim.main:become_shim",
    "pycontainerd.shim.v2main:ClaimedShim.run",
    "pycontainerd.shim.v2main:_log_fd",
    "pycontainerd.shim.v2main:serve",
    "pycontainerd.shim.reaper:set_subreaper",
    "pycontainerd.shim.loop:Loop.run_forever",
    "pycontainerd.shim.loop:Loop.stop",
    "pycontainerd.shim.loop:TimerHandle.__lt__",
    "pycontainerd.shim.loop:_noop_handler",
    "pycontainerd.shim.server:Listening._accept",
    "pycontainerd.shim.server:Connection.flush_blocking",
    "pycontainerd.shim.service:_mount",
    "pycontainerd.shim.service:Service._start_done",
    "pycontainerd.shim.service:Service._start_init",
    "pycontainerd.shim.service:Service.resize_pty",
    "pycontainerd.mount.core:mount_all",
    "pycontainerd.mount.core:_mount_one",
    "pycontainerd.mount.core:_raw_mount",
    "pycontainerd.mount.core:unmount_all",
    "pycontainerd.shim.io:parse_uri",
    "pycontainerd.shim.io:_open_output",
    "pycontainerd.shim.io:ProcessIO._listen_console",
    "pycontainerd.shim.io:ProcessIO._console_accept",
    "pycontainerd.shim.io:ProcessIO.keep_stdin",
    "pycontainerd.shim.io:ProcessIO.resize",
    "pycontainerd.shim.io:ProcessIO._terminal_stdin_eof",
    "pycontainerd.shim.oom:OOMWatcher._watch_v1",
    "pycontainerd.shim.oom:OOMWatcher._watch_v2",
    "pycontainerd.shim.oom:OOMWatcher._read_kills",
    "pycontainerd.shim.oom:OOMWatcher.close",
    "pycontainerd.shim.runc:Runc.start",
    "pycontainerd.shim.runc:starts_by_fifo",
    "pycontainerd.shim.runc:_identity",
    "pycontainerd.shim.taskv2:TaskV2.resize_pty",
    "pycontainerd.shim.ttrpc_loop:Forwarder._readable",
    "pycontainerd.shim.ttrpc_loop:Forwarder._cancel_deadline",
    "pycontainerd.shim.ttrpc_loop:Forwarder.flush",
    "pycontainerd.shim.ttrpc_loop:TtrpcServer.flush",
    "socket:socket.accept",
    "socket:socket.family",
    "socket:socket.type",
    "socket:_intenum_converter",
    "socket:recv_fds",
    "os:makedirs",
    "posixpath:split",
    "contextlib:nullcontext.__init__",
    "contextlib:nullcontext.__enter__",
    "contextlib:nullcontext.__exit__",
)


def resolve_code(path: str) -> CodeType | None:
    """The code object of ``PER_SHIM_CODE``'s "module:qualname" (a property's getter), None if
    the module is not loaded (nothing is imported for it) or the name is gone."""
    module, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    obj = getattr(obj, "fget", obj)
    code = getattr(obj, "__code__", None)
    return code if isinstance(code, CodeType) else None


def with_nested(codes: set[CodeType]) -> set[CodeType]:
    """``codes`` and every code object nested in them (comprehensions, closures: the
    functions a running function makes come from its constants)."""
    out: set[CodeType] = set()
    todo = list(codes)
    while todo:
        code = todo.pop()
        if code not in out:
            out.add(code)
            todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return out


def pack_code(hot: set[CodeType]) -> int:
    """Give every function whose code is in ``hot`` a fresh copy of it, allocated now, one
    after the other (nested code objects in ``hot`` too, through the constants).

    Module import leaves each code object among everything else its module made (docstrings,
    constants, classes); a shim that runs a function writes its code object (the reference
    a frame takes, the specializing interpreter's counters), and so copies the whole page.
    Copied together, the code the shims run shares far fewer pages.  Returns how many."""
    memo: dict[CodeType, CodeType] = {}

    def copy(code: CodeType) -> CodeType:
        new = memo.get(code)
        if new is None:
            consts = tuple(copy(c) if isinstance(c, CodeType) and c in hot else c for c in code.co_consts)
            new = memo[code] = code.replace(co_consts=consts)
        return new

    for obj in gc.get_objects():
        if isinstance(obj, FunctionType) and obj.__code__ in hot:
            obj.__code__ = copy(obj.__code__)
    return len(memo)


def _clone_function(f: FunctionType) -> FunctionType:
    """A new function object equal to ``f`` in all but identity (same code, globals, defaults,
    closure, names, attributes)."""
    new = FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    new.__kwdefaults__ = f.__kwdefaults__
    new.__qualname__ = f.__qualname__
    new.__module__ = f.__module__
    new.__doc__ = f.__doc__
    new.__annotations__ = f.__annotations__
    new.__dict__.update(f.__dict__)
    return new


def pack_functions(hot: set[CodeType]) -> int:
    """Give every module-level function and plain method whose code is in ``hot`` a fresh
    function object, allocated now, one after the other, in place of the old one in its
    module's namespace and its class (the old one stays wherever else it is referenced).

    A call takes a reference to the function object it runs, so a shim writes (copies) the
    page of every function it calls; left where import put them, the few hundred functions
    a shim calls are spread over as many pages.  Returns how many were replaced."""
    memo: dict[FunctionType, FunctionType] = {}

    def moved(value: object) -> FunctionType | None:
        if not isinstance(value, FunctionType) or value.__code__ not in hot:
            return None
        new = memo.get(value)
        if new is None:
            new = memo[value] = _clone_function(value)
        return new

    seen: set[int] = set()
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            new = moved(value)
            if new is not None:
                namespace[name] = new
            elif isinstance(value, type) and id(value) not in seen:
                seen.add(id(value))
                for attr, member in list(vars(value).items()):
                    new = moved(member)
                    if new is not None:
                        with contextlib.suppress(TypeError, AttributeError):
                            setattr(value, attr, new)
    return len(memo)


_FILLERS: list[object] = []  # the launcher's pool fillers (see ``fill_pools``), kept for its life


def free_blocks() -> dict[int, int]:
    """pymalloc's free blocks per size class (bytes -> count), from ``sys._debugmallocstats``
    (the one place CPython reports them; it writes to the C stderr)."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[int, int] = {}
    for line in text.splitlines():
        # "class   size   num pools   blocks in use  avail blocks"
        parts = line.split()
        if len(parts) == 5 and all(p.isdigit() for p in parts):
            out[int(parts[1])] = int(parts[4])
    return out


def fill_pools() -> int:
    """Fill every free block of pymalloc's pools with a small object of its size class,
    kept for the launcher's life; returns how many.

    A forked shim's new objects would otherwise land in those free blocks, spread over
    hundreds of the launcher's half-used pages, and each such write copies a whole page
    into the shim.  With the pools full, a shim's objects go to pools of its own, packed.
    Counted twice: the first count's own temporaries (parsing the report) may take fresh
    pools, freed again before the second count sees them, which then fills them too; the
    fillers' list is allocated once, before any filler."""
    free_blocks()
    counts = free_blocks()
    fillers: list[object] = [None] * sum(counts.values())
    i = 0
    for size, free in counts.items():
        length = size - 33  # a bytes object takes 33 + its length
        for _ in range(free):
            if size <= 16:
                fillers[i] = object()  # 16 bytes
            elif size <= 32:
                fillers[i] = float(i)  # 24 bytes
            else:
                fillers[i] = bytes(length)
            i += 1
    _FILLERS.append(fillers)
    return i


_HEAP_FILLERS: list[int] = []  # malloc'd blocks filling the heap's free chunks, never freed
TCACHE_COUNT = 7  # glibc's default tunables glibc.malloc.tcache_count ...
TCACHE_MAX = 1032  # ... and glibc.malloc.tcache_max (bytes)
_SIZE = re.compile(r'<size from="(\d+)" to="(\d+)" total="(\d+)" count="(\d+)"/>')


def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.open_memstream.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def heap_free_chunks(libc: Any) -> list[tuple[int, int]]:
    """The main malloc arena's free chunks as (chunk size, count), from ``malloc_info``."""
    import ctypes

    buf = ctypes.c_char_p()
    size = ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not stream:
        return []
    try:
        libc.malloc_info(0, stream)
    finally:
        libc.fclose(stream)
    try:
        text = ctypes.string_at(buf, size.value).decode(errors="replace")
    finally:
        libc.free(buf)
    main = text.split('<heap nr="1"', 1)[0].split("<total ", 1)[0]
    # sizes are printed with the chunk header's in-use bit set
    return [(int(m[0]) & ~15, int(m[3])) for m in _SIZE.findall(main)]


def fill_heap() -> int:
    """``fill_pools`` for the C heap: malloc a block into each free chunk of the main arena
    (code objects, dict tables, protobuf arenas live there), kept for the launcher's life,
    so that a shim's mallocs are served from the top of the heap, packed, instead of from
    chunks spread over the launcher's pages.  Returns how many blocks.

    glibc's per-thread cache (tcache) holds up to ``TCACHE_COUNT`` freed chunks of every
    size up to ``TCACHE_MAX`` bytes, which ``malloc_info`` counts as in use: they are taken
    first, by as many mallocs of every such size (those beyond the cached chunks come from
    the bins, filled next, or the top of the heap)."""
    try:
        libc = _libc()
        for size in range(24, TCACHE_MAX + 1, 16):
            for _ in range(TCACHE_COUNT):
                ptr = libc.malloc(size)
                if ptr:
                    _HEAP_FILLERS.append(ptr)
        for _ in range(3):
            chunks = heap_free_chunks(libc)
            if not chunks:
                break
            for chunk, count in chunks:
                for _ in range(count):
                    ptr = libc.malloc(max(chunk - 8, 1))
                    if ptr:
                        _HEAP_FILLERS.append(ptr)
    except (OSError, AttributeError, ValueError):
        pass  # not glibc: an optimization only
    return len(_HEAP_FILLERS)


def warm_after_fork() -> None:
    """Specialize the handler ``threading`` registered to run in every forked child (the
    shim's modules import it: protobuf takes its locks from it), as ``warm_up`` does the
    shim's own paths.  Run here, in the single-threaded launcher, it only renews the
    module's locks and its record of this one thread."""
    import threading

    after_fork = getattr(threading, "_after_fork", None)
    if not callable(after_fork) or threading.active_count() != 1:
        return
    for _ in range(ROUNDS):
        after_fork()


def prepare_memory() -> None:
    """The launcher's memory, made ready to be shared by the shims it forks: the hot paths'
    code packed together (``pack_code``) and specialized (``warm_up``), pymalloc's free
    blocks filled (``fill_pools``), and every object frozen out of the collector's reach
    (``gc.freeze``: a collection in a shim would otherwise write to every object's header)."""
    hot = with_nested(hot_code() | {c for c in map(resolve_code, PER_SHIM_CODE) if c is not None})
    fill_pools()  # the packed copies go to fresh pools, not into the gaps of old ones
    fill_heap()
    pack_functions(hot)
    pack_code(hot)
    del hot
    warm_up()
    warm_after_fork()
    resolve_binary("runc")  # the default runtime, found on PATH once for every shim
    probe_runtime("runc")  # and its version: may a shim start a container without `runc start`?
    gc.collect()
    fill_heap()  # its temporaries freed before the pools are filled
    fill_pools()
    gc.freeze()


def warm_up(rounds: int = ROUNDS, profile: Callable[[FrameType, str, object], None] | None = None) -> None:
    """Run the hot paths (never raises: warming up is an optimization only); ``profile``:
    a ``sys.setprofile`` function for the rounds (not for their scratch directory's making)."""
    try:
        with tempfile.TemporaryDirectory(prefix="pycd-shim-warmup-") as tmp:
            with open(os.path.join(tmp, "runtime"), "w") as f:
                f.write(FAKE_RUNTIME)
            os.chmod(os.path.join(tmp, "runtime"), 0o755)
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write('{"linux": {"namespaces": [{"type": "pid"}]}}')
            sys.setprofile(profile)
            try:
                for _ in range(rounds):
                    _round_launch(tmp)
                    _round_io(tmp)
                    _round_v2(tmp)
            finally:
                sys.setprofile(None)
    except Exception as exc:
        os.write(2, f"pycontainerd-shim launcher: warm-up failed: {exc!r}\n".encode())
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
