"""Kubernetes streaming (exec, attach, port-forward) wire formats, shared by the CRI streaming
server and the client: ``spdy`` (sans-IO SPDY/3.1), ``spdyio`` (its asyncio session) and
``remotecommand`` (stream types, protocol names, Status and resize messages, WebSocket channels).

A domain package: no grpc, no generated API; it imports only ``errdefs``.
"""
