"""Kubernetes' remotecommand / port-forward vocabulary, shared by our streaming server and client.

Exec and attach ("remotecommand") and port-forward ride on an upgraded HTTP/1.1 connection:

SPDY/3.1 (``Upgrade: SPDY/3.1``; the client offers ``X-Stream-Protocol-Version`` values, the
server answers 101 with the one it picked):
  - remotecommand, ``v4.channel.k8s.io`` .. ``channel.k8s.io``: the client opens one stream per
    ``streamType`` header: ``error`` (first), ``stdin``, ``stdout``, ``stderr`` and, with a TTY
    from v3 on, ``resize`` (JSON ``{"Width":..,"Height":..}`` objects, one after another).  The
    server writes the outcome on the error stream: from v4 a JSON ``metav1.Status``
    (``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and a cause ``ExitCode`` whose
    message is the exit code), before v4 a plain error message (nothing on success).
  - port-forward, ``portforward.k8s.io``: per forwarded connection the client opens an
    ``error`` stream and then a ``data`` stream, both with headers ``port`` and ``requestID``.

WebSocket (``Sec-WebSocket-Protocol``): each message starts with a channel byte
(0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); the ``base64.`` variants send text
messages whose first character is the channel digit and whose rest is base64.  ``v4.``
carries the v4 Status on the error channel; ``v5.channel.k8s.io`` adds channel 255 whose
message ``[255, n]`` closes channel ``n`` (stdin EOF).  Port-forward over WebSocket uses two
channels per port (data ``2i``, error ``2i+1``) and each channel's first message starts with
the port as a little-endian uint16.

Everything here is a pure function or a constant.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from pycontainerd import errdefs

# --- headers and stream types --------------------------------------------------------------

HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_STREAM_TYPE = "streamType"
HEADER_PORT = "port"
HEADER_REQUEST_ID = "requestID"

STREAM_ERROR = "error"
STREAM_STDIN = "stdin"
STREAM_STDOUT = "stdout"
STREAM_STDERR = "stderr"
STREAM_RESIZE = "resize"
STREAM_DATA = "data"

# --- protocol names --------------------------------------------------------------------------

SPDY_UPGRADE = "SPDY/3.1"

STREAM_PROTOCOL_V1 = "channel.k8s.io"
STREAM_PROTOCOL_V2 = "v2.channel.k8s.io"
STREAM_PROTOCOL_V3 = "v3.channel.k8s.io"
STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_PROTOCOL_V5 = "v5.channel.k8s.io"
# remotecommand over SPDY, most preferred first (kubelet supports exactly these)
SPDY_REMOTECOMMAND_PROTOCOLS = (STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V2, STREAM_PROTOCOL_V1)
PORT_FORWARD_PROTOCOL_V1 = "portforward.k8s.io"
SPDY_PORT_FORWARD_PROTOCOLS = (PORT_FORWARD_PROTOCOL_V1,)

WS_CHANNEL = "channel.k8s.io"
WS_BASE64_CHANNEL = "base64.channel.k8s.io"
WS_V4_CHANNEL = "v4.channel.k8s.io"
WS_V4_BASE64_CHANNEL = "v4.base64.channel.k8s.io"
WS_V5_CHANNEL = "v5.channel.k8s.io"
# remotecommand over WebSocket, most preferred first
WS_REMOTECOMMAND_PROTOCOLS = (WS_V5_CHANNEL, WS_V4_CHANNEL, WS_V4_BASE64_CHANNEL, WS_CHANNEL, WS_BASE64_CHANNEL)
# port-forward over WebSocket (kubelet also accepts no subprotocol: binary)
WS_PORT_FORWARD_PROTOCOLS = (WS_V4_CHANNEL, WS_V4_BASE64_CHANNEL)

# --- WebSocket channels ----------------------------------------------------------------------

CHANNEL_STDIN = 0
CHANNEL_STDOUT = 1
CHANNEL_STDERR = 2
CHANNEL_ERROR = 3
CHANNEL_RESIZE = 4
CHANNEL_CLOSE = 255

PORT_FORWARD_DATA_CHANNEL = 0  # channel 2*i for the i-th port
PORT_FORWARD_ERROR_CHANNEL = 1  # channel 2*i+1

# metav1.Status vocabulary
NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE_TYPE = "ExitCode"
STATUS_SUCCESS = "Success"
STATUS_FAILURE = "Failure"


def status_uses_json(protocol: str) -> bool:
    """Whether the error stream of this negotiated protocol carries a JSON Status (v4 and later)."""
    return protocol.startswith(("v4.", "v5."))


def is_base64_protocol(protocol: str) -> bool:
    return "base64." in protocol


def ws_supports_close(protocol: str) -> bool:
    """v5 (and later) can close single channels (stdin EOF) with channel 255."""
    return protocol.startswith("v5.")


# --- Status on the error stream ----------------------------------------------------------------


def status_success() -> bytes:
    return json.dumps({"metadata": {}, "status": STATUS_SUCCESS}, separators=(",", ":")).encode()


def status_exit_code(exit_code: int, message: str | None = None) -> bytes:
    """The Failure/NonZeroExitCode Status kubelet writes when the command exited non-zero."""
    doc = {
        "metadata": {},
        "status": STATUS_FAILURE,
        "message": message or f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": NON_ZERO_EXIT_CODE_REASON,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE_TYPE, "message": str(exit_code)}]},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def status_error(message: str, *, reason: str = "InternalError", code: int = 500) -> bytes:
    """A Failure Status for an error that is not an exit code (e.g. the exec could not start)."""
    doc = {
        "metadata": {},
        "status": STATUS_FAILURE,
        "message": message,
        "reason": reason,
        "details": {"causes": [{"message": message}]},
        "code": code,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_status(protocol: str, exit_code: int, message: str | None = None) -> bytes:
    """What the server writes on the error stream for this protocol: JSON for v4+, text before."""
    if status_uses_json(protocol):
        if exit_code == 0 and message is None:
            return status_success()
        if message is not None and exit_code == 0:
            return status_error(message)
        return status_exit_code(exit_code, message)
    if exit_code == 0 and message is None:
        return b""
    return (message or f"command terminated with non-zero exit code: exit status {exit_code}").encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the error stream said: ``exit_code`` (None if it named no code) and the message."""

    exit_code: int | None
    message: str = ""

    @property
    def success(self) -> bool:
        return self.exit_code == 0


