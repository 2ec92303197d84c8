"""open_blob: the differ's direct read path into the content store, and an apply through it."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

from pycontainerd import errdefs
from pycontainerd.content.local import LocalStore
from pycontainerd.diff.walking import Descriptor, WalkingDiffer
from pycontainerd.metadata.content import ContentStore
from pycontainerd.mount import Mount
from tests.suites.content_suite import blob, digest_of, expect, put
from tests.unit.local_content import run_with_stores


def test_open_blob_reads_the_bytes_and_respects_namespaces(tmp_path: Path) -> None:
    async def body(local: LocalStore, content: ContentStore) -> None:
        a, b = content.namespaced("ns-a"), content.namespaced("ns-b")
        data = blob(3 << 20, seed=7)
        dgst = await put(a, "x", data)
        f = await a.open_blob(dgst)
        try:
            assert f.size == len(data)
            got = bytearray()
            while chunk := f.read(1 << 20):
                got += chunk
            assert bytes(got) == data
        finally:
            f.close()
        f.close()  # idempotent
        await expect(errdefs.NotFound, b.open_blob(dgst))
        await expect(errdefs.NotFound, local.open_blob(digest_of(b"absent")))
        # an open blob stays readable when it is deleted meanwhile
        with await a.open_blob(dgst) as g:
            await a.delete(dgst)
            assert g.read(10) == data[:10]

    run_with_stores(tmp_path, body)


def test_walking_differ_applies_from_the_blob_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(50):
            payload = os.urandom(1000 + i)
            ti = tarfile.TarInfo(f"dir/f{i}")
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    tar = buf.getvalue()
    layer = gzip.compress(tar)

    async def body(local: LocalStore, content: ContentStore) -> None:
        ns = content.namespaced("ns")
        dgst = await put(ns, "layer", layer)
        target = tmp_path / "target"
        target.mkdir()
        differ = WalkingDiffer(tmp_path / "tmpmounts")
        desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", dgst, len(layer))
        applied = await differ.apply(desc, [Mount(type="bind", source=str(target), options=["rbind", "rw"])], ns)
        assert applied.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert applied.size == len(tar)
        assert len(os.listdir(target / "dir")) == 50
        await expect(errdefs.NotFound, differ.apply(desc, [], content.namespaced("other")))

    run_with_stores(tmp_path, body)
