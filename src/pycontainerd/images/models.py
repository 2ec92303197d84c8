"""Descriptors, manifests, indexes and image configs: dataclasses parsed from JSON with validation.

Parsing is strict where a mistake would be dangerous (digests, sizes, required fields,
schema version) and lenient about extra fields (registries add their own).  Blobs that
are parsed in memory are capped (``MAX_MANIFEST_SIZE``) so a hostile registry cannot make
the client allocate gigabytes for a "manifest".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import errdefs
from . import digest as digests
from . import mediatypes as mt

MAX_MANIFEST_SIZE = 4 << 20
"""Largest manifest, index or config read into memory (4 MiB, containerd's limit too)."""


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @staticmethod
    def from_json(obj: Any) -> Platform:
        if not isinstance(obj, dict):
            raise errdefs.InvalidArgument("invalid platform: expected a JSON object")
        feats = obj.get("os.features") or ()
        return Platform(
            os=_str(obj, "os"), architecture=_str(obj, "architecture"), variant=_str(obj, "variant"),
            os_version=_str(obj, "os.version"),
            os_features=tuple(str(f) for f in feats) if isinstance(feats, list) else (),
        )


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The OCI JSON form, keys in the order Go's encoder writes them."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @staticmethod
    def from_json(obj: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise errdefs.InvalidArgument(f"invalid {what}: expected a JSON object")
        dgst = obj.get("digest")
        if not isinstance(dgst, str):
            raise errdefs.InvalidArgument(f"invalid {what}: missing digest")
        try:
            digests.validate(dgst)
        except errdefs.InvalidArgument as exc:
            raise errdefs.InvalidArgument(f"invalid {what}: {exc}") from None
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errdefs.InvalidArgument(f"invalid {what} {dgst}: size must be a non-negative integer")
        ann = obj.get("annotations") or {}
        if not isinstance(ann, dict):
            raise errdefs.InvalidArgument(f"invalid {what} {dgst}: annotations must be an object")
        plat = obj.get("platform")
        urls = obj.get("urls") or []
        return Descriptor(
            media_type=str(obj.get("mediaType") or ""),
            digest=dgst, size=size,
            annotations={str(k): str(v) for k, v in ann.items()},
            platform=Platform.from_json(plat) if plat is not None else None,
            urls=[str(u) for u in urls] if isinstance(urls, list) else [],
        )


@dataclass
class Manifest:
    config: Descriptor
    layers: list[Descriptor]
    media_type: str = mt.OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)
    schema_version: int = 2

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type,
                               "config": self.config.to_json(), "layers": [x.to_json() for x in self.layers]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass
class Index:
    manifests: list[Descriptor]
    media_type: str = mt.OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)
    schema_version: int = 2

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version}
        if self.media_type:
            out["mediaType"] = self.media_type
        out["manifests"] = [x.to_json() for x in self.manifests]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass
class ImageConfig:
    """The parts of an image config the engine uses; ``raw`` keeps the whole document."""

    os: str
    architecture: str
    variant: str
    diff_ids: list[str]
    config: dict[str, Any]
    raw: dict[str, Any]

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, _str(self.raw, "os.version"))


def _str(obj: Mapping[str, Any], key: str) -> str:
    v = obj.get(key, "")
    return v if isinstance(v, str) else ""


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_SIZE:
        raise errdefs.InvalidArgument(
            f"{what} is too large: {len(data)} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"malformed {what}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise errdefs.InvalidArgument(f"malformed {what}: expected a JSON object")
    return obj


def _check_declared_type(obj: dict[str, Any], media_type: str, what: str) -> None:
    declared = obj.get("mediaType")
    if declared and media_type and mt.base(str(declared)) != mt.base(media_type):
        raise errdefs.InvalidArgument(
            f"malformed {what}: mediaType {declared!r} does not match the descriptor's {media_type!r}")


def parse_manifest(data: bytes, media_type: str = "") -> Manifest:
    obj = _load(data, "manifest")
    if mt.is_schema1(media_type) or obj.get("schemaVersion") == 1:
        raise errdefs.InvalidArgument(
            "Docker schema 1 manifests are not supported (deprecated since 2017): "
            "push the image again with a current Docker or tool to get a schema 2 / OCI manifest")
    _check_declared_type(obj, media_type, "manifest")
    if obj.get("schemaVersion") != 2:
        raise errdefs.InvalidArgument(f"malformed manifest: unsupported schemaVersion {obj.get('schemaVersion')!r}")
    if "manifests" in obj and "layers" not in obj:
        raise errdefs.InvalidArgument("malformed manifest: it is an index (has \"manifests\"), not a manifest")
    if "config" not in obj:
        raise errdefs.InvalidArgument("malformed manifest: missing config")
    layers = obj.get("layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list):
        raise errdefs.InvalidArgument("malformed manifest: layers must be a list")
    ann = obj.get("annotations") or {}
    return Manifest(
        config=Descriptor.from_json(obj["config"], "manifest config descriptor"),
        layers=[Descriptor.from_json(x, "manifest layer descriptor") for x in layers],
        media_type=str(obj.get("mediaType") or media_type or mt.OCI_MANIFEST),
        annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
    )


def parse_index(data: bytes, media_type: str = "") -> Index:
    obj = _load(data, "index")
    _check_declared_type(obj, media_type, "index")
    if obj.get("schemaVersion") != 2:
        raise errdefs.InvalidArgument(f"malformed index: unsupported schemaVersion {obj.get('schemaVersion')!r}")
    ms = obj.get("manifests")
    if not isinstance(ms, list):
        raise errdefs.InvalidArgument("malformed index: manifests must be a list")
    ann = obj.get("annotations") or {}
    return Index(
        manifests=[Descriptor.from_json(x, "index manifest descriptor") for x in ms],
        media_type=str(obj.get("mediaType") or media_type or ""),
        annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
    )


def parse_config(data: bytes) -> ImageConfig:
    obj = _load(data, "image config")
    rootfs = obj.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if diff_ids is None:
        diff_ids = []
    if not isinstance(diff_ids, list):
        raise errdefs.InvalidArgument("malformed image config: rootfs.diff_ids must be a list")
    for d in diff_ids:
        if not isinstance(d, str) or not digests.is_valid(d):
            raise errdefs.InvalidArgument(f"malformed image config: invalid diff id {d!r}")
    cfg = obj.get("config") or {}
    return ImageConfig(
        os=_str(obj, "os"), architecture=_str(obj, "architecture"), variant=_str(obj, "variant"),
        diff_ids=list(diff_ids), config=cfg if isinstance(cfg, dict) else {}, raw=obj,
    )


def detect_media_type(data: bytes) -> str:
    """Guess the type of a manifest-like JSON blob that came without one (e.g. index.json children)."""
    obj = _load(data, "manifest")
    declared = obj.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "config" in obj and "layers" in obj:
        return mt.OCI_MANIFEST
    if obj.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_MANIFEST
    raise errdefs.InvalidArgument("malformed manifest: neither an index nor a manifest")


def dumps(obj: Any) -> bytes:
    """Compact JSON like Go's encoding/json (no spaces, HTML-safe escapes not applied)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
