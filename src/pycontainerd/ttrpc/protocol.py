"""The ttrpc wire protocol without any I/O: frames, requests, responses, stream ids.

ttrpc (github.com/containerd/ttrpc, protocol 1.0: unary calls) is what containerd and its
shims speak over unix sockets.  Each message is a frame::

    length   uint32 big-endian   bytes of data (at most 4 MiB)
    stream   uint32 big-endian   odd, increasing, chosen by the client
    type     uint8               1 request, 2 response, 3 data (streaming; not supported here)
    flags    uint8
    data     protobuf ttrpc.Request / ttrpc.Response

A unary call is one request frame from the client and one response frame on the same stream
from the server; responses may arrive in any order.  The response carries a google.rpc.Status
whose code is a gRPC code, mapped here to and from the ``errdefs`` kinds.

The two state machines turn bytes into events and calls into bytes; the asyncio adapters in
``aio`` move the bytes.  Nothing here blocks, sleeps or touches a socket.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2

from pycontainerd import errdefs
from pycontainerd.api.ttrpc import request_pb2

HEADER_LENGTH = 10
MAX_MESSAGE_LENGTH = 4 << 20
MAX_STREAM_ID = (1 << 32) - 1
_HEADER = struct.Struct(">IIBB")


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2


class ProtocolError(Exception):
    """The peer broke the framing; the connection cannot be used any more."""


# --- frames -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame longer than the limit: its data was skipped, only the header is known."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_frame(stream_id: int, type_: int, data: bytes, flags: int = 0, *, limit: int = MAX_MESSAGE_LENGTH) -> bytes:
    if len(data) > limit:
        raise errdefs.ResourceExhausted(f"ttrpc message of {len(data)} bytes exceeds the maximum of {limit}")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise errdefs.InvalidArgument(f"ttrpc stream id {stream_id} out of range")
    return _HEADER.pack(len(data), stream_id, type_, flags) + data


class FrameDecoder:
    """Reassemble frames from arbitrary chunks of a byte stream."""

    def __init__(self, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversized frame still to throw away

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        self._buf += data
        out: list[Frame | OversizedFrame] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if len(self._buf) < HEADER_LENGTH:
                return out
            length, stream_id, type_, flags = _HEADER.unpack_from(self._buf)
            if length > self.limit:
                del self._buf[:HEADER_LENGTH]
                self._skip = length
                out.append(OversizedFrame(stream_id, type_, flags, length))
                continue
            end = HEADER_LENGTH + length
            if len(self._buf) < end:
                return out
            out.append(Frame(stream_id, type_, flags, bytes(self._buf[HEADER_LENGTH:end])))
            del self._buf[:end]

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame (a partial frame at EOF)."""
        return len(self._buf) + self._skip


# --- status <-> errdefs -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """A call's outcome: a gRPC code (0 = OK) and a message."""

    code: int = 0  # google.rpc.Code OK
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def code_name(self) -> str:
        try:
            return code_pb2.Code.Name(self.code)  # type: ignore[no-any-return]
        except ValueError:
            return "UNKNOWN"

    def to_error(self) -> errdefs.ContainerdError:
        """The errdefs kind for this status (INTERNAL, ABORTED, ... become Unknown)."""
        return errdefs.from_code(self.code_name, self.message)

    @classmethod
    def from_error(cls, exc: BaseException) -> Status:
        """The status to send for an exception a handler raised."""
        if isinstance(exc, errdefs.ContainerdError):
            return cls(code_pb2.Code.Value(exc.code), str(exc))
        return cls(code_pb2.UNKNOWN, f"{type(exc).__name__}: {exc}")

    def to_proto(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code, message=self.message)

    @classmethod
    def from_proto(cls, st: status_pb2.Status) -> Status:
        return cls(st.code, st.message)


def status_of(code_name: str, message: str) -> Status:
    return Status(code_pb2.Code.Value(code_name), message)


# --- requests and responses -------------------------------------------------------------

MetadataLike = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def metadata_pairs(md: MetadataLike | None) -> tuple[tuple[str, str], ...]:
    """Flatten metadata to (key, value) pairs; a key with several values repeats."""
    if md is None:
        return ()
    if isinstance(md, Mapping):
        pairs: list[tuple[str, str]] = []
        for k, v in md.items():
            if isinstance(v, str):
                pairs.append((k, v))
            else:
                pairs.extend((k, x) for x in v)
        return tuple(pairs)
    return tuple(md)


@dataclass(frozen=True, slots=True)
class Request:
    service: str
    method: str
    payload: bytes = b""
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()

    def metadata_dict(self) -> dict[str, list[str]]:
        md: dict[str, list[str]] = {}
        for k, v in self.metadata:
            md.setdefault(k, []).append(v)
        return md

    def encode(self) -> bytes:
        msg = request_pb2.Request(
            service=self.service,
            method=self.method,
            payload=self.payload,
            timeout_nano=self.timeout_nano,
            metadata=[request_pb2.KeyValue(key=k, value=v) for k, v in self.metadata],
        )
        return msg.SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> Request:
        msg = request_pb2.Request.FromString(data)
        return cls(
            msg.service,
            msg.method,
            msg.payload,
            msg.timeout_nano,
            tuple((kv.key, kv.value) for kv in msg.metadata),
        )


