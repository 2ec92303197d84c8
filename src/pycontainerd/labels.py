"""Label limits and the well-known label keys containerd gives meaning to.

Labels are free-form string pairs on images, containers, content blobs, snapshots,
leases and namespaces.  containerd limits each pair to 4096 bytes (key plus value, in
UTF-8); ``validate`` enforces that and raises ``errdefs.InvalidArgument`` naming the key
(truncated to 64 bytes in the message, as containerd does).

Some keys steer the daemon:

- garbage collection (``containerd.io/gc.*``): ``gc.root`` pins an object; ``gc.ref.content*``
  and ``gc.ref.snapshot.<snapshotter>*`` on a blob, snapshot, container or lease add
  references to other objects (any suffix after the prefix, e.g. ``gc.ref.content.l.0``,
  makes several references possible); ``gc.expire`` (RFC 3339) ends a lease;
  ``gc.flat`` on a lease keeps only the objects it names, not their children.
- content/unpack: ``containerd.io/uncompressed`` (the diff id of a compressed layer),
  ``containerd.io/distribution.source.<registry host>`` (repositories a blob came from),
  ``containerd.io/snapshot.ref`` (the chain id a committed snapshot is known by).
- namespace defaults: ``containerd.io/defaults/snapshotter``, ``containerd.io/defaults/runtime``.
- image config: ``io.containerd.image.config.stop-signal``.
- CRI: ``io.cri-containerd.kind`` (``sandbox``/``container``), ``io.cri-containerd.image``
  (``managed``), ``io.cri-containerd.pinned`` (``pinned``).

Updates name labels with field-mask paths, the same way for every resource:
``apply_field_paths`` is that one rule (``labels`` replaces all of them, ``labels.<key>`` sets
or removes one), which each store combines with the paths of its other fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errdefs import InvalidArgument

MAX_SIZE = 4096
"""Maximum bytes of one label's key plus value."""
_KEY_MAX_IN_MESSAGE = 64

FIELD = "labels"
"""The update-mask path that replaces every label; ``labels.<key>`` names one label."""
_KEY_PATH_PREFIX = FIELD + "."

# --- garbage collection ------------------------------------------------------------------
GC_ROOT = "containerd.io/gc.root"
GC_REF_CONTENT = "containerd.io/gc.ref.content"
"""Prefix: ``gc.ref.content``, ``gc.ref.content.config``, ``gc.ref.content.l.<n>``, ``.m.<n>``."""
GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot"
"""Prefix: ``containerd.io/gc.ref.snapshot.<snapshotter>`` = snapshot key."""
GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"
GC_BREF_CONTENT = "containerd.io/gc.bref.content"
"""Prefix of back references (containerd 1.7): the labelled object is referenced by the target."""
GC_BREF_SNAPSHOT = "containerd.io/gc.bref.snapshot"
GC_BREF_CONTAINER = "containerd.io/gc.bref.container"

# --- content, snapshots, distribution ----------------------------------------------------
UNCOMPRESSED = "containerd.io/uncompressed"
SNAPSHOT_REF = "containerd.io/snapshot.ref"
SNAPSHOT_LABEL_PREFIX = "containerd.io/snapshot/"
"""Labels with this prefix are passed through to (remote) snapshotters."""
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
CHECKPOINT_PREFIX = "containerd.io/checkpoint"

# --- namespace defaults ------------------------------------------------------------------
DEFAULTS_PREFIX = "containerd.io/defaults"
DEFAULTS_SNAPSHOTTER = "containerd.io/defaults/snapshotter"
DEFAULTS_RUNTIME = "containerd.io/defaults/runtime"

# --- images, runtime -----------------------------------------------------------------------
IMAGE_STOP_SIGNAL = "io.containerd.image.config.stop-signal"
RUNC_SHIM_GROUP = "io.containerd.runc.v2.group"
"""Containers with the same value share one shim process."""

# --- restart monitor (containerd.io/restart.*) ---------------------------------------------
RESTART_STATUS = "containerd.io/restart.status"
RESTART_POLICY = "containerd.io/restart.policy"
RESTART_LOG_PATH = "containerd.io/restart.logpath"
RESTART_LOG_URI = "containerd.io/restart.loguri"

