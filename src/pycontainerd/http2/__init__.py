"""Sans-IO HTTP/2 (RFC 9113) and HPACK (RFC 7541) for the daemon's own gRPC server and the quick client.

- ``frames``: frame types, flags, error codes, settings ids, the 9-byte frame header.
- ``hpack``: ``Decoder`` (static + dynamic table, Huffman, cached repeated blocks) and the
  stateless ``Encoder``/``encode_block``.
- ``server``: ``ServerConnection``, the server side of one connection: bytes in -> events,
  calls -> bytes out, with flow control and the hostile-input limits.

No asyncio, no sockets, no grpc: the transport belongs to the caller (``pycontainerd.rpc``, and
the synchronous client in ``client/h2.py``).  This ``__init__`` imports nothing, so the client's
start-up pays only for the modules it uses.
"""
