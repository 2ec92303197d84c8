"""Pin the wire-level facts of our Kubernetes CRI proto (runtime.v1).

proto/pycontainerd/api/cri/runtime/v1/api.proto must stay wire-compatible with
k8s.io/cri-api runtime.v1 as of Kubernetes v1.36 (kubernetes/kubernetes 0268656a),
so that kubelet and crictl can talk to our CRI plugin. The values below are the
upstream ones; a failure here means an edit changed something a real CRI client
depends on (package, service/method name or types, field number/type/label,
enum value).
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from pycontainerd.api.cri.runtime.v1 import api_pb2, api_pb2_grpc

D = api_pb2.DESCRIPTOR
PKG = "runtime.v1"


def test_file_and_package() -> None:
    assert D.package == PKG
    assert D.name == "pycontainerd/api/cri/runtime/v1/api.proto"
    assert sorted(D.services_by_name) == ["ImageService", "RuntimeService"]
    assert D.services_by_name["RuntimeService"].full_name == "runtime.v1.RuntimeService"
    assert D.services_by_name["ImageService"].full_name == "runtime.v1.ImageService"


# method name -> (request, response); "*" prefix = server streaming. Order is upstream's.
RUNTIME_METHODS: list[tuple[str, str, str]] = [
    ("Version", "VersionRequest", "VersionResponse"),
    ("RunPodSandbox", "RunPodSandboxRequest", "RunPodSandboxResponse"),
    ("StopPodSandbox", "StopPodSandboxRequest", "StopPodSandboxResponse"),
    ("RemovePodSandbox", "RemovePodSandboxRequest", "RemovePodSandboxResponse"),
    ("PodSandboxStatus", "PodSandboxStatusRequest", "PodSandboxStatusResponse"),
    ("ListPodSandbox", "ListPodSandboxRequest", "ListPodSandboxResponse"),
    ("*StreamPodSandboxes", "StreamPodSandboxesRequest", "StreamPodSandboxesResponse"),
    ("CreateContainer", "CreateContainerRequest", "CreateContainerResponse"),
    ("StartContainer", "StartContainerRequest", "StartContainerResponse"),
    ("StopContainer", "StopContainerRequest", "StopContainerResponse"),
    ("RemoveContainer", "RemoveContainerRequest", "RemoveContainerResponse"),
    ("ListContainers", "ListContainersRequest", "ListContainersResponse"),
    ("*StreamContainers", "StreamContainersRequest", "StreamContainersResponse"),
    ("ContainerStatus", "ContainerStatusRequest", "ContainerStatusResponse"),
    ("UpdateContainerResources", "UpdateContainerResourcesRequest", "UpdateContainerResourcesResponse"),
    ("ReopenContainerLog", "ReopenContainerLogRequest", "ReopenContainerLogResponse"),
    ("ExecSync", "ExecSyncRequest", "ExecSyncResponse"),
    ("Exec", "ExecRequest", "ExecResponse"),
    ("Attach", "AttachRequest", "AttachResponse"),
    ("PortForward", "PortForwardRequest", "PortForwardResponse"),
    ("ContainerStats", "ContainerStatsRequest", "ContainerStatsResponse"),
    ("ListContainerStats", "ListContainerStatsRequest", "ListContainerStatsResponse"),
    ("*StreamContainerStats", "StreamContainerStatsRequest", "StreamContainerStatsResponse"),
    ("PodSandboxStats", "PodSandboxStatsRequest", "PodSandboxStatsResponse"),
    ("ListPodSandboxStats", "ListPodSandboxStatsRequest", "ListPodSandboxStatsResponse"),
    ("*StreamPodSandboxStats", "StreamPodSandboxStatsRequest", "StreamPodSandboxStatsResponse"),
    ("UpdateRuntimeConfig", "UpdateRuntimeConfigRequest", "UpdateRuntimeConfigResponse"),
    ("Status", "StatusRequest", "StatusResponse"),
    ("CheckpointContainer", "CheckpointContainerRequest", "CheckpointContainerResponse"),
    ("*GetContainerEvents", "GetEventsRequest", "ContainerEventResponse"),
    ("ListMetricDescriptors", "ListMetricDescriptorsRequest", "ListMetricDescriptorsResponse"),
    ("ListPodSandboxMetrics", "ListPodSandboxMetricsRequest", "ListPodSandboxMetricsResponse"),
    ("*StreamPodSandboxMetrics", "StreamPodSandboxMetricsRequest", "StreamPodSandboxMetricsResponse"),
    ("RuntimeConfig", "RuntimeConfigRequest", "RuntimeConfigResponse"),
    ("UpdatePodSandboxResources", "UpdatePodSandboxResourcesRequest", "UpdatePodSandboxResourcesResponse"),
]

IMAGE_METHODS: list[tuple[str, str, str]] = [
    ("ListImages", "ListImagesRequest", "ListImagesResponse"),
    ("*StreamImages", "StreamImagesRequest", "StreamImagesResponse"),
    ("ImageStatus", "ImageStatusRequest", "ImageStatusResponse"),
    ("PullImage", "PullImageRequest", "PullImageResponse"),
    ("RemoveImage", "RemoveImageRequest", "RemoveImageResponse"),
    ("ImageFsInfo", "ImageFsInfoRequest", "ImageFsInfoResponse"),
]


@pytest.mark.parametrize(
    ("service", "methods"),
    [("RuntimeService", RUNTIME_METHODS), ("ImageService", IMAGE_METHODS)],
)
def test_service_methods(service: str, methods: list[tuple[str, str, str]]) -> None:
    svc = D.services_by_name[service]
    got = []
    for m in svc.methods:
        assert not m.client_streaming, m.name
        got.append(
            (
                ("*" if m.server_streaming else "") + m.name,
                m.input_type.full_name,
                m.output_type.full_name,
            )
        )
    assert got == [(name, f"{PKG}.{req}", f"{PKG}.{resp}") for name, req, resp in methods]


def test_grpc_method_paths() -> None:
    """The generated stubs use the upstream HTTP/2 paths (/runtime.v1.<Service>/<Method>)."""

    class _Chan:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def _record(self, path: str, *args: object, **kwargs: object) -> object:
            self.paths.append(path)
            return None

        unary_unary = unary_stream = stream_unary = stream_stream = _record

    rt, img = _Chan(), _Chan()
    api_pb2_grpc.RuntimeServiceStub(rt)  # type: ignore[call-overload]  # a recorder, not a grpc.Channel
    api_pb2_grpc.ImageServiceStub(img)  # type: ignore[call-overload]
    assert rt.paths == [f"/runtime.v1.RuntimeService/{m[0].lstrip('*')}" for m in RUNTIME_METHODS]
    assert img.paths == [f"/runtime.v1.ImageService/{m[0].lstrip('*')}" for m in IMAGE_METHODS]
    assert hasattr(api_pb2_grpc, "add_RuntimeServiceServicer_to_server")
    assert hasattr(api_pb2_grpc, "add_ImageServiceServicer_to_server")


T = FieldDescriptor
STR, BOOL, I32, U32, U64, I64, BYTES = (
    T.TYPE_STRING,
    T.TYPE_BOOL,
    T.TYPE_INT32,
    T.TYPE_UINT32,
    T.TYPE_UINT64,
    T.TYPE_INT64,
    T.TYPE_BYTES,
)
MAP = "map"  # map<string, string>
REP = "rep"  # marker: repeated


def msg(name: str) -> tuple[object, ...]:
    return (T.TYPE_MESSAGE, f"{PKG}.{name}")


def enum(name: str) -> tuple[object, ...]:
    return (T.TYPE_ENUM, f"{PKG}.{name}")


def _shape(f: FieldDescriptor) -> tuple[object, ...]:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        kv = f.message_type.fields_by_name
        assert (kv["key"].type, kv["value"].type) == (STR, STR), f.full_name
        return (MAP,)
    ty: tuple[object, ...] = (f.type,)
    if f.message_type is not None:
        ty += (f.message_type.full_name,)
    elif f.enum_type is not None:
        ty += (f.enum_type.full_name,)
    if f.is_repeated:
        ty = (REP, *ty)
    return ty


# message -> {field name: (number, *shape)}; the field set must match exactly.
FIELDS: dict[str, dict[str, tuple[object, ...]]] = {
    "PodSandboxConfig": {
        "metadata": (1, *msg("PodSandboxMetadata")),
        "hostname": (2, STR),
        "log_directory": (3, STR),
        "dns_config": (4, *msg("DNSConfig")),
        "port_mappings": (5, REP, *msg("PortMapping")),
        "labels": (6, MAP),
        "annotations": (7, MAP),
        "linux": (8, *msg("LinuxPodSandboxConfig")),
        "windows": (9, *msg("WindowsPodSandboxConfig")),
    },
    "PodSandboxMetadata": {
        "name": (1, STR),
        "uid": (2, STR),
        "namespace": (3, STR),
        "attempt": (4, U32),
    },
    "LinuxPodSandboxConfig": {
        "cgroup_parent": (1, STR),
        "security_context": (2, *msg("LinuxSandboxSecurityContext")),
        "sysctls": (3, MAP),
        "overhead": (4, *msg("LinuxContainerResources")),
        "resources": (5, *msg("LinuxContainerResources")),
    },
    "RunPodSandboxRequest": {
        "config": (1, *msg("PodSandboxConfig")),
        "runtime_handler": (2, STR),
    },
    "ContainerConfig": {
        "metadata": (1, *msg("ContainerMetadata")),
        "image": (2, *msg("ImageSpec")),
        "command": (3, REP, STR),
        "args": (4, REP, STR),
        "working_dir": (5, STR),
        "envs": (6, REP, *msg("KeyValue")),
        "mounts": (7, REP, *msg("Mount")),
        "devices": (8, REP, *msg("Device")),
        "labels": (9, MAP),
        "annotations": (10, MAP),
        "log_path": (11, STR),
        "stdin": (12, BOOL),
        "stdin_once": (13, BOOL),
        "tty": (14, BOOL),
        "linux": (15, *msg("LinuxContainerConfig")),
        "windows": (16, *msg("WindowsContainerConfig")),
        "CDI_devices": (17, REP, *msg("CDIDevice")),
        "stop_signal": (18, *enum("Signal")),
    },
    "Mount": {
        "container_path": (1, STR),
        "host_path": (2, STR),
        "readonly": (3, BOOL),
        "selinux_relabel": (4, BOOL),
        "propagation": (5, *enum("MountPropagation")),
        "uidMappings": (6, REP, *msg("IDMapping")),
        "gidMappings": (7, REP, *msg("IDMapping")),
        "recursive_read_only": (8, BOOL),
        "image": (9, *msg("ImageSpec")),
        "image_sub_path": (10, STR),
    },
    "LinuxContainerResources": {
        "cpu_period": (1, I64),
        "cpu_quota": (2, I64),
        "cpu_shares": (3, I64),
        "memory_limit_in_bytes": (4, I64),
        "oom_score_adj": (5, I64),
        "cpuset_cpus": (6, STR),
        "cpuset_mems": (7, STR),
        "hugepage_limits": (8, REP, *msg("HugepageLimit")),
        "unified": (9, MAP),
        "memory_swap_limit_in_bytes": (10, I64),
    },
    "LinuxContainerSecurityContext": {
        "capabilities": (1, *msg("Capability")),
        "privileged": (2, BOOL),
        "namespace_options": (3, *msg("NamespaceOption")),
        "selinux_options": (4, *msg("SELinuxOption")),
        "run_as_user": (5, *msg("Int64Value")),
        "run_as_username": (6, STR),
        "readonly_rootfs": (7, BOOL),
        "supplemental_groups": (8, REP, I64),
        "supplemental_groups_policy": (17, *enum("SupplementalGroupsPolicy")),
        "apparmor_profile": (9, STR),
        "seccomp_profile_path": (10, STR),
        "no_new_privs": (11, BOOL),
        "run_as_group": (12, *msg("Int64Value")),
        "masked_paths": (13, REP, STR),
        "readonly_paths": (14, REP, STR),
        "seccomp": (15, *msg("SecurityProfile")),
        "apparmor": (16, *msg("SecurityProfile")),
    },
    "LinuxSandboxSecurityContext": {
        "namespace_options": (1, *msg("NamespaceOption")),
        "selinux_options": (2, *msg("SELinuxOption")),
        "run_as_user": (3, *msg("Int64Value")),
        "readonly_rootfs": (4, BOOL),
        "supplemental_groups": (5, REP, I64),
        "supplemental_groups_policy": (11, *enum("SupplementalGroupsPolicy")),
        "privileged": (6, BOOL),
        "seccomp_profile_path": (7, STR),
        "run_as_group": (8, *msg("Int64Value")),
        "seccomp": (9, *msg("SecurityProfile")),
        "apparmor": (10, *msg("SecurityProfile")),
    },
    "NamespaceOption": {
        "network": (1, *enum("NamespaceMode")),
        "pid": (2, *enum("NamespaceMode")),
        "ipc": (3, *enum("NamespaceMode")),
        "target_id": (4, STR),
        "userns_options": (5, *msg("UserNamespace")),
    },
    "SecurityProfile": {
        "profile_type": (1, T.TYPE_ENUM, f"{PKG}.SecurityProfile.ProfileType"),
        "localhost_ref": (2, STR),
    },
    "CreateContainerRequest": {
        "pod_sandbox_id": (1, STR),
        "config": (2, *msg("ContainerConfig")),
        "sandbox_config": (3, *msg("PodSandboxConfig")),
    },
    "ExecRequest": {
        "container_id": (1, STR),
        "cmd": (2, REP, STR),
        "tty": (3, BOOL),
        "stdin": (4, BOOL),
        "stdout": (5, BOOL),
        "stderr": (6, BOOL),
        "audit_request_id": (7, STR),
    },
    # same fields as ExecRequest minus cmd, but numbered differently
    "AttachRequest": {
        "container_id": (1, STR),
        "stdin": (2, BOOL),
        "tty": (3, BOOL),
        "stdout": (4, BOOL),
        "stderr": (5, BOOL),
        "audit_request_id": (6, STR),
    },
    "ExecSyncRequest": {
        "container_id": (1, STR),
        "cmd": (2, REP, STR),
        "timeout": (3, I64),
    },
    "ExecSyncResponse": {
        "stdout": (1, BYTES),
        "stderr": (2, BYTES),
        "exit_code": (3, I32),
    },
    "ImageSpec": {
        "image": (1, STR),
        "annotations": (2, MAP),
        "user_specified_image": (18, STR),
        "runtime_handler": (19, STR),
        "image_ref": (20, STR),
    },
    "Image": {
        "id": (1, STR),
        "repo_tags": (2, REP, STR),
        "repo_digests": (3, REP, STR),
        "size": (4, U64),
        "uid": (5, *msg("Int64Value")),
        "username": (6, STR),
        "spec": (7, *msg("ImageSpec")),
        "pinned": (8, BOOL),
    },
    "PullImageRequest": {
        "image": (1, *msg("ImageSpec")),
        "auth": (2, *msg("AuthConfig")),
        "sandbox_config": (3, *msg("PodSandboxConfig")),
    },
    "ContainerStatus": {
        "id": (1, STR),
        "metadata": (2, *msg("ContainerMetadata")),
        "state": (3, *enum("ContainerState")),
        "created_at": (4, I64),
        "started_at": (5, I64),
        "finished_at": (6, I64),
        "exit_code": (7, I32),
        "image": (8, *msg("ImageSpec")),
        "image_ref": (9, STR),
        "reason": (10, STR),
        "message": (11, STR),
        "labels": (12, MAP),
        "annotations": (13, MAP),
        "mounts": (14, REP, *msg("Mount")),
        "log_path": (15, STR),
        "resources": (16, *msg("ContainerResources")),
        "image_id": (17, STR),
        "user": (18, *msg("ContainerUser")),
        "stop_signal": (19, *enum("Signal")),
    },
    "Container": {
        "id": (1, STR),
        "pod_sandbox_id": (2, STR),
        "metadata": (3, *msg("ContainerMetadata")),
        "image": (4, *msg("ImageSpec")),
        "image_ref": (5, STR),
        "state": (6, *enum("ContainerState")),
        "created_at": (7, I64),
        "labels": (8, MAP),
        "annotations": (9, MAP),
        "image_id": (10, STR),
    },
    "PodSandboxStatus": {
        "id": (1, STR),
        "metadata": (2, *msg("PodSandboxMetadata")),
        "state": (3, *enum("PodSandboxState")),
        "created_at": (4, I64),
        "network": (5, *msg("PodSandboxNetworkStatus")),
        "linux": (6, *msg("LinuxPodSandboxStatus")),
        "labels": (7, MAP),
        "annotations": (8, MAP),
        "runtime_handler": (9, STR),
    },
    "PodSandboxStatusResponse": {
        "status": (1, *msg("PodSandboxStatus")),
        "info": (2, MAP),
        "containers_statuses": (3, REP, *msg("ContainerStatus")),
        "timestamp": (4, I64),
    },
    "Namespace": {"options": (2, *msg("NamespaceOption"))},
    "PortMapping": {
        "protocol": (1, *enum("Protocol")),
        "container_port": (2, I32),
        "host_port": (3, I32),
        "host_ip": (4, STR),
    },
    "ContainerStats": {
        "attributes": (1, *msg("ContainerAttributes")),
        "cpu": (2, *msg("CpuUsage")),
        "memory": (3, *msg("MemoryUsage")),
        "writable_layer": (4, *msg("FilesystemUsage")),
        "swap": (5, *msg("SwapUsage")),
        "io": (6, *msg("IoUsage")),
    },
    "ImageFsInfoResponse": {
        "image_filesystems": (1, REP, *msg("FilesystemUsage")),
        "container_filesystems": (2, REP, *msg("FilesystemUsage")),
    },
    "StatusResponse": {
        "status": (1, *msg("RuntimeStatus")),
        "info": (2, MAP),
        "runtime_handlers": (3, REP, *msg("RuntimeHandler")),
        "features": (4, *msg("RuntimeFeatures")),
    },
    "RuntimeHandler": {"name": (1, STR), "features": (2, *msg("RuntimeHandlerFeatures"))},
    "RuntimeHandlerFeatures": {"recursive_read_only_mounts": (1, BOOL), "user_namespaces": (2, BOOL)},
    "RuntimeFeatures": {"supplemental_groups_policy": (1, BOOL), "user_namespaces_host_network": (2, BOOL)},
    "ContainerUser": {"linux": (1, *msg("LinuxContainerUser"))},
    "LinuxContainerUser": {"uid": (1, I64), "gid": (2, I64), "supplemental_groups": (3, REP, I64)},
    "LinuxPodSandboxStats": {
        "cpu": (1, *msg("CpuUsage")),
        "memory": (2, *msg("MemoryUsage")),
        "network": (3, *msg("NetworkUsage")),
        "process": (4, *msg("ProcessUsage")),
        "containers": (5, REP, *msg("ContainerStats")),
        "io": (6, *msg("IoUsage")),
    },
    "CpuUsage": {
        "timestamp": (1, I64),
        "usage_core_nano_seconds": (2, *msg("UInt64Value")),
        "usage_nano_cores": (3, *msg("UInt64Value")),
        "psi": (4, *msg("PsiStats")),
    },
    "MemoryUsage": {
        "timestamp": (1, I64),
        "working_set_bytes": (2, *msg("UInt64Value")),
        "available_bytes": (3, *msg("UInt64Value")),
        "usage_bytes": (4, *msg("UInt64Value")),
        "rss_bytes": (5, *msg("UInt64Value")),
        "page_faults": (6, *msg("UInt64Value")),
        "major_page_faults": (7, *msg("UInt64Value")),
        "psi": (8, *msg("PsiStats")),
    },
    "IoUsage": {"timestamp": (1, I64), "psi": (2, *msg("PsiStats"))},
    "PsiStats": {"Full": (1, *msg("PsiData")), "Some": (2, *msg("PsiData"))},
    "PsiData": {"Total": (1, U64), "Avg10": (2, T.TYPE_DOUBLE), "Avg60": (3, T.TYPE_DOUBLE),
                "Avg300": (4, T.TYPE_DOUBLE)},
    "WindowsContainerResources": {
        "cpu_shares": (1, I64),
        "cpu_count": (2, I64),
        "cpu_maximum": (3, I64),
        "memory_limit_in_bytes": (4, I64),
        "rootfs_size_in_bytes": (5, I64),
        "affinity_cpus": (6, REP, *msg("WindowsCpuGroupAffinity")),
    },
    "WindowsCpuGroupAffinity": {"cpu_mask": (1, U64), "cpu_group": (2, U32)},
    "StreamPodSandboxesRequest": {"filter": (1, *msg("PodSandboxFilter"))},
    "StreamPodSandboxesResponse": {"pod_sandboxes": (1, REP, *msg("PodSandbox"))},
    "StreamContainersRequest": {"filter": (1, *msg("ContainerFilter"))},
    "StreamContainersResponse": {"containers": (1, REP, *msg("Container"))},
    "StreamContainerStatsRequest": {"filter": (1, *msg("ContainerStatsFilter"))},
    "StreamContainerStatsResponse": {"container_stats": (1, REP, *msg("ContainerStats"))},
    "StreamPodSandboxStatsRequest": {"filter": (1, *msg("PodSandboxStatsFilter"))},
    "StreamPodSandboxStatsResponse": {"pod_sandbox_stats": (1, REP, *msg("PodSandboxStats"))},
    "StreamPodSandboxMetricsRequest": {},
    "StreamPodSandboxMetricsResponse": {"pod_sandbox_metrics": (1, REP, *msg("PodSandboxMetrics"))},
    "StreamImagesRequest": {"filter": (1, *msg("ImageFilter"))},
    "StreamImagesResponse": {"images": (1, REP, *msg("Image"))},
    "UpdatePodSandboxResourcesRequest": {
        "pod_sandbox_id": (1, STR),
        "overhead": (2, *msg("LinuxContainerResources")),
        "resources": (3, *msg("LinuxContainerResources")),
    },
    "UpdatePodSandboxResourcesResponse": {},
    "ContainerEventResponse": {
        "container_id": (1, STR),
        "container_event_type": (2, *enum("ContainerEventType")),
        "created_at": (3, I64),
        "pod_sandbox_status": (4, *msg("PodSandboxStatus")),
        "containers_statuses": (5, REP, *msg("ContainerStatus")),
    },
    "RuntimeConfigResponse": {"linux": (1, *msg("LinuxRuntimeConfiguration"))},
    "LinuxRuntimeConfiguration": {"cgroup_driver": (1, *enum("CgroupDriver"))},
    "VersionResponse": {
        "version": (1, STR),
        "runtime_name": (2, STR),
        "runtime_version": (3, STR),
        "runtime_api_version": (4, STR),
    },
}


@pytest.mark.parametrize(("name", "fields"), list(FIELDS.items()), ids=list(FIELDS))
def test_message_fields(name: str, fields: dict[str, tuple[object, ...]]) -> None:
    m = D.message_types_by_name[name]
    assert m.full_name == f"{PKG}.{name}"
    got = {f.name: (f.number, *_shape(f)) for f in m.fields}
    assert got == fields
    assert not m.oneofs


def test_deprecated_fields_keep_their_numbers() -> None:
    lcsc = D.message_types_by_name["LinuxContainerSecurityContext"].fields_by_name
    lssc = D.message_types_by_name["LinuxSandboxSecurityContext"].fields_by_name
    for f in (lcsc["apparmor_profile"], lcsc["seccomp_profile_path"], lssc["seccomp_profile_path"]):
        assert f.GetOptions().deprecated, f.full_name


ENUMS: dict[str, list[tuple[str, int]]] = {
    "PodSandboxState": [("SANDBOX_READY", 0), ("SANDBOX_NOTREADY", 1)],
    "ContainerState": [
        ("CONTAINER_CREATED", 0),
        ("CONTAINER_RUNNING", 1),
        ("CONTAINER_EXITED", 2),
        ("CONTAINER_UNKNOWN", 3),
    ],
    "Protocol": [("TCP", 0), ("UDP", 1), ("SCTP", 2)],
    "NamespaceMode": [("POD", 0), ("CONTAINER", 1), ("NODE", 2), ("TARGET", 3)],
    "MountPropagation": [
        ("PROPAGATION_PRIVATE", 0),
        ("PROPAGATION_HOST_TO_CONTAINER", 1),
        ("PROPAGATION_BIDIRECTIONAL", 2),
    ],
    "ContainerEventType": [
        ("CONTAINER_CREATED_EVENT", 0),
        ("CONTAINER_STARTED_EVENT", 1),
        ("CONTAINER_STOPPED_EVENT", 2),
        ("CONTAINER_DELETED_EVENT", 3),
    ],
    "MetricType": [("COUNTER", 0), ("GAUGE", 1)],
    "CgroupDriver": [("SYSTEMD", 0), ("CGROUPFS", 1)],
    "SupplementalGroupsPolicy": [("Merge", 0), ("Strict", 1)],
    # CRI's own numbering: RUNTIME_DEFAULT, then the classic signals alphabetically, then the RT range
    "Signal": list(zip(
        ["RUNTIME_DEFAULT", "SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCLD", "SIGCONT", "SIGFPE", "SIGHUP",
         "SIGILL", "SIGINT", "SIGIO", "SIGIOT", "SIGKILL", "SIGPIPE", "SIGPOLL", "SIGPROF", "SIGPWR", "SIGQUIT",
         "SIGSEGV", "SIGSTKFLT", "SIGSTOP", "SIGSYS", "SIGTERM", "SIGTRAP", "SIGTSTP", "SIGTTIN", "SIGTTOU",
         "SIGURG", "SIGUSR1", "SIGUSR2", "SIGVTALRM", "SIGWINCH", "SIGXCPU", "SIGXFSZ", "SIGRTMIN",
         *(f"SIGRTMINPLUS{i}" for i in range(1, 16)), *(f"SIGRTMAXMINUS{i}" for i in range(14, 0, -1)),
         "SIGRTMAX"], range(66), strict=True)),
}


@pytest.mark.parametrize(("name", "values"), list(ENUMS.items()), ids=list(ENUMS))
def test_enums(name: str, values: list[tuple[str, int]]) -> None:
    e = D.enum_types_by_name[name]
    assert e.full_name == f"{PKG}.{name}"
    assert [(v.name, v.number) for v in e.values] == values


def test_top_level_enum_set() -> None:
    assert sorted(D.enum_types_by_name) == sorted(ENUMS)


def test_security_profile_type_enum() -> None:
    e = D.message_types_by_name["SecurityProfile"].enum_types_by_name["ProfileType"]
    assert [(v.name, v.number) for v in e.values] == [
        ("RuntimeDefault", 0),
        ("Unconfined", 1),
        ("Localhost", 2),
    ]


def test_encoding_is_upstream_bytes() -> None:
    """Hand-encoded bytes (tag = number << 3 | wire type) decode as upstream would send them."""
    req = api_pb2.RunPodSandboxRequest(
        config=api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name="p", uid="u", namespace="n", attempt=1),
        ),
        runtime_handler="runc",
    )
    meta = b"\x0a\x01p" + b"\x12\x01u" + b"\x1a\x01n" + b"\x20\x01"
    config = b"\x0a" + bytes([len(meta)]) + meta
    expected = b"\x0a" + bytes([len(config)]) + config + b"\x12\x04runc"
    assert req.SerializeToString(deterministic=True) == expected

    # ImageSpec.user_specified_image is field 18 -> two-byte tag 0x92 0x01
    spec = api_pb2.ImageSpec(image="sha256:x", user_specified_image="busybox")
    assert spec.SerializeToString() == b"\x0a\x08sha256:x" + b"\x92\x01\x07busybox"

    # ContainerState enum on the wire: ContainerStatus.state (3) = CONTAINER_EXITED (2)
    st = api_pb2.ContainerStatus.FromString(b"\x18\x02\x38\x89\x01")
    assert st.state == api_pb2.CONTAINER_EXITED
    assert st.exit_code == 137


def test_auth_secrets_are_redacted_in_debug_output() -> None:
    fields = D.message_types_by_name["AuthConfig"].fields_by_name
    assert [n for n in ("username", "password", "auth", "server_address", "identity_token", "registry_token")
            if fields[n].GetOptions().debug_redact] == ["password", "auth", "identity_token", "registry_token"]
