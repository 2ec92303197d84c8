"""CRI ``cni.conf_template``: the CNI config that containerd writes from a template once the
kubelet sends the node's pod CIDR (``UpdateRuntimeConfig``) and no CNI config is in place yet.

containerd 1.6 executes the file as a Go ``text/template`` with three fields: ``.PodCIDR`` (the
first CIDR), ``.PodCIDRRanges`` (all of them) and ``.Routes`` (``0.0.0.0/0`` when a range is
IPv4, ``::/0`` when one is IPv6), and writes the result to ``<conf_dir>/10-containerd-net.conflist``
(mode 0644, atomically).  Templates in the wild (containerd's own docs and kubenet-style
setups) use a small part of the language::

    "ranges": [{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}],
    "routes": [{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}]

That part is implemented here, with Go's meaning: text; ``{{.PodCIDR}}``, ``{{.PodCIDRRanges}}``,
``{{.Routes}}`` (a list prints as Go does, ``[a b]``), ``{{.}}``, ``{{$}}``, ``{{$.Field}}``,
``{{$var}}``; ``{{range [$i, ]$v := LIST}}``/``{{range LIST}}`` with ``{{else}}``;
``{{if X}}``/``{{else}}``/``{{end}}`` (false: empty string or list, index 0); comments
``{{/* ... */}}``; the trim markers ``{{-`` and ``-}}``.  Anything else (functions, pipes,
literals, ``with``, ``define``...) is refused with ``TemplateError`` naming the action, never
passed through or guessed at.  Pure: no I/O but ``write_conf`` (blocking; call it in a thread).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF_FILE_NAME = "10-containerd-net.conflist"
FIELDS = ("PodCIDR", "PodCIDRRanges", "Routes")
ZERO_V4 = "0.0.0.0/0"
ZERO_V6 = "::/0"


class TemplateError(ValueError):
    """A template this renderer refuses, or that does not parse; the message says where and why."""


def routes_for(cidrs: Sequence[str]) -> list[str]:
    """containerd's routes for the pod CIDRs: the default route of each IP family present.
    ValueError for a CIDR that does not parse."""
    v4 = v6 = False
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)  # Go's ParseCIDR accepts host bits too
        if net.version == 4:
            v4 = True
        else:
            v6 = True
    return [r for r, present in ((ZERO_V4, v4), (ZERO_V6, v6)) if present]


def template_data(pod_cidrs: str) -> dict[str, Any]:
    """The template's data from the kubelet's ``pod_cidr`` (comma-separated, as containerd splits it)."""
    cidrs = [c.strip() for c in pod_cidrs.split(",")]
    return {"PodCIDR": cidrs[0], "PodCIDRRanges": cidrs, "Routes": routes_for(cidrs)}


# -- parsing ------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_VAR = r"\$[A-Za-z_][A-Za-z0-9_]*"
_RANGE = re.compile(rf"range\s+(?:({_VAR})\s*(?:,\s*({_VAR})\s*)?:=\s*)?(\S+)")
_IF = re.compile(r"if\s+(\S+)")
_OPERAND = re.compile(rf"\.|\.[A-Za-z_][A-Za-z0-9_]*|\$|\$\.[A-Za-z_][A-Za-z0-9_]*|{_VAR}")


@dataclass
class _Text:
    text: str


@dataclass
class _Print:
    operand: str
    where: str


@dataclass
class _If:
    operand: str
    where: str
    then: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


@dataclass
class _Range:
    index_var: str | None
    value_var: str | None
    operand: str
    where: str
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


_Node = _Text | _Print | _If | _Range


def _line_of(source: str, pos: int) -> int:
    return source.count("\n", 0, pos) + 1


def _operand(text: str, where: str) -> str:
    if not _OPERAND.fullmatch(text):
        raise TemplateError(f"{where}: {{{{{text}}}}} is not supported: cni.conf_template takes only the fields "
                            f"{', '.join('.' + f for f in FIELDS)}, variables, range, if, else and end")
    return text


def parse(source: str, name: str = "template") -> list[_Node]:
    """The template's tree; TemplateError for syntax this renderer does not implement."""
    root: list[_Node] = []
    # stack of (node, which branch list is open)
    stack: list[tuple[_If | _Range, list[_Node]]] = []

    def out() -> list[_Node]:
        return stack[-1][1] if stack else root

    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            out().append(_Text(text))
        pos = m.end()
        trim_next = bool(m.group(3))
        where = f"{name}:{_line_of(source, m.start())}"
        action = m.group(2).strip()
        if _COMMENT.fullmatch(action):
            continue
        if action == "end":
            if not stack:
                raise TemplateError(f"{where}: unexpected {{{{end}}}}")
            stack.pop()
            continue
        if action == "else":
            if not stack:
                raise TemplateError(f"{where}: unexpected {{{{else}}}}")
            node, branch = stack[-1]
            target = node.otherwise
            if branch is target:
                raise TemplateError(f"{where}: a second {{{{else}}}}")
            stack[-1] = (node, target)
            continue
        rm = _RANGE.fullmatch(action)
        if rm:
            first, second, operand = rm.groups()
            index_var, value_var = (first, second) if second else (None, first)
            rng = _Range(index_var, value_var, _operand(operand, where), where)
            out().append(rng)
            stack.append((rng, rng.body))
            continue
        im = _IF.fullmatch(action)
        if im:
            cond = _If(_operand(im.group(1), where), where)
            out().append(cond)
            stack.append((cond, cond.then))
            continue
        out().append(_Print(_operand(action, where), where))
    if stack:
        raise TemplateError(f"{name}: {stack[-1][0].where}: unclosed action (no {{{{end}}}})")
    if "{{" in source[pos:]:
        raise TemplateError(f"{name}:{_line_of(source, pos + source[pos:].index('{{'))}: unclosed action")
    text = source[pos:]
    if trim_next:
        text = text.lstrip(" \t\r\n")
    if text:
        root.append(_Text(text))
    return root


