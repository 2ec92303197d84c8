"""What an idle daemon does not load: the modules of a disabled plugin and of operations not yet
asked for stay out of memory (W6, idle PSS).  Checked in a fresh interpreter: the plugin list
is built and the registry's configs decoded as the daemon does at start-up."""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = [
    "pycontainerd.cri.wiring",  # the CRI's servicers, stores, CNI: imported when the plugin starts
    "pycontainerd.api.cri.runtime.v1.api_pb2",
    "pycontainerd.cni",
    "re2",  # a user's ~= filter compiles the first pattern
    "isal",  # the first gzip layer applied or diff made
    "zstandard",
    "tarfile",  # the first diff (compare.write_diff)
    "pycontainerd.diff.apply",  # the first layer applied
    "pycontainerd.diff.compare",
    "pycontainerd.diff.compression",  # the codecs: the first apply or diff (W6, idle PSS)
    # stdlib and protobuf modules an idle daemon had loaded for one call each (W6, idle PSS)
    "ctypes.util",  # libc is found as the process's own symbols; find_library ran ldconfig
    "fractions",  # durations are parsed with integers
    "decimal",
    "uuid",  # the server's uuid is formatted from os.urandom
    "platform",  # introspection's host architecture is os.uname()
    "tempfile",  # the diff service's temporary mounts
    "shutil",  # rmtree/which at first use: shutil imports bz2 and lzma
    "bz2",
    "lzma",
    "calendar",  # timestamps.parse_ns (time.strptime loads it anyway)
    "secrets",
    "google.protobuf.json_format",  # the first event, metrics or typeurl.to_dict
    "pycontainerd.debug.pprof",  # the debug socket's heap and CPU profiles
    "tracemalloc",
    "gzip",
    "argparse",  # a daemon's command line is read by _serve_args; help, subcommands: argparse
    "gettext",
    "tomli_w",  # `config dump|default` only
    # the runtime v2 manager, ttrpc and the shim API protobufs: the task plugin's DeferredShims
    # load them with the first shim (tests/integration/test_idle_daemon.py runs the plugins)
    "pycontainerd.runtime.v2.manager",
    "pycontainerd.runtime.v2.shim",
    "pycontainerd.runtime.shim_client",
    "pycontainerd.ttrpc",
    "pycontainerd.api.runtime.v2.task.shim_pb2",
    # the protobuf runtime: at the first call needing it (the servicers' method tables are static,
    # services.tables; Version, Introspection.Server and Health.Check have hand-written codecs, rpc.wire)
    "google.protobuf",
    "google._upb._message",
    "google.protobuf.empty_pb2",
    "google.protobuf.timestamp_pb2",
    "google.rpc.status_pb2",
    "grpc_health.v1.health_pb2",
    "pycontainerd.api.services.version.v1.version_pb2",
    "pycontainerd.api.types.platform_pb2",
    # the generated modules of the services: imported at each service's first call needing them
    # (services.common.DeferredModule, rpc.Server.add_service_table)
    "pycontainerd.api.services.containers.v1.containers_pb2",
    "pycontainerd.api.services.content.v1.content_pb2",
    "pycontainerd.api.services.diff.v1.diff_pb2",
    "pycontainerd.api.services.events.v1.events_pb2",
    "pycontainerd.api.services.images.v1.images_pb2",
    "pycontainerd.api.services.introspection.v1.introspection_pb2",
    "pycontainerd.api.services.leases.v1.leases_pb2",
    "pycontainerd.api.services.namespaces.v1.namespaces_pb2",
    "pycontainerd.api.services.snapshots.v1.snapshots_pb2",
    "pycontainerd.api.services.tasks.v1.tasks_pb2",
    "pycontainerd.api.events.task_pb2",
    "pycontainerd.api.cgroups.v2.metrics_pb2",
    # our own modules used by one kind of call only: cgroups at the first metrics call (or with
    # [cgroup] path set), the stack walker at the first goroutine dump or SIGUSR1 (W6, idle PSS)
    "pycontainerd.cgroups",
    "pycontainerd.debug.stacks",
    "pycontainerd.debug.profile",
    "pycontainerd.runtime.shim_api",  # the task manager's shim protocols: annotations only
    "pycontainerd.shim.protocol",  # CreateOptions: the first task created
]
# loaded by the first filtered call (a list, an events subscription): SCRIPT itself parses a filter
FILTERS = ["pycontainerd.filters", "pycontainerd.regexp"]

