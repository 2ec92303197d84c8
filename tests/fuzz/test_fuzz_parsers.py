"""Fuzz the parsers that take untrusted text: filters, image references, manifests and indexes,
image configs, config.toml, and the shim's wire frames (our JSON protocol and ttrpc).

Property: each either returns a value or raises the one documented error (InvalidArgument,
ConfigError, ProtocolError) — never another exception, never a hang.
"""

from __future__ import annotations

import json
import struct

import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from pycontainerd import errdefs, filters
from pycontainerd.config import ConfigError, config_from_dict, parse_config
from pycontainerd.images import models, reference
from pycontainerd.shim import protocol
from pycontainerd.ttrpc import protocol as ttrpc_protocol

_filter_alphabet = st.sampled_from(list('abc.=!~/,|"\\`\'()[]{}+*?^$ 0123456789labelsname'))
_filter_text = st.one_of(st.text(_filter_alphabet, max_size=60), st.text(max_size=40))


@given(text=_filter_text)
def test_filter_parse(text: str) -> None:
    try:
        flt = filters.parse(text)
    except errdefs.InvalidArgument:
        return
    adaptor = filters.adaptor_from_mapping({"name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "labels": {"a": "b", "c.d": "e"}})
    flt.match(adaptor)


@given(depth=st.integers(min_value=1, max_value=5000), kind=st.sampled_from(["(", "[", "((a)"]))
def test_filter_regex_nesting(depth: int, kind: str) -> None:
    try:
        flt = filters.parse(f"name~=/{kind * depth}/")
    except errdefs.InvalidArgument:
        return
    flt.match(filters.adaptor_from_mapping({"name": "a"}))


_ref_alphabet = st.sampled_from([*list("abcdefgABC0123456789.-_/:@+"), "sha256:", "docker.io/", "localhost:5000/"])


@given(text=st.one_of(st.lists(_ref_alphabet, max_size=40).map("".join), st.text(max_size=60)))
def test_reference_parse(text: str) -> None:
    for parse in (reference.parse, reference.parse_normalized):
        try:
            parse(text)
        except errdefs.InvalidArgument:
            pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["schemaVersion", "mediaType", "manifests", "layers", "config", "digest", "size",
                         "platform", "architecture", "os", "annotations", "urls", "rootfs", "diff_ids",
                         "history", "variant", "os.features"]) | st.text(max_size=8),
        children, max_size=6),
    max_leaves=30,
)


@given(doc=_json, raw=st.binary(max_size=200), use_raw=st.booleans(),
       media_type=st.sampled_from(["", "application/vnd.oci.image.manifest.v1+json",
                                   "application/vnd.oci.image.index.v1+json",
                                   "application/vnd.docker.distribution.manifest.v2+json", "text/plain"]))
def test_manifest_index_config_parse(doc: object, raw: bytes, use_raw: bool, media_type: str) -> None:
    data = raw if use_raw else json.dumps(doc).encode()
    for parse in (lambda b: models.parse_manifest(b, media_type), lambda b: models.parse_index(b, media_type),
                  models.parse_config, models.detect_media_type):
        try:
            parse(data)
        except errdefs.InvalidArgument:
            pass


_toml_scalar = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                         st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False),
                         st.sampled_from(["10s", "1m", "-1s", "300ms", "x", "io.containerd.runc.v2", "overlayfs"]))
_toml_keys = st.sampled_from(["version", "root", "state", "oom_score", "disabled_plugins", "required_plugins",
                              "grpc", "address", "uid", "gid", "max_recv_message_size", "plugins", "debug", "level",
                              "io.containerd.gc.v1.scheduler", "pause_threshold", "deletion_threshold",
                              "io.containerd.grpc.v1.cri", "cri", "containerd", "snapshotter", "runtimes",
                              "runc", "runtime_type", "options", "SystemdCgroup", "BinaryName", "cni", "bin_dir",
                              "registry", "mirrors", "endpoint", "timeouts", "linux", "shim", "sandbox_image",
                              "io.containerd.snapshotter.v1.overlayfs", "mount_options", "default_runtime",
                              "runtime_engine", "metrics", "cgroup", "stream_processors", "proxy_plugins"])
_toml_doc = st.recursive(
    st.dictionaries(_toml_keys, _toml_scalar | st.lists(st.text(max_size=8), max_size=3), max_size=5),
    lambda children: st.dictionaries(_toml_keys, children | _toml_scalar, max_size=5),
    max_leaves=25,
)