# -- executing ----------------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    return bool(value)  # Go: false, 0, "" and empty lists are false


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        raise TemplateError("printing the whole template data is not supported")
    return str(value)


def _eval(operand: str, dot: Any, root: Mapping[str, Any], scope: Mapping[str, Any], where: str) -> Any:
    if operand == ".":
        return dot
    if operand == "$":
        return root
    if operand.startswith("$."):
        base, name = root, operand[2:]
    elif operand.startswith("$"):
        if operand not in scope:
            raise TemplateError(f"{where}: undefined variable {operand}")
        return scope[operand]
    else:
        base, name = dot, operand[1:]
    if not isinstance(base, Mapping):
        raise TemplateError(f"{where}: can't evaluate field {name} in type string")
    if name not in base:
        raise TemplateError(f"{where}: can't evaluate field {name}: the template data has only "
                            f"{', '.join(FIELDS)}")
    return base[name]


def _run(nodes: Sequence[_Node], dot: Any, root: Mapping[str, Any], scope: dict[str, Any], out: list[str]) -> None:
    for n in nodes:
        if isinstance(n, _Text):
            out.append(n.text)
        elif isinstance(n, _Print):
            out.append(_show(_eval(n.operand, dot, root, scope, n.where)))
        elif isinstance(n, _If):
            value = _eval(n.operand, dot, root, scope, n.where)
            _run(n.then if _truth(value) else n.otherwise, dot, root, dict(scope), out)
        else:
            items = _eval(n.operand, dot, root, scope, n.where)
            if not isinstance(items, list | tuple):
                raise TemplateError(f"{n.where}: range can't iterate over {items!r}")
            if not items:
                _run(n.otherwise, dot, root, dict(scope), out)
            for i, item in enumerate(items):
                inner = dict(scope)
                if n.index_var:
                    inner[n.index_var] = i
                if n.value_var:
                    inner[n.value_var] = item
                _run(n.body, item, root, inner, out)


def render(source: str, data: Mapping[str, Any], name: str = "template") -> str:
    out: list[str] = []
    _run(parse(source, name), data, data, {"$": data}, out)
    return "".join(out)


def write_conf(template_path: str, conf_dir: str, pod_cidrs: str) -> Path:
    """Render ``template_path`` for ``pod_cidrs`` into ``<conf_dir>/10-containerd-net.conflist``
    (0644, written to a temporary file and renamed); returns the file.  Blocking."""
    data = template_data(pod_cidrs)
    with open(template_path, encoding="utf-8") as fh:
        source = fh.read()
    text = render(source, data, name=template_path)
    os.makedirs(conf_dir, mode=0o755, exist_ok=True)
    target = Path(conf_dir) / CONF_FILE_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{CONF_FILE_NAME}.", dir=conf_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target

