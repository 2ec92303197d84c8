"""The shim: one process per container that runs runc, owns the container's stdio, reaps it
and records its exit (see ``main`` for the process model, ``protocol`` for the wire).

This package is imported by every shim process: keep it free of heavy imports (no grpc,
protobuf or asyncio)."""
