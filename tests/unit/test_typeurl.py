"""pycontainerd.typeurl: the one Any decoder behind the Events service and the client."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pycontainerd import typeurl
from pycontainerd.api.events import container_pb2, task_pb2
from pycontainerd.client import services as client_services
from pycontainerd.services import events as events_service


def _pack(msg: Message, prefix: str = "") -> any_pb2.Any:
    return any_pb2.Any(type_url=prefix + msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def test_message_name() -> None:
    assert typeurl.message_name("containerd.events.TaskExit") == "containerd.events.TaskExit"
    assert typeurl.message_name("types.containerd.io/containerd.events.TaskExit") == "containerd.events.TaskExit"
    assert typeurl.message_name("a/b/c.D") == "c.D"


def test_known_type_gives_proto_field_names() -> None:
    msg = task_pb2.TaskExit(container_id="c1", id="e1", pid=42, exit_status=3)
    for prefix in ("", "types.containerd.io/"):
        got = typeurl.to_dict(_pack(msg, prefix))
        assert got == {"container_id": "c1", "id": "e1", "pid": 42, "exit_status": 3}


def test_unknown_type_is_none() -> None:
    assert typeurl.to_dict(any_pb2.Any(type_url="example.com/no.such.Message", value=b"\x08\x01")) is None


def test_callers_keep_their_unknown_type_policy() -> None:
    unknown = any_pb2.Any(type_url="example.com/no.such.Message", value=b"")
    # the daemon filters on fields: nothing to match
    assert events_service.decode_any(unknown) == {}
    # the client prints the event: say what it was
    assert client_services.decode_any(unknown) == {"@type": "example.com/no.such.Message"}


def test_known_empty_message_is_empty_on_both_sides() -> None:
    # a known type with no field set is {} on both sides, not the client's unknown-type marker
    empty = _pack(container_pb2.ContainerDelete())
    assert typeurl.to_dict(empty) == {}
    assert events_service.decode_any(empty) == {}
    assert client_services.decode_any(empty) == {}


def test_both_sides_decode_alike() -> None:
    packed = _pack(container_pb2.ContainerCreate(id="c1", image="docker.io/library/busybox:latest"))
    want = {"id": "c1", "image": "docker.io/library/busybox:latest"}
    assert events_service.decode_any(packed) == want
    assert client_services.decode_any(packed) == want
