"""The Prometheus endpoint (``[metrics] address``): gRPC, per-task cgroup and engine metrics."""
