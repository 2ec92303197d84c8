"""Namespaced metadata over SQLite: namespaces, images, content records, containers, leases, snapshots, GC."""
