"""The runtime: tasks through shims that run runc (task manager, bundles, cgroups metrics, the shim client)."""
