"""Snapshotters: layered filesystems addressed by key (see ``interfaces``)."""

from __future__ import annotations

from .interfaces import Info, Kind, Snapshotter, Usage

__all__ = ["Info", "Kind", "Snapshotter", "Usage"]