SCRIPT = """
import json, os, sys
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
from pycontainerd.daemon import builtins, server  # noqa: F401 - what `pycontainerd` imports to serve
from pycontainerd.daemon import __main__ as _main  # noqa: F401 - the entry point
from pycontainerd.debug import server as _debug  # noqa: F401 - the debug socket, always served
from pycontainerd import filters
regs = builtins.registrations()
from pycontainerd.runtime import task_plugin as _tp  # noqa: F401 - the runtime plugin's module
assert _main._serve_args(["--root", "/r", "--state=/s", "-a", "/a.sock", "-c", "/c.toml", "-l", "info"])
filters.parse_all(["labels.a==b"])  # a plain filter needs no regexp engine
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_startup_imports(script: str = SCRIPT) -> set[str]:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout))


def test_idle_daemon_leaves_lazy_modules_unloaded() -> None:
    loaded = _modules_after_startup_imports()
    assert "pycontainerd.cri.plugin" in loaded  # registered ...
    assert "pycontainerd.diff.walking" in loaded
    assert not [m for m in LAZY if m in loaded]  # ... but not loaded


def test_idle_daemon_leaves_the_filter_language_unloaded() -> None:
    script = SCRIPT.replace("from pycontainerd import filters\n", "").replace('filters.parse_all(["labels.a==b"])', "")
    assert "filters" not in script
    loaded = _modules_after_startup_imports(script)
    assert "pycontainerd.events.exchange" in loaded
    assert "pycontainerd.metadata.containers" in loaded
    assert [m for m in FILTERS if m in loaded] == []


def test_daemon_modules_never_import_grpc() -> None:
    """The daemon serves gRPC with its own server (``pycontainerd.rpc``): grpc's ~13 MiB stay out.
    Every plugin's module, the servicers and the server are imported here as a daemon imports them."""
    script = SCRIPT.replace("print(json.dumps", "from pycontainerd.rpc import server as _s\n"
                            "from pycontainerd.services import common, health\n"
                            "import pycontainerd.cri.wiring, pycontainerd.metrics.grpc, pycontainerd.daemon.ops\n"
                            "print(json.dumps")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout))
    assert "pycontainerd.cri.wiring" in loaded
    assert not [m for m in loaded if m == "grpc" or m.startswith("grpc.")]


def test_lazy_modules_load_on_first_use() -> None:
    from pycontainerd import regexp
    from pycontainerd.diff import compression

    assert regexp.compile("^a+$").search("aaa")
    gz = compression.GzipCompressor()
    data = gz.compress(b"x" * 1000) + gz.flush()
    assert b"".join(compression.decompressor(compression.Compression.GZIP, [data])) == b"x" * 1000


def test_daemon_command_line_fast_path_reads_what_argparse_reads() -> None:
    """``_serve_args`` (no argparse in a serving daemon) gives what ``_parser()`` gives, or
    None so that argparse parses (abbreviations, help, subcommands, option-like values)."""
    from pycontainerd.daemon.__main__ import _parser, _serve_args

    same = [
        [],
        ["--root", "/r", "--state", "/s", "--address", "/a.sock", "--config", "/c.toml", "--log-level", "debug"],
        ["--root=/r", "-a", "x", "-l", "info", "-c", "c", "--root", "/r2"],
        ["--root=", "--state", ""],
        ["--address=a=b"],
    ]
    for argv in same:
        fast = _serve_args(argv)
        assert fast is not None, argv
        assert vars(fast) == vars(_parser().parse_args(argv)), argv
    for argv in (["--roo", "/r"], ["-v"], ["config", "dump"], ["--root"], ["--root", "-x"], ["-c=x"],
                 ["--root=/r", "publish", "--topic", "t"], ["-h"]):
        assert _serve_args(argv) is None, argv
