"""pycrictl pods / runp / stopp / rmp / inspectp: pod sandboxes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ... import errdefs
from ...client.cri import (
    POD_STATES,
    CriClient,
    api_pb2,
    load_config_file,
    message_to_dict,
    parse_info,
    pod_config_from_dict,
    pod_state_name,
)
from ..common import table
from ._format import ago, parse_label_filters, pattern_matcher, pick_state, print_json, short_state, trunc


def register(sub: Any) -> None:
    p = sub.add_parser("pods", help="list pod sandboxes")
    p.add_argument("--id", default="", help="only the pod with this id (or id prefix)")
    p.add_argument("--name", default="", help="only pods whose name matches this regular expression")
    p.add_argument("--namespace", default="", help="only pods whose namespace matches this regular expression")
    p.add_argument("-s", "--state", default="", help="only pods in this state: ready, notready")
    p.add_argument("--label", action="append", default=[], help="only pods with label key=value (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="only pod ids")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("-l", "--latest", action="store_true", help="only the most recently created pod")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=pods)

    p = sub.add_parser("runp", help="run a pod sandbox from a config file (JSON or YAML)")
    p.add_argument("config", metavar="POD_CONFIG")
    p.add_argument("--runtime", default="", help="runtime handler (RuntimeClass) to use")
    p.set_defaults(func=runp)

    p = sub.add_parser("stopp", help="stop pod sandboxes (and their containers)")
    p.add_argument("pods", nargs="+", metavar="POD_ID")
    p.set_defaults(func=stopp)

    p = sub.add_parser("rmp", help="remove pod sandboxes")
    p.add_argument("pods", nargs="*", metavar="POD_ID")
    p.add_argument("-f", "--force", action="store_true", help="stop ready pods (and their containers) first")
    p.add_argument("-a", "--all", action="store_true", help="remove every pod (ready ones need -f)")
    p.set_defaults(func=rmp)

    p = sub.add_parser("inspectp", help="show pod sandboxes' status and info (JSON)")
    p.add_argument("pods", nargs="+", metavar="POD_ID")
    p.add_argument("-q", "--quiet", action="store_true", help="only the status, not the verbose info")
    p.set_defaults(func=inspectp)


async def pods(args: argparse.Namespace, client: CriClient) -> int:
    flt = api_pb2.PodSandboxFilter(id=args.id, label_selector=parse_label_filters(args.label))
    state = pick_state(args.state, POD_STATES, "SANDBOX_", "pod")
    if state is not None:
        flt.state.CopyFrom(api_pb2.PodSandboxStateValue(state=state))  # type: ignore[arg-type]
    name_ok, namespace_ok = pattern_matcher(args.name, "name"), pattern_matcher(args.namespace, "namespace")
    items = await client.list_pod_sandbox(flt)
    items = [p for p in items if name_ok(p.metadata.name) and namespace_ok(p.metadata.namespace)]
    items.sort(key=lambda p: p.created_at, reverse=True)
    if args.latest:
        items = items[:1]
    if args.output == "json":
        print_json({"items": [message_to_dict(p) for p in items]})
        return 0
    if args.quiet:
        for p in items:
            print(p.id)
        return 0
    rows = [[trunc(p.id, args.no_trunc), ago(p.created_at), short_state(pod_state_name(p.state), "SANDBOX_"),
             p.metadata.name, p.metadata.namespace, p.metadata.attempt, p.runtime_handler or "(default)"]
            for p in items]
    table(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"], rows)
    return 0


async def load_pod_config(path: str) -> api_pb2.PodSandboxConfig:
    return pod_config_from_dict(await asyncio.to_thread(load_config_file, path))


async def runp(args: argparse.Namespace, client: CriClient) -> int:
    config = await load_pod_config(args.config)
    pod_id = await client.run_pod_sandbox(config, args.runtime)
    print(pod_id)
    return 0


async def stopp(args: argparse.Namespace, client: CriClient) -> int:
    for pod in args.pods:
        await client.stop_pod_sandbox(pod)
        print(f"Stopped sandbox {pod}")
    return 0


async def rmp(args: argparse.Namespace, client: CriClient) -> int:
    """crictl's rules: a ready pod is stopped first only with -f; -a takes every pod (none: nothing
    to do); a missing pod is removed already (CRI)."""
    if args.all and args.pods:
        raise errdefs.InvalidArgument("rmp: name pods or use --all, not both")
    targets = [p.id for p in await client.list_pod_sandbox()] if args.all else list(args.pods)
    if not targets:
        if args.all:
            print("No pods to remove", file=sys.stderr)
            return 0
        raise errdefs.InvalidArgument("rmp: name a pod, or use --all")
    failed = 0
    for pod in dict.fromkeys(targets):
        try:
            st = (await client.pod_sandbox_status(pod)).status
        except errdefs.NotFound:
            print(f"Removed sandbox {pod}")  # CRI: removing a missing pod succeeds
            continue
        try:
            if st.state == POD_STATES["SANDBOX_READY"]:
                if not args.force:
                    print(f"pycrictl: pod {pod} ({st.metadata.name}) is ready: stop it first (stopp), or use rmp -f",
                          file=sys.stderr)
                    failed += 1
                    continue
                await client.stop_pod_sandbox(st.id)
            await client.remove_pod_sandbox(st.id)
        except errdefs.ContainerdError as exc:
            print(f"pycrictl: removing pod {pod}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"Removed sandbox {pod}")
    return 1 if failed else 0


async def inspectp(args: argparse.Namespace, client: CriClient) -> int:
    for pod in args.pods:
        st = await client.pod_sandbox_status(pod, verbose=not args.quiet)
        out: dict[str, Any] = {"status": message_to_dict(st.status)}
        out.update(parse_info(st.info))  # like crictl: each info key at the top level
        print_json(out)
    return 0
