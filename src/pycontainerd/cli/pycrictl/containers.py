"""pycrictl ps / create / start / stop / rm / inspect: containers in pods."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from ... import errdefs
from ...client.cri import (
    CONTAINER_STATES,
    CriClient,
    api_pb2,
    container_config_from_dict,
    container_state_name,
    load_config_file,
    message_to_dict,
    parse_info,
)
from ..common import go_duration, size_bytes, table
from ._format import TRUNC, ago, parse_label_filters, pattern_matcher, pick_state, print_json, short_state, trunc
from .images import pull_auth
from .pods import load_pod_config


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    p.add_argument("-q", "--quiet", action="store_true", help="only container ids")
    p.add_argument("-p", "--pod", default="", help="only containers of this pod id (or id prefix)")
    p.add_argument("--id", default="", help="only the container with this id (or id prefix)")
    p.add_argument("--name", default="", help="only containers whose name matches this regular expression")
    p.add_argument("--image", default="", help="only containers of images matching this regular expression")
    p.add_argument("-s", "--state", default="", help="only containers in this state: created, running, exited")
    p.add_argument("--label", action="append", default=[], help="only containers with label key=value")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("-l", "--latest", action="store_true", help="only the most recently created container")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=ps)

    p = sub.add_parser("create", help="create a container in a pod (pulls the image if it is missing)")
    p.add_argument("pod", metavar="POD_ID")
    p.add_argument("container_config", metavar="CONTAINER_CONFIG")
    p.add_argument("pod_config", metavar="POD_CONFIG")
    _pull_flags(p, "do not pull a missing image",
                "pull the image even when the runtime has it (config: pull-image-on-create)")
    p.set_defaults(func=create)

    p = sub.add_parser("run", help="run a container in a new pod: runp + create + start (JSON or YAML configs)",
                       description="Run a new pod from POD_CONFIG, create the container of CONTAINER_CONFIG in "
                                   "it (pulling its image when the runtime lacks it) and start it; prints the "
                                   "container's id (the pod's on stderr).  If the container cannot be created "
                                   "or started, the pod made for it is removed again.")
    p.add_argument("container_config", metavar="CONTAINER_CONFIG")
    p.add_argument("pod_config", metavar="POD_CONFIG")
    p.add_argument("-r", "--runtime", default="", help="runtime handler (RuntimeClass) to use")
    _pull_flags(p, "do not pull the image (config: disable-pull-on-run)", "pull the image even when the runtime "
                "has it")
    p.set_defaults(func=run)

    p = sub.add_parser("update", help="update the CPU and memory limits of running (or created) containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER_ID")
    p.add_argument("--cpu-period", type=int, default=0, help="CPU CFS period in microseconds")
    p.add_argument("--cpu-quota", type=int, default=0, help="CPU CFS quota in microseconds per period")
    p.add_argument("--cpu-share", type=int, default=0, help="CPU shares (relative weight)")
    p.add_argument("--cpuset-cpus", default="", help="CPUs the container may use, e.g. 0-1")
    p.add_argument("--cpuset-mems", default="", help="memory nodes the container may use, e.g. 0")
    p.add_argument("--memory", type=size_bytes, default=0,
                   help="memory limit: bytes, or with a unit (512k, 64m, 1g)")
    p.add_argument("--oom-score-adj", type=int, default=None, help="OOM killer score adjustment")
    p.set_defaults(func=update)

    p = sub.add_parser("start", help="start created containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER_ID")
    p.set_defaults(func=start)

    p = sub.add_parser("stop", help="stop containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER_ID")
    p.add_argument("--timeout", dest="grace", type=int, default=10,
                   help="seconds between the stop signal and SIGKILL (default 10)")
    p.set_defaults(func=stop)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("containers", nargs="*", metavar="CONTAINER_ID")
    p.add_argument("-f", "--force", action="store_true", help="stop running containers first")
    p.add_argument("-a", "--all", action="store_true", help="remove every container")
    p.set_defaults(func=rm)

    p = sub.add_parser("inspect", help="show containers' status and info (JSON)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER_ID")
    p.add_argument("-q", "--quiet", action="store_true", help="only the status, not the verbose info")
    p.set_defaults(func=inspect)


def _pull_flags(p: Any, no_pull: str, with_pull: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-pull", action="store_true", help=no_pull)
    g.add_argument("--with-pull", action="store_true", help=with_pull)
    p.add_argument("--creds", default="", help="registry credentials USERNAME[:PASSWORD] for the pull")
    p.add_argument("--auth", default="", help="base64 of USERNAME:PASSWORD for the pull")
    p.add_argument("-u", "--username", default="", help="registry user name (password prompted)")
    p.add_argument("--pull-timeout", type=go_duration, default=0.0,
                   help="give up the pull after this long, a Go duration (default: no limit)")


def _image_col(c: api_pb2.Container, names: dict[str, str], no_trunc: bool) -> str:
    """The image's name when the runtime knows one (it reports ids), else the short id."""
    ref = c.image.image or c.image_ref
    if ref in names:
        return names[ref]
    return trunc(ref, no_trunc) if ref.startswith("sha256:") else ref


