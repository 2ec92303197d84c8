"""Regenerate src/pycontainerd/api from proto/ (grpcio-tools + mypy-protobuf).

With --check, generate into a temporary directory and fail when the committed code differs:
CI uses this to catch stale generated modules.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT_PKG = Path("pycontainerd") / "api"


def _include_dirs() -> list[str]:
    import google.rpc  # googleapis-common-protos ships google/rpc/*.proto next to its modules
    import grpc_tools

    gapi = Path(google.rpc.__path__[0]).parent.parent
    return [str(PROTO), str(Path(grpc_tools.__file__).parent / "_proto"), str(gapi)]


def generate(out: Path) -> None:
    from grpc_tools import protoc

    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    if not files:
        return
    plugin = shutil.which(
        "protoc-gen-mypy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    args = ["protoc", *[f"-I{d}" for d in _include_dirs()], f"--python_out={out}", f"--grpc_python_out={out}"]
    if plugin:
        args += [f"--plugin=protoc-gen-mypy={plugin}", f"--mypy_out={out}"]
        grpc_plugin = Path(plugin).with_name("protoc-gen-mypy_grpc")
        if grpc_plugin.exists():
            args += [f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}", f"--mypy_grpc_out={out}"]
    rc = protoc.main([*args, *files])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    # every generated directory is a package
    for d in (out / OUT_PKG).rglob("*"):
        if d.is_dir():
            (d / "__init__.py").touch()
    (out / OUT_PKG / "__init__.py").write_text('"""Generated protobuf and gRPC modules (make proto); do not edit."""\n')


def _compare(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    diffs += [f"only in generated: {x}" for x in cmp.left_only]
    diffs += [f"only in tree: {x}" for x in cmp.right_only]
    diffs += [f"differs: {x}" for x in cmp.diff_files]
    for sub in cmp.common_dirs:
        diffs += [f"{sub}/{d}" for d in _compare(a / sub, b / sub)]
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ns = ap.parse_args()
    target = ROOT / "src" / OUT_PKG
    if ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diffs = _compare(Path(tmp) / OUT_PKG, target)
        if diffs:
            print("generated code is stale; run `make proto`:\n  " + "\n  ".join(diffs), file=sys.stderr)
            raise SystemExit(1)
        print("generated code is up to date")
        return
    if target.exists():
        shutil.rmtree(target)
    generate(ROOT / "src")


if __name__ == "__main__":
    main()
