"""The methods of each service the daemon serves (name, kind), written out so that the server's
method table is built without importing a generated module or the protobuf runtime (W6, idle
PSS): ``common.add_servicer`` gives them to ``rpc.Server.add_service_table``, and the service's
descriptor is imported at the first call needing its protobuf classes.

Written from the .proto files' ``service`` blocks; ``tests/unit/test_service_tables.py`` checks
that each entry equals what the generated descriptor says (and the server refuses to serve a
service whose descriptor disagrees), so after ``make proto`` changes a service, update it here.
"""

from __future__ import annotations

from ..rpc.methods import BIDI_STREAM as BS
from ..rpc.methods import SERVER_STREAM as SS
from ..rpc.methods import UNARY as U

SERVICES: dict[str, tuple[tuple[str, str], ...]] = {
    "containerd.services.containers.v1.Containers": (
        ("Get", U), ("List", U), ("ListStream", SS), ("Create", U), ("Update", U), ("Delete", U),
    ),
    "containerd.services.content.v1.Content": (
        ("Info", U), ("Update", U), ("List", SS), ("Delete", U), ("Read", SS), ("Status", U),
        ("ListStatuses", U), ("Write", BS), ("Abort", U),
    ),
    "containerd.services.diff.v1.Diff": (
        ("Apply", U), ("Diff", U),
    ),
    "containerd.services.events.v1.Events": (
        ("Publish", U), ("Forward", U), ("Subscribe", SS),
    ),
    "containerd.services.images.v1.Images": (
        ("Get", U), ("List", U), ("Create", U), ("Update", U), ("Delete", U),
    ),
    "containerd.services.introspection.v1.Introspection": (
        ("Plugins", U), ("Server", U), ("PluginInfo", U),
    ),
    "containerd.services.leases.v1.Leases": (
        ("Create", U), ("Delete", U), ("List", U), ("AddResource", U), ("DeleteResource", U),
        ("ListResources", U),
    ),
    "containerd.services.namespaces.v1.Namespaces": (
        ("Get", U), ("List", U), ("Create", U), ("Update", U), ("Delete", U),
    ),
    "containerd.services.snapshots.v1.Snapshots": (
        ("Prepare", U), ("View", U), ("Mounts", U), ("Commit", U), ("Remove", U), ("Stat", U),
        ("Update", U), ("List", SS), ("Usage", U), ("Cleanup", U),
    ),
    "containerd.services.tasks.v1.Tasks": (
        ("Create", U), ("Start", U), ("Delete", U), ("DeleteProcess", U), ("Get", U), ("List", U),
        ("Kill", U), ("Exec", U), ("ResizePty", U), ("CloseIO", U), ("Pause", U), ("Resume", U),
        ("ListPids", U), ("Checkpoint", U), ("Update", U), ("Metrics", U), ("Wait", U),
    ),
    "containerd.services.version.v1.Version": (
        ("Version", U),
    ),
    "grpc.health.v1.Health": (  # grpcio-health-checking's health.proto (List: grpc >= 1.70)
        ("Check", U), ("List", U), ("Watch", SS),
    ),
}