@given(doc=_toml_doc)
def test_config_decoder(doc: dict[str, object]) -> None:
    try:
        config_from_dict(doc, "<fuzz>")
    except ConfigError:
        pass
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        parse_config(text, "<fuzz>")
    except ConfigError:
        pass


@given(text=st.text(max_size=200))
def test_config_text(text: str) -> None:
    try:
        parse_config(text, "<fuzz>")
    except ConfigError:
        pass


@given(chunks=st.lists(st.binary(max_size=64), max_size=10), frames=st.lists(_json, max_size=3))
def test_shim_frames(chunks: list[bytes], frames: list[object]) -> None:
    dec = protocol.Decoder()
    stream = b"".join(protocol.encode({"v": f}) for f in frames) + b"".join(chunks)
    try:
        for i in range(0, len(stream), 7):
            for msg in dec.feed(stream[i : i + 7]):
                assert isinstance(msg, dict)
    except protocol.ProtocolError:
        pass


_ttrpc_frame = st.tuples(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=255),
                         st.integers(min_value=0, max_value=255), st.binary(max_size=300))


@given(frames=st.lists(_ttrpc_frame, max_size=6), noise=st.binary(max_size=64), cut=st.integers(1, 50),
       side=st.sampled_from(["server", "client"]))
def test_ttrpc_frames(frames: list[tuple[int, int, int, bytes]], noise: bytes, cut: int, side: str) -> None:
    """Any byte stream into either side of a ttrpc connection: events or a documented error, never a crash;
    the server answers every request it accepted or refused with a well-formed response."""
    stream = b"".join(struct.pack(">IIBB", len(d), sid, typ, flags) + d for sid, typ, flags, d in frames) + noise
    conn: ttrpc_protocol.ServerConnection | ttrpc_protocol.ClientConnection
    conn = ttrpc_protocol.ServerConnection() if side == "server" else ttrpc_protocol.ClientConnection()
    try:
        for i in range(0, len(stream), cut):
            for ev in conn.receive_data(stream[i : i + cut]):
                if isinstance(conn, ttrpc_protocol.ServerConnection) and isinstance(
                    ev, ttrpc_protocol.RequestReceived | ttrpc_protocol.RequestRefused
                ):
                    status = ev.status if isinstance(ev, ttrpc_protocol.RequestRefused) else ttrpc_protocol.Status()
                    conn.send_response(ev.stream_id, ttrpc_protocol.Response(status=status, payload=b""))
    except (ttrpc_protocol.ProtocolError, errdefs.ContainerdError):
        pass


# --- SPDY/3.1 frames and the remotecommand messages (streaming/) --------------------------

_spdy_frame = st.one_of(
    st.binary(max_size=64),
    st.tuples(
        st.sampled_from([1, 2, 3, 4, 6, 7, 8, 9, 10]), st.integers(0, 255), st.binary(max_size=48)
    ).map(lambda t: struct.pack(">IB", 0x80030000 | t[0], t[1]) + len(t[2]).to_bytes(3, "big") + t[2]),
    st.tuples(st.integers(0, 9), st.integers(0, 255), st.binary(max_size=48)).map(
        lambda t: struct.pack(">IB", t[0], t[1]) + len(t[2]).to_bytes(3, "big") + t[2]
    ),
)


@given(chunks=st.lists(_spdy_frame, max_size=8), client=st.booleans())
def test_spdy_receive(chunks: list[bytes], client: bool) -> None:
    from pycontainerd.streaming import spdy

    conn = spdy.SpdyConnection(client=client, max_control_frame=4096, max_header_bytes=4096)
    # a valid opening so that later frames meet a live stream and a started zlib stream
    peer = spdy.SpdyConnection(client=not client)
    peer.open_stream({"streamtype": "data"})
    try:
        conn.receive_data(peer.data_to_send())
        for chunk in chunks:
            conn.receive_data(chunk)
    except spdy.ProtocolError:
        pass


@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_remotecommand_messages(data: bytes | str) -> None:
    from pycontainerd.streaming import remotecommand as rc

    raw = data.encode() if isinstance(data, str) else data
    for fn in (rc.parse_status, rc.parse_resize, rc.decode_port_prefix, rc.ResizeDecoder(limit=64).feed):
        try:
            fn(raw)
        except errdefs.InvalidArgument:
            pass
    try:
        rc.decode_channel_frame(data)
    except errdefs.InvalidArgument:
        pass