async def ps(args: argparse.Namespace, client: CriClient) -> int:
    flt = api_pb2.ContainerFilter(id=args.id, pod_sandbox_id=args.pod, label_selector=parse_label_filters(args.label))
    state = pick_state(args.state, CONTAINER_STATES, "CONTAINER_", "container")
    if state is None and not args.all and not args.latest:
        state = CONTAINER_STATES["CONTAINER_RUNNING"]
    if state is not None:
        flt.state.CopyFrom(api_pb2.ContainerStateValue(state=state))  # type: ignore[arg-type]
    name_ok, image_ok = pattern_matcher(args.name, "name"), pattern_matcher(args.image, "image")
    items = await client.list_containers(flt)
    items = [c for c in items if name_ok(c.metadata.name) and image_ok(c.image.image)]
    items.sort(key=lambda c: c.created_at, reverse=True)
    if args.latest:
        items = items[:1]
    if args.output == "json":
        print_json({"containers": [message_to_dict(c) for c in items]})
        return 0
    if args.quiet:
        for c in items:
            print(c.id)
        return 0
    pod_names = {p.id: p.metadata.name for p in await client.list_pod_sandbox()} if items else {}
    image_names = {i.id: (list(i.repo_tags) or list(i.repo_digests) or [i.id])[0]
                   for i in await client.list_images()} if items else {}
    rows = [[trunc(c.id, args.no_trunc), _image_col(c, image_names, args.no_trunc), ago(c.created_at),
             short_state(container_state_name(c.state), "CONTAINER_"), c.metadata.name, c.metadata.attempt,
             trunc(c.pod_sandbox_id, args.no_trunc), pod_names.get(c.pod_sandbox_id, "unknown")]
            for c in items]
    table(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"], rows)
    return 0


async def _pull_for(args: argparse.Namespace, client: CriClient, config: api_pb2.ContainerConfig,
                    sandbox: api_pb2.PodSandboxConfig, *, always: bool) -> None:
    image = config.image.image
    if not always and (await client.image_status(image)).HasField("image"):
        return
    print(f"pulling {image} ...", file=sys.stderr)
    await client.pull_image(image, pull_auth(args), sandbox, timeout=args.pull_timeout or None)


async def _load_container_config(path: str) -> api_pb2.ContainerConfig:
    return container_config_from_dict(await asyncio.to_thread(load_config_file, path))


async def create(args: argparse.Namespace, client: CriClient) -> int:
    config = await _load_container_config(args.container_config)
    sandbox = await load_pod_config(args.pod_config)
    if not args.no_pull:
        await _pull_for(args, client, config, sandbox,
                        always=args.with_pull or getattr(args, "pull_image_on_create", False))
    print(await client.create_container(args.pod, config, sandbox))
    return 0


async def run(args: argparse.Namespace, client: CriClient) -> int:
    config = await _load_container_config(args.container_config)
    sandbox = await load_pod_config(args.pod_config)
    if args.with_pull or not (args.no_pull or getattr(args, "disable_pull_on_run", False)):
        await _pull_for(args, client, config, sandbox, always=args.with_pull)
    pod = await client.run_pod_sandbox(sandbox, args.runtime)
    print(f"pod {pod}", file=sys.stderr)
    try:
        cid = await client.create_container(pod, config, sandbox)
        await client.start_container(cid)
    except BaseException as exc:
        with contextlib.suppress(errdefs.ContainerdError):
            await client.stop_pod_sandbox(pod)
            await client.remove_pod_sandbox(pod)
        if isinstance(exc, errdefs.ContainerdError):
            exc.message = f"{exc.message} (the pod {pod[:TRUNC]} made for it was removed)"
        raise
    print(cid)
    return 0


async def update(args: argparse.Namespace, client: CriClient) -> int:
    res = api_pb2.LinuxContainerResources(
        cpu_period=args.cpu_period, cpu_quota=args.cpu_quota, cpu_shares=args.cpu_share,
        cpuset_cpus=args.cpuset_cpus, cpuset_mems=args.cpuset_mems, memory_limit_in_bytes=args.memory,
        oom_score_adj=args.oom_score_adj or 0)
    if res == api_pb2.LinuxContainerResources() and args.oom_score_adj is None:
        raise errdefs.InvalidArgument("update: name a limit to change, e.g. --memory 64m or --cpu-quota 50000 "
                                      "(pycrictl update --help lists them)")
    for cid in args.containers:
        await client.update_container_resources(cid, res)
        print(cid)
    return 0


async def start(args: argparse.Namespace, client: CriClient) -> int:
    for cid in args.containers:
        await client.start_container(cid)
        print(cid)
    return 0


async def stop(args: argparse.Namespace, client: CriClient) -> int:
    for cid in args.containers:
        await client.stop_container(cid, args.grace)
        print(cid)
    return 0


async def rm(args: argparse.Namespace, client: CriClient) -> int:
    targets = list(args.containers)
    if args.all:
        targets += [c.id for c in await client.list_containers()]
    if not targets:
        raise errdefs.InvalidArgument("rm: name a container, or use --all")
    failed = 0
    for cid in dict.fromkeys(targets):
        try:
            st = await client.container_status(cid)
        except errdefs.NotFound:
            print(cid)  # CRI: removing a missing container succeeds
            continue
        if st.status.state == CONTAINER_STATES["CONTAINER_RUNNING"]:
            if not (args.force or args.all):
                print(f"pycrictl: container {cid} is running: stop it first, or use rm -f", file=sys.stderr)
                failed += 1
                continue
            await client.stop_container(cid, 0)
        await client.remove_container(cid)
        print(cid)
    return 1 if failed else 0


async def inspect(args: argparse.Namespace, client: CriClient) -> int:
    for cid in args.containers:
        st = await client.container_status(cid, verbose=not args.quiet)
        out: dict[str, Any] = {"status": message_to_dict(st.status)}
        out.update(parse_info(st.info))  # like crictl: each info key at the top level
        print_json(out)
    return 0
