"""The pycontainerd daemon: configuration, plugin wiring and the gRPC server."""
