"""The runtime: tasks through shims that run runc (task manager, bundles, the shim clients)."""
