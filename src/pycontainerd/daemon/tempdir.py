"""``temp``: where the daemon and what it starts put temporary files, as containerd does it:
the directory is made (0711) and becomes ``TMPDIR`` of the daemon's process, which everything it
forks afterwards inherits (shims, runc, CNI plugins).  Python's ``tempfile`` reads ``TMPDIR``
once and caches it, so that cache is reset too."""

from __future__ import annotations

import os
import sys


def apply_temp_dir(path: str) -> None:
    """Empty ``path``: nothing changes (the inherited ``TMPDIR``, else /tmp)."""
    if not path:
        return
    os.makedirs(path, mode=0o711, exist_ok=True)
    os.environ["TMPDIR"] = path
    if "tempfile" in sys.modules:  # not imported yet: it reads TMPDIR when it is
        import tempfile

        tempfile.tempdir = None  # gettempdir() looks again, and finds TMPDIR
