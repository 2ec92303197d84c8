"""Layers that try to break out of the extraction root: the breakout suite's case list.

Each case is one or more layers put on top of the busybox test image.  Extracted anywhere,
none may change the sentinel directory (a host directory the cases aim at, holding
``victim``), and no image may end up holding a host file (the sentinel's ``victim``, the
daemon's environment).  The categories follow containerd's own archive breakout tests, and
go wider: names with ``..`` and absolute names, symlink chains in one layer and across
layers, hard links to outside / through symlinks / into lower layers, whiteouts and opaque
markers aimed outside, devices, long names and link targets, xattrs.

``images.malicious_layers`` holds the first cases (kept where other suites use them); this
module adds the rest.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixtures import images
from tests.fixtures.images import MaliciousLayer, TarEntry, d, f, hardlink, symlink


def _m(name: str, description: str, entries: list[TarEntry], outside: list[Path],
       lowers: list[list[TarEntry]] | None = None) -> MaliciousLayer:
    return MaliciousLayer(name, description, tuple(entries), tuple(outside),
                          tuple(tuple(lo) for lo in lowers or ()))


def extra_breakouts(sentinel: Path) -> list[MaliciousLayer]:
    s = str(sentinel).strip("/")
    up = "../" * 24
    parent, name = str(sentinel.parent).strip("/"), sentinel.name
    long_dir = "/".join(["n" * 200] * 6)  # > 1000 characters: a PAX path header
    victim = sentinel / "victim"
    return [
        # -- names ----------------------------------------------------------------------------
        _m("dotdot-dir", "a directory ../../…/sentinel/newdir", [d(f"{up}{s}/newdir")], [sentinel / "newdir"]),
        _m("dotdot-symlink-entry", "a symlink ../../…/sentinel/link -> /", [symlink(f"{up}{s}/link", "/")],
           [sentinel / "link"]),
        _m("dotdot-hardlink-entry", "a hard link ../../…/sentinel/hl -> t (a file of the same layer)",
           [f("t", "t\n"), hardlink(f"{up}{s}/hl", "t")], [sentinel / "hl"]),
        _m("absolute-dir", "a directory /sentinel/absdir", [d(f"/{s}/absdir")], [sentinel / "absdir"]),
        _m("absolute-symlink-entry", "a symlink /sentinel/abslink -> /", [symlink(f"/{s}/abslink", "/")],
           [sentinel / "abslink"]),
        _m("dot-slash-traversal", "./../../…/sentinel/dotslash", [f(f"./{up}{s}/dotslash", "pwned\n")],
           [sentinel / "dotslash"]),
        _m("double-slashes", "//sentinel//dbl", [f(f"//{s}//dbl", "pwned\n")], [sentinel / "dbl"]),
        _m("long-name-traversal", "a 1200-character name (PAX path) that climbs out",
           [f(f"{long_dir}/{up}{up}{s}/long", "pwned\n")], [sentinel / "long"]),
        _m("non-ascii-traversal", "a non-ASCII name (PAX path) that climbs out",
           [f(f"{up}{s}/ünïcödé", "pwned\n")], [sentinel / "ünïcödé"]),
        # -- symlinks -------------------------------------------------------------------------
        _m("symlink-to-root-then-path", "symlink r -> /, then r/sentinel/via-root",
           [symlink("r", "/"), f(f"r/{s}/via-root", "pwned\n")], [sentinel / "via-root"]),
        _m("symlink-dotdot-chain", "a -> .., b -> a/a/a/a/a/a, then b/sentinel/chain",
           [symlink("a", ".."), symlink("b", "a/a/a/a/a/a/a/a"), f(f"b/{s}/chain", "pwned\n")],
           [sentinel / "chain"]),
        _m("symlink-loop", "l1 -> l2 -> l1, then l1/x", [symlink("l1", "l2"), symlink("l2", "l1"), f("l1/x", "p\n")],
           []),
        _m("symlink-in-subdir-climbs", "x/up -> ../../../.., then x/up/sentinel/x-up",
           [d("x"), symlink("x/up", "../../../../../../../.."), f(f"x/up/{s}/x-up", "pwned\n")],
           [sentinel / "x-up"]),
        _m("symlink-replaced-by-dir", "symlink d -> /sentinel, then dir d and d/victim",
           [symlink("d", f"/{s}"), d("d", 0o777), f("d/victim", "pwned\n")], [victim]),
        _m("symlink-two-hops-abs", "a/b -> /, c -> a/b/sentinel, then c/two-hops",
           [d("a"), symlink("a/b", "/"), symlink("c", f"a/b/{s}"), f("c/two-hops", "pwned\n")],
           [sentinel / "two-hops"]),
        _m("symlink-long-target", "a symlink whose 1300-character target climbs out, then a file through it",
           [symlink("lt", f"{long_dir}/{up}{up}{s}"), f("lt/long-target", "pwned\n")],
           [sentinel / "long-target"]),
        _m("dir-replaced-by-symlink", "dir x with a file, then symlink x -> /sentinel, then x/victim",
           [d("x"), f("x/keep", "k\n"), symlink("x", f"/{s}"), f("x/victim", "pwned\n")], [victim]),
        # -- hard links -----------------------------------------------------------------------
        _m("hardlink-through-dotdot-symlink", "symlink up -> ../../…, hardlink h -> up/sentinel/victim",
           [symlink("up", up), hardlink("h", f"up/{s}/victim")], [victim]),
        _m("hardlink-to-symlink-outside", "symlink s -> /sentinel/victim, hardlink h -> s (links the link)",
           [symlink("s", f"/{s}/victim"), hardlink("h", "s")], [victim]),
        _m("hardlink-to-symlink-then-write", "symlink s -> /sentinel/victim, hardlink h -> s, then a file h",
           [symlink("s", f"/{s}/victim"), hardlink("h", "s"), f("h", "pwned\n")], [victim]),
        _m("hardlink-to-directory", "dir dd, hardlink h -> dd", [d("dd"), hardlink("h", "dd")], []),
        _m("hardlink-to-missing", "hardlink h -> nope", [hardlink("h", "nope")], []),
        _m("hardlink-into-lower-layer", "hardlink h -> bin/busybox, a file of the image's first layer",
           [hardlink("h", "bin/busybox")], []),
        # -- whiteouts ------------------------------------------------------------------------
        _m("whiteout-sentinel-dir", "../../…/parent/.wh.<sentinel> (delete the whole sentinel dir)",
           [f(f"{up}{parent}/.wh.{name}")], [victim]),
        _m("whiteout-absolute", "/sentinel/.wh.victim", [f(f"/{s}/.wh.victim")], [victim]),
        _m("opaque-outside", "../../…/sentinel/.wh..wh..opq (empty the sentinel dir)",
           [f(f"{up}{s}/.wh..wh..opq")], [victim]),
        _m("opaque-through-symlink", "symlink l -> /sentinel, then l/.wh..wh..opq",
           [symlink("l", f"/{s}"), f("l/.wh..wh..opq")], [victim]),
        _m("whiteout-through-lower-symlink", "layer 1: symlink l -> /sentinel; layer 2: l/.wh.victim",
           [f("l/.wh.victim")], [victim], [[symlink("l", f"/{s}")]]),
        _m("opaque-through-lower-symlink", "layer 1: symlink l -> /sentinel; layer 2: l/.wh..wh..opq",
           [f("l/.wh..wh..opq")], [victim], [[symlink("l", f"/{s}")]]),
        # -- devices --------------------------------------------------------------------------
        _m("block-device", "a block device 8:0 inside the image",
           [TarEntry("dev-sda", "block", mode=0o660, devmajor=8, devminor=0)], []),
        _m("device-outside", "a character device ../../…/sentinel/null",
           [TarEntry(f"{up}{s}/null", "char", mode=0o666, devmajor=1, devminor=3)], [sentinel / "null"]),
        _m("fifo-through-symlink", "symlink l -> /sentinel, then a fifo l/fifo",
           [symlink("l", f"/{s}"), TarEntry("l/fifo", "fifo", mode=0o600)], [sentinel / "fifo"]),
        # -- metadata -------------------------------------------------------------------------
        _m("xattr-forged-opaque", "a directory carrying trusted.overlay.opaque=y in its PAX headers",
           [d("o", xattrs={"trusted.overlay.opaque": "y"}), f("o/x", "x\n")], []),
        _m("chmod-through-symlink", "symlink m -> /sentinel/victim, then dir m 0777 (must not chmod the victim)",
           [symlink("m", f"/{s}/victim"), d("m", 0o777)], [victim]),
        _m("setuid-through-symlink", "symlink m -> /sentinel/victim, then a setuid file m",
           [symlink("m", f"/{s}/victim"), f("m", "pwned\n", 0o4755)], [victim]),
        # -- across layers --------------------------------------------------------------------
        _m("lower-dir-replaced-by-symlink", "layer 1: dir d/f; layer 2: symlink d -> /sentinel, then d/victim",
           [symlink("d", f"/{s}"), f("d/victim", "pwned\n")], [victim], [[d("d"), f("d/f", "f\n")]]),
        _m("lower-symlink-dir-entry", "layer 1: symlink d -> /sentinel; layer 2: a directory d/sub",
           [d("d/sub", 0o777)], [sentinel / "sub"], [[symlink("d", f"/{s}")]]),
    ]


def breakout_layers(sentinel: Path) -> list[MaliciousLayer]:
    """Every case of the suite (names are unique)."""
    cases = [*images.malicious_layers(sentinel), *extra_breakouts(sentinel)]
    assert len({c.name for c in cases}) == len(cases)
    return cases