def parse_status(data: bytes, protocol: str = STREAM_PROTOCOL_V4) -> Outcome:
    """Read the error stream's whole content back to (exit code, message).

    Empty means success (every version).  v4+: a JSON Status (``Success`` → 0; ``NonZeroExitCode``
    → its ``ExitCode`` cause; another Failure → exit_code None with its message).  Before v4:
    the text is an error message without a code.
    """
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return Outcome(0)
    if not status_uses_json(protocol):
        return Outcome(None, text)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"error stream: not a JSON Status: {text[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument(f"error stream: not a JSON Status: {text[:200]!r}")
    status = doc.get("status")
    raw_message = doc.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    if status == STATUS_SUCCESS:
        return Outcome(0, message)
    if status != STATUS_FAILURE:
        raise errdefs.InvalidArgument(f"error stream: Status with status {status!r}")
    if doc.get("reason") == NON_ZERO_EXIT_CODE_REASON:
        details = doc.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        for cause in causes if isinstance(causes, list) else []:
            if isinstance(cause, dict) and cause.get("reason") == EXIT_CODE_CAUSE_TYPE:
                try:
                    return Outcome(int(str(cause.get("message"))), message)
                except ValueError as exc:
                    raise errdefs.InvalidArgument(f"error stream: bad exit code {cause.get('message')!r}") from exc
        raise errdefs.InvalidArgument("error stream: NonZeroExitCode without an ExitCode cause")
    return Outcome(None, message or "unknown error")


