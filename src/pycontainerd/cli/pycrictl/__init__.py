"""pycrictl: a friendlier crictl that speaks the Kubernetes CRI API (runtime.v1) through `client.cri`."""