@dataclass(frozen=True, slots=True)
class Response:
    status: Status = field(default_factory=Status)
    payload: bytes = b""

    def encode(self) -> bytes:
        msg = request_pb2.Response(payload=self.payload)
        if not self.status.ok:
            msg.status.CopyFrom(self.status.to_proto())
        return msg.SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> Response:
        msg = request_pb2.Response.FromString(data)
        return cls(Status.from_proto(msg.status), msg.payload)


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: a request to answer with ``ServerConnection.send_response``."""

    stream_id: int
    request: Request


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """Server side: a request the protocol layer rejects (even stream id, oversized,
    undecodable, streaming); answer it with ``send_response(stream_id, Response(status))``."""

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client side: the outcome of the call on ``stream_id``."""

    stream_id: int
    response: Response


@dataclass(frozen=True, slots=True)
class FrameIgnored:
    """A frame that belongs to no call (unknown stream, unexpected type); logged, dropped."""

    stream_id: int
    type: int
    reason: str


ClientEvent = ResponseReceived | FrameIgnored
ServerEvent = RequestReceived | RequestRefused | FrameIgnored


# --- state machines ---------------------------------------------------------------------


class ClientConnection:
    """Client half of a connection: allocates stream ids, matches responses to calls."""

    def __init__(self, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.limit = limit
        self._decoder = FrameDecoder(limit)
        self._next_id = 1
        self.pending: set[int] = set()

    def send_request(self, request: Request) -> tuple[int, bytes]:
        """Allocate the next stream id for ``request``; returns it and the bytes to write."""
        data = request.encode()
        if len(data) > self.limit:
            raise errdefs.ResourceExhausted(
                f"ttrpc request {request.service}/{request.method} of {len(data)} bytes exceeds {self.limit}"
            )
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise errdefs.Unavailable("ttrpc stream ids exhausted on this connection; reconnect")
        self._next_id += 2
        self.pending.add(sid)
        return sid, encode_frame(sid, MessageType.REQUEST, data, limit=self.limit)

    def forget(self, stream_id: int) -> None:
        """Stop waiting for a call (timed out or cancelled); a late response is ignored."""
        self.pending.discard(stream_id)

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        for fr in self._decoder.feed(data):
            if fr.type != MessageType.RESPONSE:
                events.append(FrameIgnored(fr.stream_id, fr.type, "client expects only response frames"))
                continue
            if fr.stream_id not in self.pending:
                events.append(FrameIgnored(fr.stream_id, fr.type, "response for an unknown stream"))
                continue
            self.pending.discard(fr.stream_id)
            if isinstance(fr, OversizedFrame):
                st = status_of("RESOURCE_EXHAUSTED", f"ttrpc response of {fr.length} bytes exceeds {self.limit}")
                events.append(ResponseReceived(fr.stream_id, Response(st)))
                continue
            try:
                resp = Response.decode(fr.data)
            except DecodeError as exc:
                resp = Response(status_of("INTERNAL", f"malformed ttrpc response: {exc}"))
            events.append(ResponseReceived(fr.stream_id, resp))
        return events

    @property
    def partial(self) -> bool:
        return self._decoder.buffered > 0


class ServerConnection:
    """Server half of a connection: decodes requests, encodes responses."""

    def __init__(self, limit: int = MAX_MESSAGE_LENGTH) -> None:
        self.limit = limit
        self._decoder = FrameDecoder(limit)
        self.active: set[int] = set()

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        for fr in self._decoder.feed(data):
            if fr.type != MessageType.REQUEST:
                events.append(FrameIgnored(fr.stream_id, fr.type, "only unary requests are supported"))
                continue
            sid = fr.stream_id
            if sid in self.active:
                events.append(FrameIgnored(sid, fr.type, "request on a stream that is still active"))
                continue
            self.active.add(sid)
            refused: Status | None = None
            if sid % 2 != 1:
                refused = status_of("INVALID_ARGUMENT", "ttrpc stream id must be odd for client initiated streams")
            elif isinstance(fr, OversizedFrame):
                refused = status_of("RESOURCE_EXHAUSTED", f"ttrpc request of {fr.length} bytes exceeds {self.limit}")
            elif fr.flags & (FLAG_REMOTE_OPEN | FLAG_REMOTE_CLOSED):
                refused = status_of("UNIMPLEMENTED", "ttrpc streaming requests are not supported")
            if refused is not None:
                events.append(RequestRefused(sid, refused))
                continue
            assert isinstance(fr, Frame)
            try:
                req = Request.decode(fr.data)
            except DecodeError as exc:
                events.append(RequestRefused(sid, status_of("INVALID_ARGUMENT", f"malformed ttrpc request: {exc}")))
                continue
            events.append(RequestReceived(sid, req))
        return events

    def send_response(self, stream_id: int, response: Response) -> bytes:
        """Bytes that answer the active request on ``stream_id`` (which is then finished).

        A payload over the limit is replaced by a RESOURCE_EXHAUSTED status."""
        if stream_id not in self.active:
            raise errdefs.FailedPrecondition(f"ttrpc stream {stream_id} has no request to answer")
        self.active.discard(stream_id)
        data = response.encode()
        if len(data) > self.limit:
            st = status_of("RESOURCE_EXHAUSTED", f"ttrpc response of {len(data)} bytes exceeds {self.limit}")
            data = Response(st).encode()
        return encode_frame(stream_id, MessageType.RESPONSE, data, limit=self.limit)
