"""OCI runtime specs, built like containerd's ``oci`` package: the default Linux spec and the
spec options (``spec.py``), the default seccomp profile (``seccomp.py``).

A domain package: pure functions over plain dicts (the runtime-spec's JSON), no gRPC.  Both the
client (``pyctr run``, ``client.run``) and the CRI plugin (pods and containers) build their
specs with it.
"""
