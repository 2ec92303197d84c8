"""gRPC servicers for containerd API v1: each translates protobuf ⇄ domain and nothing else."""
