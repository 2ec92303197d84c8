"""TEMPORARY until spdy-client's remotecommand.py is merged: the few protocol constants the server needs."""

from __future__ import annotations

import base64
import json

STREAM_STDIN, STREAM_STDOUT, STREAM_STDERR, STREAM_ERROR, STREAM_RESIZE = 0, 1, 2, 3, 4
CLOSE_CHANNEL = 255


def status_json(code: int | None, message: str = "") -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    if code is None:
        return json.dumps({"metadata": {}, "status": "Failure", "message": message}).encode()
    return json.dumps({"metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


def encode_frame(channel: int, data: bytes, b64: bool) -> bytes | str:
    if b64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode_frame(msg: bytes | str, b64: bool) -> tuple[int, bytes]:
    if isinstance(msg, str):
        return ord(msg[0]) - ord("0"), base64.b64decode(msg[1:])
    return msg[0], bytes(msg[1:])