# --- terminal size ---------------------------------------------------------------------------


def encode_resize(width: int, height: int) -> bytes:
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise errdefs.InvalidArgument(f"terminal size {width}x{height} out of range")
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode()


class ResizeDecoder:
    """Splits a resize stream (concatenated JSON objects, as Go's json.Decoder reads them) into sizes.

    ``feed`` returns the complete (width, height) pairs; partial objects wait for more bytes;
    more than ``limit`` pending bytes is an error (a peer must not make us buffer unboundedly).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._buf = ""
        self._limit = limit
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buf += data.decode("utf-8", errors="replace")
        sizes: list[tuple[int, int]] = []
        while True:
            self._buf = self._buf.lstrip()
            if not self._buf:
                break
            try:
                obj, end = self._decoder.raw_decode(self._buf)
            except ValueError:
                if len(self._buf) > self._limit:
                    raise errdefs.InvalidArgument("resize stream: malformed or oversized JSON") from None
                break
            self._buf = self._buf[end:]
            sizes.append(parse_resize_obj(obj))
        return sizes


def parse_resize_obj(obj: object) -> tuple[int, int]:
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument("resize: not a JSON object")
    width, height = obj.get("Width", 0), obj.get("Height", 0)
    if (
        not isinstance(width, int)
        or not isinstance(height, int)
        or isinstance(width, bool)
        or isinstance(height, bool)
        or not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF)
    ):
        raise errdefs.InvalidArgument(f"resize: bad size {obj!r}")
    return width, height


def parse_resize(data: bytes) -> tuple[int, int]:
    """One resize message (a single JSON object) → (width, height)."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"resize: not JSON: {data[:100]!r}") from exc
    return parse_resize_obj(obj)


# --- WebSocket channel frames ------------------------------------------------------------------


def encode_channel_frame(channel: int, data: bytes, *, base64_variant: bool = False) -> bytes | str:
    """A WebSocket message for ``channel``: bytes (binary protocols) or str (base64 protocols)."""
    if not 0 <= channel <= 255:
        raise errdefs.InvalidArgument(f"channel {channel} out of range")
    if base64_variant:
        if channel > 9:
            raise errdefs.InvalidArgument(f"channel {channel} cannot be sent in a base64 protocol")
        return str(channel) + base64.b64encode(data).decode("ascii")
    return bytes([channel]) + data


def decode_channel_frame(message: bytes | str) -> tuple[int, bytes]:
    """A received WebSocket message → (channel, payload); str messages are the base64 variant."""
    if isinstance(message, str):
        if not message or not message[0].isdigit() or not message[0].isascii():
            raise errdefs.InvalidArgument("websocket: base64 message without a channel digit")
        try:
            payload = base64.b64decode(message[1:].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise errdefs.InvalidArgument(f"websocket: bad base64 payload: {exc}") from exc
        return int(message[0]), payload
    if not message:
        raise errdefs.InvalidArgument("websocket: empty message without a channel byte")
    return message[0], bytes(message[1:])


def encode_close_channel(channel: int) -> bytes:
    """v5: the message that closes one channel (e.g. stdin EOF)."""
    return bytes([CHANNEL_CLOSE, channel])


def encode_port_prefix(port: int) -> bytes:
    """Port-forward over WebSocket: the port that starts each channel's first message."""
    if not 0 < port <= 0xFFFF:
        raise errdefs.InvalidArgument(f"port {port} out of range")
    return port.to_bytes(2, "little")


def decode_port_prefix(data: bytes) -> tuple[int, bytes]:
    if len(data) < 2:
        raise errdefs.InvalidArgument("port-forward: first message shorter than its port prefix")
    return int.from_bytes(data[:2], "little"), data[2:]
