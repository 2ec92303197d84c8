"""Media types of OCI and Docker image objects, and what each one is.

An image is a tree of content-addressed blobs: an *index* (OCI index or Docker manifest
list) names one *manifest* per platform; a manifest names one *config* (the JSON with the
image's run settings and its layers' uncompressed digests, the "diff ids") and an ordered
list of *layers* (tar archives, usually gzip-compressed).  Docker schema 1 manifests
(signed JSON, no config blob) are obsolete and refused.
"""

from __future__ import annotations

# --- Docker schema 2 -----------------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"

# --- Docker schema 1 (refused) -------------------------------------------------------------
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1_MANIFEST_JSON = "application/vnd.docker.distribution.manifest.v1+json"

# --- OCI image spec v1 ---------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# --- containerd ----------------------------------------------------------------------------
CONTAINERD_CHECKPOINT_PREFIX = "application/vnd.containerd.container.checkpoint."
IN_TOTO = "application/vnd.in-toto+json"

# --- annotations ---------------------------------------------------------------------------
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG, DOCKER_PLUGIN_CONFIG})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_MANIFEST_JSON})

#: what a registry client sends as Accept when resolving a tag (schema 1 deliberately absent)
MANIFEST_ACCEPT = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)


def base(media_type: str) -> str:
    """The media type without parameters (``; charset=...``)."""
    return media_type.split(";", 1)[0].strip()


def is_manifest(media_type: str) -> bool:
    return base(media_type) in MANIFEST_TYPES


def is_index(media_type: str) -> bool:
    return base(media_type) in INDEX_TYPES


def is_config(media_type: str) -> bool:
    return base(media_type) in CONFIG_TYPES


def is_schema1(media_type: str) -> bool:
    return base(media_type) in SCHEMA1_TYPES


def is_layer(media_type: str) -> bool:
    mt = base(media_type)
    return mt.startswith(("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs."))


def is_nondistributable(media_type: str) -> bool:
    mt = base(media_type)
    return mt.startswith("application/vnd.oci.image.layer.nondistributable.") or mt == DOCKER_FOREIGN_LAYER


def kind(media_type: str) -> str:
    """What ctr calls a blob in ingest refs and progress: index, manifest, config, layer or blob."""
    if is_index(media_type):
        return "index"
    if is_manifest(media_type):
        return "manifest"
    if is_config(media_type):
        return "config"
    if is_layer(media_type):
        return "layer"
    return "unknown"
