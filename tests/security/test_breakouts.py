"""The breakout suite: every case of ``breakouts.breakout_layers`` pulled with the real ``ctr``
into our daemon and into a real containerd, side by side.

For each case: the host sentinel stays untouched on both; our outcome (refused or
extracted) is containerd's, or a deliberate, safer difference listed in ``DIFFERENCES``;
when both extract, the two image trees are the same; a refused layer leaves no
half-extracted snapshot; no image we extract holds a host file.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.containerd import Containerd
from tests.fixtures.procs import remove_tree
from tests.fixtures.registry import Registry
from tests.integration.daemon import Daemon
from tests.integration.issue4_support import (
    assert_store_empty,
    image_mounted,
    leases,
    snapshots,
    tree,
    tree_differences,
)

from .breakouts import breakout_layers

pytestmark = pytest.mark.root

# case -> (we extract it, containerd extracts it, why ours is the better answer)
DIFFERENCES: dict[str, tuple[bool, bool, str]] = {
    "hardlink-into-lower-layer": (
        True, False,
        "a hard link to a file of a lower layer: we copy the file up into this layer, as overlayfs does "
        "when such a link is made in a container (images built by docker contain such links); "
        "containerd 1.6 cannot link across layers and fails the pull. The target is looked up in the "
        "image, never on the host.",
    ),
}

# case -> why our tree may differ from containerd's in modification times only
MTIME_DIFFERENCES: dict[str, str] = {
    "dir-replaced-by-symlink": (
        "containerd sets a directory entry's times at the end of the layer through whatever now "
        "stands at its path, here the symlink that replaced it (so it dates the symlink's target "
        "inside the image); we never change anything through a symlink"
    ),
}

HOST_MARK = b"victim\n"  # the sentinel's victim: no extracted image may hold it


@pytest.fixture(scope="module")
def sentinel() -> Iterator[Path]:
    path = Path(f"/tmp/pycd-brk-{uuid.uuid4().hex[:12]}-canary")
    images.prepare_sentinel(path)
    yield path
    remove_tree(path)


@pytest.fixture(scope="module")
def breakout_refs(registry: Registry, sentinel: Path, fixture_dir: Path) -> dict[str, str]:
    refs = {}
    for layer in breakout_layers(sentinel):
        img = images.build_malicious_image(fixture_dir / f"breakout-{sentinel.name}-{layer.name}", layer)
        images.push_to_registry(img, registry.url, f"breakout/{layer.name}", "latest")
        refs[layer.name] = registry.ref(f"breakout/{layer.name}")
    return refs


def _host_files_in(root: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink() and p.stat().st_size == len(HOST_MARK) \
                    and p.read_bytes() == HOST_MARK:
                found.append(str(p.relative_to(root)))
    return found


def test_suite_is_wide(sentinel: Path) -> None:
    assert len(breakout_layers(sentinel)) >= 40


def test_breakouts_refused_or_confined_like_containerd(daemon: Daemon, containerd: Containerd,
                                                        breakout_refs: dict[str, str], sentinel: Path,
                                                        tmp_path: Path) -> None:
    since = time.time() - 1
    outcomes: dict[str, tuple[bool, bool]] = {}
    problems: list[str] = []
    for name, ref in breakout_refs.items():
        ours = daemon.ctr("images", "pull", "--plain-http", ref, check=False)
        assert images.sentinel_intact(sentinel) == [], f"{name} escaped on pycontainerd"
        theirs = containerd.ctr("images", "pull", "--plain-http", ref, check=False)
        assert images.sentinel_intact(sentinel) == [], f"{name} escaped on containerd"
        outcomes[name] = (ours.returncode == 0, theirs.returncode == 0)
        if ours.returncode != 0 and "failed to extract layer" not in ours.stderr:
            problems.append(f"{name}: refused without saying why: {ours.stderr.strip()[-300:]}")
        if ours.returncode == 0:
            with image_mounted(daemon, ref, tmp_path / f"o-{name}") as a:
                leaked = _host_files_in(a)
                if leaked:
                    problems.append(f"{name}: host file copied into the image at {leaked}")
                if theirs.returncode == 0:
                    with image_mounted(containerd, ref, tmp_path / f"t-{name}") as b:
                        ta, tb = tree(a, volatile_since=since), tree(b, volatile_since=since)
                        if name in MTIME_DIFFERENCES:
                            ta, tb = ({k: v[:5] + v[6:] for k, v in t.items()} for t in (ta, tb))
                        diff = tree_differences(ta, tb)
                        if diff:
                            problems.append(f"{name}: extracted differently from containerd: {diff[:5]}")
        # a refused layer leaves no half-extracted snapshot behind
        if not all(kind == "Committed" for _, kind in snapshots(daemon).values()):
            problems.append(f"{name}: left an uncommitted snapshot")
    for name, (ours_ok, theirs_ok) in outcomes.items():
        if ours_ok == theirs_ok:
            if name in DIFFERENCES:
                problems.append(f"{name}: listed as a difference but both now {'extract' if ours_ok else 'refuse'}")
            continue
        want = DIFFERENCES.get(name)
        if want is None or want[:2] != (ours_ok, theirs_ok):
            problems.append(f"{name}: we {'extract' if ours_ok else 'refuse'}, containerd "
                            f"{'extracts' if theirs_ok else 'refuses'}")
    assert problems == [], "\n".join(problems)
    assert images.sentinel_intact(sentinel) == []
    names = daemon.ctr("images", "ls", "-q").stdout.split()
    daemon.ctr("images", "rm", "--sync", *names)
    assert_store_empty(daemon)
    assert leases(daemon) == []