# --- CRI ---------------------------------------------------------------------------------
CRI_KIND = "io.cri-containerd.kind"
CRI_KIND_SANDBOX = "sandbox"
CRI_KIND_CONTAINER = "container"
CRI_IMAGE = "io.cri-containerd.image"
CRI_IMAGE_MANAGED = "managed"
CRI_PINNED = "io.cri-containerd.pinned"
CRI_PINNED_VALUE = "pinned"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CRI_SNAPSHOT_IMAGE_REF = "containerd.io/snapshot/cri.image-ref"
CRI_SNAPSHOT_LAYER_DIGEST = "containerd.io/snapshot/cri.layer-digest"
CRI_SNAPSHOT_IMAGE_LAYERS = "containerd.io/snapshot/cri.image-layers"
CRI_SNAPSHOT_MANIFEST_DIGEST = "containerd.io/snapshot/cri.manifest-digest"


def validate(key: str, value: str) -> None:
    """Raise ``InvalidArgument`` if the label's key plus value exceed ``MAX_SIZE`` bytes."""
    bkey = key.encode()
    total = len(bkey) + len(value.encode())
    if total > MAX_SIZE:
        shown = bkey[:_KEY_MAX_IN_MESSAGE].decode(errors="ignore")
        raise InvalidArgument(
            f"label key and value length ({total} bytes) greater than maximum size "
            f"({MAX_SIZE} bytes), key: {shown}"
        )


def validate_all(labels: Mapping[str, str]) -> None:
    """Validate every label of a mapping (the first offender raises)."""
    for key, value in labels.items():
        validate(key, value)


def is_field_path(path: str) -> bool:
    """Whether an update-mask path is about labels: ``labels`` or ``labels.<key>``."""
    return path == FIELD or path.startswith(_KEY_PATH_PREFIX)


def apply_field_paths(
    current: Mapping[str, str],
    new: Mapping[str, str],
    paths: str | Iterable[str],
    *,
    what: str,
    field: str = "",
) -> dict[str, str]:
    """Apply update-mask label paths, in order, to a copy of ``current`` and return it.

    containerd's rule for every resource with labels: ``labels`` replaces them all with
    ``new``; ``labels.<key>`` sets that key to ``new[key]``, and an empty or missing value
    removes it.  No paths change nothing: a store whose mask-less update replaces the labels
    passes ``paths or FIELD``; a store with other fields passes only the label paths.
    Any other path is InvalidArgument ``cannot update '<path>' field on <what>``.

    As containerd does, the merged labels are validated before empty values are dropped, so
    a key named for removal must still fit ``MAX_SIZE``, and an empty key with a value is
    refused (containerd's store cannot hold one).  Validation messages start with
    ``field`` (e.g. ``image.Labels``) when it is given.  The result holds no empty values.
    """
    merged = dict(current)
    for path in (paths,) if isinstance(paths, str) else paths:
        if path == FIELD:
            merged = dict(new)
        elif path.startswith(_KEY_PATH_PREFIX):
            key = path[len(_KEY_PATH_PREFIX) :]
            merged[key] = new.get(key, "")
        else:
            raise InvalidArgument(f"cannot update {path!r} field on {what}")
    try:
        validate_all(merged)
        if merged.get(""):
            raise InvalidArgument("label key must not be empty")
    except InvalidArgument as exc:
        if not field:
            raise
        raise InvalidArgument(f"{field}: {exc}") from exc
    return {k: v for k, v in merged.items() if v}


def distribution_source_label(registry_host: str) -> str:
    """``containerd.io/distribution.source.<host>``, whose value lists repositories."""
    return DISTRIBUTION_SOURCE_PREFIX + registry_host


def gc_ref_snapshot_label(snapshotter: str) -> str:
    """``containerd.io/gc.ref.snapshot.<snapshotter>``, whose value is a snapshot key."""
    return f"{GC_REF_SNAPSHOT}.{snapshotter}"
