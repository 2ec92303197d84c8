"""The task manager's record of one task: what ``task_manager``, ``task_recovery`` and
``task_metrics`` share about a task (its bundle, its shim, its known exit, its tombstone).

Mutable and internal to the runtime package: the manager's API answers with the value types
of ``task_types.py`` instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import bundle as bundlemod
from .task_types import Exit, TaskIO

if TYPE_CHECKING:
    from .shim_api import Shim  # protocols, for annotations only (W6, idle PSS)


@dataclass
class TaskRecord:
    namespace: str
    id: str
    bundle: Path
    meta: bundlemod.BundleMeta
    shim: Shim | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task[None] | None = None
    last_exit: Exit | None = None  # the init's exit, from the shim's /tasks/exit or its Wait
    io: TaskIO | None = None  # the init's stdio as created (None: restored, ask the shim)
    tombstone: Exit | None = None  # set when the shim is gone
    started: bool = False  # its init was started through this manager (start_process)
    started_at_ns: int = 0  # when its init's start returned (0: not started), restored from the bundle
    paused: bool = False  # a pause was asked through this manager and no resume since
    dead: asyncio.Event = field(default_factory=asyncio.Event)
    deleting: bool = False
