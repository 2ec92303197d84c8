"""Write a busybox image archive, built from Debian's busybox-static, for ``pyctr images import``.

    .venv/bin/python -m contrib.busybox_image /tmp/busybox.tar
    pyctr images import /tmp/busybox.tar          # docker.io/library/busybox:latest

One layer (the static busybox binary and its applet links), ``Cmd ["sh"]``; the same image
the tests and ``make demo`` use, so nothing has to come from the network.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.images import build_busybox_image, export_archive  # noqa: E402

IMAGE = "docker.io/library/busybox:latest"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        raise SystemExit("usage: python -m contrib.busybox_image OUT.tar")
    out = Path(args[0])
    if not Path("/bin/busybox").exists():
        raise SystemExit("busybox_image: /bin/busybox is missing: apt-get install busybox-static (make deps)")
    work = Path(tempfile.mkdtemp(prefix="pycd-busybox-"))
    try:
        export_archive(build_busybox_image(work / "layout", name=IMAGE), out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{out}: {IMAGE}")


if __name__ == "__main__":
    main()
