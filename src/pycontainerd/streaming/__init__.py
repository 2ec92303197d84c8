"""Kubernetes streaming (exec, attach, port-forward) wire formats, shared by the CRI streaming
server and the client: ``spdy`` (sans-IO SPDY/3.1), ``spdyio`` (its asyncio session) and
``remotecommand`` (stream types, protocol names, Status and resize messages, WebSocket channels);
and the server itself: ``server`` (HTTP/1.1, tokens, upgrades), ``websocket`` and ``spdyserve``
(the two transports), ``runtime`` (what it asks of the runtime), ``tokens``, ``tls``.

A domain package: no grpc, no generated API; it imports only ``errdefs``.
"""
