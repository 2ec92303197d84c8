"""Finding an image's config from its target, shared by ``run.py`` and its grpc-free fast path.

Pure and light (stdlib only): ``fastrun.py`` imports it without the generated protobufs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_DEPTH = 4  # indexes nested deeper than this are refused

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "s390x": "s390x",
         "ppc64le": "ppc64le"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) of this host in OCI words."""
    machine = os.uname().machine
    return "linux", _ARCH.get(machine, machine)


def is_index(doc: dict[str, Any], media_type: str) -> bool:
    """Whether ``doc`` (of ``media_type``; its own ``mediaType`` preferred) is an index, not a manifest."""
    media_type = doc.get("mediaType") or media_type
    return media_type in INDEX_TYPES or ("manifests" in doc and "layers" not in doc)


def pick_manifest(index: dict[str, Any], want: tuple[str, str]) -> tuple[str, str] | None:
    """(digest, media type) of the index's first manifest for platform ``want``; None if it has none."""
    want_os, want_arch = want
    for m in index.get("manifests", []):
        p = m.get("platform") or {}
        if p.get("os", want_os) == want_os and p.get("architecture", want_arch) == want_arch:
            return m["digest"], m.get("mediaType", "")
    return None


def chain_id(diff_ids: Sequence[str]) -> str:
    """The identity of a layer stack: ChainID(L0) = DiffID(L0), ChainID(L0..n) = sha256(ChainID(L0..n-1) DiffID(Ln))."""
    if not diff_ids:
        return ""
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain
