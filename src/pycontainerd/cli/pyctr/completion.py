"""pyctr completion bash|zsh: print a shell completion script (``eval "$(pyctr completion bash)"``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..common import completion_script


def register(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a bash or zsh completion script",
                       description='Load it with: eval "$(pyctr completion bash)" (or zsh)')
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=None, quick=quick)


def quick(args: argparse.Namespace) -> int:
    from .main import build_parser

    print(completion_script("pyctr", build_parser(["--help"]), args.shell), end="")
    return 0
