"""The daemon's own gRPC server (``pycontainerd.rpc``) as grpc's client sees it: status codes and
their wording, metadata, deadlines, size limits, compression, streaming both ways, cancellation,
observers and graceful stop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from pycontainerd import errdefs
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.rpc import EncodedStream, Method, Server, ServicerContext, StatusCode
from pycontainerd.rpc.server import parse_timeout, percent_encode

Scenario = Callable[[grpc.aio.Channel, Server], Awaitable[None]]


class _Version:
    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()

    async def Version(self, request: empty_pb2.Empty, context: ServicerContext) -> version_pb2.VersionResponse:
        self.metadata = context.invocation_metadata()
        return version_pb2.VersionResponse(version="v", revision="r" * 100)


class _Events:
    """Publish fails the errdefs way, Subscribe streams until cancelled (its finally is observed)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.deadline: float | None = None

    async def Publish(self, request: events_pb2.PublishRequest, context: ServicerContext) -> empty_pb2.Empty:
        raise errdefs.NotFound(f"topic {request.topic} ünknown")

    async def Subscribe(self, request: events_pb2.SubscribeRequest, context: ServicerContext
                        ) -> AsyncIterator[events_pb2.Envelope]:
        self.deadline = context.time_remaining()
        try:
            yield events_pb2.Envelope(topic="/first")
            await asyncio.Event().wait()
        finally:
            self.closed.set()


class _Content:
    """Write echoes each request's size; Read streams ``size`` bytes in 1 MiB messages."""

    async def Write(self, requests: AsyncIterator[content_pb2.WriteContentRequest], context: ServicerContext
                    ) -> AsyncIterator[content_pb2.WriteContentResponse]:
        total = 0
        async for req in requests:
            total += len(req.data)
            yield content_pb2.WriteContentResponse(offset=total)

    async def Read(self, request: content_pb2.ReadContentRequest, context: ServicerContext
                   ) -> AsyncIterator[content_pb2.ReadContentResponse]:
        chunk = b"x" * (1 << 20)
        for off in range(0, request.size, len(chunk)):
            yield content_pb2.ReadContentResponse(offset=off, data=chunk[: request.size - off])


class _Counting:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def started(self, method: Method) -> None:
        self.events.append(("started", method.name, method.kind))

    def msg_received(self, method: Method) -> None:
        self.events.append(("received", method.name, None))

    def msg_sent(self, method: Method) -> None:
        self.events.append(("sent", method.name, None))

    def handled(self, method: Method, code: StatusCode, seconds: float) -> None:
        self.events.append(("handled", method.name, code))


def _serve(scenario: Scenario, *, observer: _Counting | None = None, max_receive: int = 4 << 20,
           options: list[tuple[str, Any]] | None = None, budget: int = 0, **servicers: Any) -> None:
    async def run() -> None:
        server = Server(max_receive_message_length=max_receive, observers=[observer] if observer else [],
                        max_request_buffer=budget)
        server.add_service(version_pb2.DESCRIPTOR.services_by_name["Version"], servicers.get("version", _Version()))
        server.add_service(events_pb2.DESCRIPTOR.services_by_name["Events"], servicers.get("events", _Events()))
        server.add_service(content_pb2.DESCRIPTOR.services_by_name["Content"], servicers.get("content", _Content()))
        sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"
        if os.path.exists(sock):
            os.unlink(sock)
        await server.serve_unix(sock)
        try:
            async with grpc.aio.insecure_channel(f"unix:{sock}", options=options or []) as ch:
                await asyncio.wait_for(scenario(ch, server), 30)
        finally:
            await server.stop(0)
            if os.path.exists(sock):
                os.unlink(sock)

    asyncio.run(run())


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


def test_unary_call_with_metadata_and_binary_metadata() -> None:
    version = _Version()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        resp = await version_pb2_grpc.VersionStub(ch).Version(
            empty_pb2.Empty(), metadata=(("containerd-namespace", "ns1"), ("x-bin", b"\x00\xff")))
        assert resp.version == "v" and resp.revision == "r" * 100
        md = dict(version.metadata)
        assert md["containerd-namespace"] == "ns1"
        assert md["x-bin"] == b"\x00\xff"
        assert not [k for k in md if k.startswith(":") or k in ("te", "content-type")]

    _serve(scenario, version=version)


def test_errdefs_kind_becomes_its_status_with_the_message_percent_encoded() -> None:
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        code, details = await _code(events_pb2_grpc.EventsStub(ch).Publish(events_pb2.PublishRequest(topic="/t")))
        assert code == grpc.StatusCode.NOT_FOUND
        assert details == "topic /t ünknown"

    _serve(scenario)


def test_unknown_service_and_method_and_missing_handler_answer_unimplemented() -> None:
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        call = ch.unary_unary("/no.Such/Thing", request_serializer=lambda m: b"", response_deserializer=bytes)
        assert await _code(call(b"")) == (grpc.StatusCode.UNIMPLEMENTED, "unknown service no.Such")
        call = ch.unary_unary("/containerd.services.version.v1.Version/Nope", request_serializer=lambda m: b"",
                              response_deserializer=bytes)
        assert await _code(call(b"")) == (
            grpc.StatusCode.UNIMPLEMENTED, "unknown method Nope for service containerd.services.version.v1.Version")
        # the servicer lacks Forward: what grpc's generated base class answers
        code = await _code(events_pb2_grpc.EventsStub(ch).Forward(events_pb2.ForwardRequest()))
        assert code == (grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    _serve(scenario)


def test_server_stream_is_cancelled_when_the_client_cancels_and_deadline_is_seen() -> None:
    events = _Events()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        call = events_pb2_grpc.EventsStub(ch).Subscribe(events_pb2.SubscribeRequest(), timeout=20)
        first = await call.read()
        assert isinstance(first, events_pb2.Envelope) and first.topic == "/first"
        assert events.deadline is not None and 15 < events.deadline <= 21  # grpc rounds its timeout up
        call.cancel()
        await asyncio.wait_for(events.closed.wait(), 10)  # the generator's finally ran

    _serve(scenario, events=events)


def test_deadline_exceeded_ends_the_call_and_cancels_the_handler() -> None:
    events = _Events()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        call = events_pb2_grpc.EventsStub(ch).Subscribe(events_pb2.SubscribeRequest(), timeout=0.5)
        first = await call.read()
        assert isinstance(first, events_pb2.Envelope) and first.topic == "/first"
        code, _ = await _code(call.read())
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(events.closed.wait(), 10)

    _serve(scenario, events=events)


def test_request_over_the_receive_limit_is_resource_exhausted() -> None:
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        code, details = await _code(events_pb2_grpc.EventsStub(ch).Publish(
            events_pb2.PublishRequest(topic="x" * 5000)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("Received message larger than max (")
        # the connection still serves
        assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"

    _serve(scenario, max_receive=1000)


def test_gzip_compressed_requests_are_decoded() -> None:
    version = _Version()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        code, details = await _code(events_pb2_grpc.EventsStub(ch).Publish(
            events_pb2.PublishRequest(topic="/" + "a" * 3000), compression=grpc.Compression.Gzip))
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith("topic /aaa")

    _serve(scenario, version=version)


def test_bidi_stream_and_large_flow_controlled_server_stream() -> None:
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        stub = content_pb2_grpc.ContentStub(ch)

        async def reqs() -> AsyncIterator[content_pb2.WriteContentRequest]:
            for n in (10, 100_000, 3 << 20):
                yield content_pb2.WriteContentRequest(ref="r", data=b"d" * n)

        got = [r.offset async for r in stub.Write(reqs())]
        assert got == [10, 100_010, 100_010 + (3 << 20)]
        size = 40 << 20  # many windows' worth: the server waits for WINDOW_UPDATEs
        total = 0
        async for r in stub.Read(content_pb2.ReadContentRequest(size=size)):
            total += len(r.data)
        assert total == size

    _serve(scenario, options=[("grpc.max_receive_message_length", 8 << 20)])


def test_observer_sees_each_call_and_message() -> None:
    counting = _Counting()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())
        await _code(events_pb2_grpc.EventsStub(ch).Publish(events_pb2.PublishRequest(topic="/t")))

    _serve(scenario, observer=counting)
    assert counting.events == [
        ("started", "Version", "unary"), ("received", "Version", None), ("sent", "Version", None),
        ("handled", "Version", StatusCode.OK),
        ("started", "Publish", "unary"), ("received", "Publish", None), ("handled", "Publish", StatusCode.NOT_FOUND),
    ]


class _FramedContent(_Content):
    """Read answers ``size`` messages of ``offset`` 0..size-1 (each with 1 KiB of data), framed
    at once as one ``EncodedStream``, then one more message the usual way."""

    async def Read(self, request: content_pb2.ReadContentRequest, context: ServicerContext
                   ) -> AsyncIterator[Any]:
        yield EncodedStream.of([content_pb2.ReadContentResponse(offset=i, data=b"d" * 1024).SerializeToString()
                                for i in range(request.size)])
        yield content_pb2.ReadContentResponse(offset=request.size)


def test_an_encoded_stream_arrives_as_its_messages() -> None:
    # 300 KiB framed in one piece: several of the client's windows (the rest waits for WINDOW_UPDATE)
    counting = _Counting()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        got = [r async for r in content_pb2_grpc.ContentStub(ch).Read(content_pb2.ReadContentRequest(size=300))]
        assert [r.offset for r in got] == list(range(301))
        assert all(r.data == b"d" * 1024 for r in got[:300]) and not got[300].data

    _serve(scenario, observer=counting, content=_FramedContent())
    assert counting.events.count(("sent", "Read", None)) == 301  # each message counted


def test_an_encoded_stream_with_a_message_over_the_send_limit_is_resource_exhausted() -> None:
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        server.max_send_message_length = 1000
        code, details = await _code(_collect(content_pb2_grpc.ContentStub(ch).Read(
            content_pb2.ReadContentRequest(size=3))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("Sent message larger than max (")

    _serve(scenario, content=_FramedContent())


async def _collect(stream: Any) -> list[Any]:
    return [r async for r in stream]


def test_graceful_stop_lets_a_call_in_flight_finish() -> None:
    release = asyncio.Event()

    class Slow:
        async def Version(self, request: Any, context: ServicerContext) -> version_pb2.VersionResponse:
            await release.wait()
            return version_pb2.VersionResponse(version="late")

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        call = version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())
        while not server.live_calls:
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(server.stop(10))
        asyncio.get_running_loop().call_soon(release.set)
        assert (await call).version == "late"
        await stopping

    _serve(scenario, version=Slow())


def test_wire_helpers() -> None:
    assert percent_encode("plain text") == "plain text"
    assert percent_encode("100% ü\n") == "100%25 %C3%BC%0A"
    assert parse_timeout("100m") == pytest.approx(0.1)
    assert parse_timeout("5S") == 5.0
    assert parse_timeout("1H") == 3600.0
    assert parse_timeout("x") is None
    assert parse_timeout("123456789S") is None  # at most 8 digits


def test_health_service_check_and_watch() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from pycontainerd.services.health import HealthService

    health = HealthService()

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        health.add_to_server(server)  # methods may be added before the first call to them
        stub = health_pb2_grpc.HealthStub(ch)
        assert await _code(stub.Check(health_pb2.HealthCheckRequest())) == (grpc.StatusCode.NOT_FOUND,
                                                                            "unknown service")
        watch = stub.Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert isinstance(first, health_pb2.HealthCheckResponse)
        assert first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        await health.start()  # the daemon's plugins started: SERVING, seen by Check and Watch
        assert (await stub.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        second = await watch.read()
        assert isinstance(second, health_pb2.HealthCheckResponse)
        assert second.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()

    _serve(scenario)


def _raw_requests(sock: str, blocks: list[bytes]) -> Any:
    """Each header block as its own stream on one raw HTTP/2 connection (no gRPC client's checks)."""
    from tests.fixtures import h2raw as h

    with h.RawConn(sock) as c:
        c.handshake()
        for i, block in enumerate(blocks):
            c.request(1 + 2 * i, block, h.grpc_message(b""))
        return c.observe(lambda o: len(o.ended) >= len(blocks), timeout=10)


def test_non_grpc_requests_get_http_errors_and_unknown_paths_trailers_only() -> None:
    from tests.fixtures import h2raw as h

    def field_block(fields: list[tuple[str, str]]) -> bytes:
        return b"".join(h.literal(k, v) for k, v in fields)

    base = [(":scheme", "http"), (":authority", "x"), ("te", "trailers")]
    blocks = [
        field_block([(":method", "GET"), (":path", h.VERSION), *base, ("content-type", "application/grpc")]),
        field_block([(":method", "POST"), (":path", h.VERSION), *base, ("content-type", "text/plain")]),
        h.request_block("/no.Such/Thing"),
        h.request_block(h.VERSION),
    ]

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        o = await asyncio.to_thread(_raw_requests, f"/tmp/pycd-unit-rpc-{os.getpid()}.sock", blocks)
        assert [o.status(sid) for sid in (1, 3, 5, 7)] == ["HTTP 405", "HTTP 415", "UNIMPLEMENTED", "OK"]
        assert o.message(5) == "unknown service no.Such"
        assert len(o.headers[5]) == 1  # trailers-only: one header block carrying the status

    _serve(scenario)


# -- request memory: what a client may make the server hold ---------------------------------------------------
class _Hold:
    """One raw connection sending requests' messages on many streams within the server's windows
    (``push``), e.g. stopping a byte before each message's end: nothing completes."""

    def __init__(self, sock: str, path: str, messages: list[bytes]) -> None:
        from tests.fixtures import h2raw as h

        self.h = h
        self.c = h.RawConn(sock)
        self.c.handshake()
        self.left: dict[int, memoryview] = {}
        for i, msg in enumerate(messages):
            sid = 1 + 2 * i
            self.c.request(sid, h.request_block(path), None, end_stream=False)
            self.left[sid] = memoryview(msg)
        self.sent = 0

    def push(self, keep: int) -> int:
        """Send until the server's windows stop opening, keeping ``keep`` bytes of each message
        back; the bytes sent in all."""
        self.sent += self.c.send_within_windows(self.left, keep=keep)
        return self.sent


def test_unary_requests_held_unfinished_are_bounded_per_connection_and_complete_later() -> None:
    # 24 Version calls whose ~900 KiB request (an unknown field) stops one byte short: the server
    # grants windows for at most its connection budget (2 MiB at 1 MiB max messages) besides
    # each stream's initial 64 KiB, not 24 x 900 KiB; another client is served meanwhile, a large
    # request of its own too (the server-wide budget has room); then every call completes
    from tests.fixtures import h2raw as h

    body = h.grpc_message(h.proto_string(15, b"x" * 900_000))
    sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        hold = await asyncio.to_thread(_Hold, sock, h.VERSION, [body] * 24)
        try:
            held = await asyncio.to_thread(hold.push, 1)
            assert held <= server.connection_budget + 24 * (64 << 10), held
            assert 0 < server.reserved <= server.connection_budget
            assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"
            raw = ch.unary_unary(h.VERSION, request_serializer=None, response_deserializer=None)
            assert await raw(h.proto_string(15, b"y" * 900_000))
            total = await asyncio.to_thread(hold.push, 0)
            o = await asyncio.to_thread(hold.c.observe, lambda o: len(o.ended) >= 24, timeout=20)
            assert total == 24 * len(body)
            assert [o.status(1 + 2 * i) for i in range(24)] == ["OK"] * 24, o.summary()
            assert server.reserved == 0
        finally:
            hold.c.close()

    _serve(scenario, max_receive=1 << 20)


def test_many_large_messages_at_once_from_grpc_all_complete() -> None:
    # more concurrent large requests than the connection budget holds: granted in turn, none stuck
    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        from tests.fixtures import h2raw as h

        raw = ch.unary_unary(h.VERSION, request_serializer=None, response_deserializer=None)
        answers = await asyncio.gather(*(raw(h.proto_string(15, bytes([i]) * 700_000)) for i in range(8)))
        assert all(answers)
        assert server.reserved == 0

    _serve(scenario, max_receive=1 << 20)


class _NeverReads:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def Write(self, requests: AsyncIterator[content_pb2.WriteContentRequest], context: ServicerContext
                    ) -> AsyncIterator[content_pb2.WriteContentResponse]:
        self.started.set()
        await asyncio.Event().wait()
        yield content_pb2.WriteContentResponse()


def test_a_streaming_request_whose_handler_does_not_read_holds_two_messages() -> None:
    # 40 messages of 200 KiB on a Content.Write stream nobody reads: the server takes the first
    # message whole (a grant past the 64 KiB window), the next one (let in while the handler
    # would work on the first), then nothing more; not megabytes (old code: all 8 MiB)
    msg = content_pb2.WriteContentRequest(ref="r", data=b"w" * (200 << 10)).SerializeToString()
    from tests.fixtures import h2raw as h

    body = h.grpc_message(msg) * 40
    sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        hold = await asyncio.to_thread(_Hold, sock, "/containerd.services.content.v1.Content/Write", [body])
        try:
            held = await asyncio.to_thread(hold.push, 1)
            assert held <= (64 << 10) + 2 * len(msg), held
            assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"
        finally:
            hold.c.close()

    _serve(scenario, content=_NeverReads())


class _Flood:
    """Subscribe yields 1 KiB envelopes, up to ``limit``, counting how many it was asked for; one a
    loop iteration, as events come (each write then leaves alone, below FLUSH_BYTES)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.made = 0

    async def Subscribe(self, request: events_pb2.SubscribeRequest, context: ServicerContext
                        ) -> AsyncIterator[events_pb2.Envelope]:
        for _ in range(self.limit):
            self.made += 1
            yield events_pb2.Envelope(topic="/t", namespace="n" * 1024)
            await asyncio.sleep(0)


@pytest.mark.parametrize("reader", ["tiny-window", "never-reads"])
def test_a_server_stream_to_a_stuck_client_is_not_asked_for_more(reader: str) -> None:
    # the client lets nothing through (a 16-byte window, or a huge window and a socket it never
    # reads): the handler is not asked for its next message while the previous one waits, so
    # the stream costs one message (+ the socket's buffer), not the handler's whole output
    from tests.fixtures import h2raw as h

    flood = _Flood(20_000)  # 20 MiB if it were all taken
    sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"

    def stuck() -> h.RawConn:
        c = h.RawConn(sock)
        if reader == "tiny-window":
            c.handshake((h.INITIAL_WINDOW_SIZE, 16))
        else:
            c.handshake((h.INITIAL_WINDOW_SIZE, h.MAX_WINDOW))
            c.send(h.window_update(0, h.MAX_WINDOW - h.DEFAULT_WINDOW))
        c.request(1, h.request_block(h.SUBSCRIBE), h.grpc_message(b""))
        return c

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        c = await asyncio.to_thread(stuck)
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.0
            while loop.time() < end and flood.made < flood.limit:
                made = flood.made
                await asyncio.sleep(0.1)  # lets the server run; the check is the count below
                if flood.made == made:
                    break
            # the socket pair's buffers and the transport's high-water mark take ~150 KiB of a
            # client that never reads (the old code made all 20 000)
            bound = 2 if reader == "tiny-window" else 1 << 10
            assert flood.made <= bound, f"{flood.made} messages made for a stuck client"
            assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"
        finally:
            c.close()

    _serve(scenario, events=flood)


def test_the_server_wide_budget_is_shared_and_given_back_when_a_connection_goes() -> None:
    # one connection holds the whole server-wide budget (2 MiB) with requests it never
    # completes: a large request on another connection waits for a grant (a small one does not),
    # and gets it when the first connection goes away
    from tests.fixtures import h2raw as h

    body = h.grpc_message(h.proto_string(15, b"x" * 900_000))
    sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        assert server.budget == server.connection_budget == 2 << 20
        hold = await asyncio.to_thread(_Hold, sock, h.VERSION, [body] * 8)
        try:
            await asyncio.to_thread(hold.push, 1)
            assert server.reserved > server.budget - 900_000
            raw = ch.unary_unary(h.VERSION, request_serializer=None, response_deserializer=None)
            big = asyncio.ensure_future(raw(h.proto_string(15, b"y" * 900_000)))
            assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"
            done, _ = await asyncio.wait([big], timeout=0.5)
            assert not done, "a grant past the server-wide budget"
        finally:
            hold.c.close()
        assert await asyncio.wait_for(big, 10)
        assert server.reserved == 0

    _serve(scenario, max_receive=1 << 20, budget=2 << 20)


def test_a_request_stream_of_many_small_and_some_large_messages_flows() -> None:
    # windows given back as the handler takes messages, grants for the large ones: none stuck
    sizes = [100] * 3000 + [300_000, 10, 2 << 20] * 5 + [40_000] * 50

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        async def reqs() -> AsyncIterator[content_pb2.WriteContentRequest]:
            for n in sizes:
                yield content_pb2.WriteContentRequest(ref="r", data=b"d" * n)

        got = [r.offset async for r in content_pb2_grpc.ContentStub(ch).Write(reqs())]
        assert len(got) == len(sizes) and got[-1] == sum(sizes)
        assert server.reserved == 0

    _serve(scenario)


# -- a request stream whose call goes away -------------------------------------------------------------------
class _Reader:
    """Write reads its request stream in the handler's own task (``inline``) or hands it to a
    task of its own (a consumer the handler does not cancel), which reads until the stream ends;
    ``ended`` says how reading ended."""

    def __init__(self, inline: bool) -> None:
        self.inline = inline
        self.got = 0
        self.ended: str | None = None
        self.reader: asyncio.Task[None] | None = None

    async def _read(self, requests: AsyncIterator[content_pb2.WriteContentRequest]) -> None:
        try:
            async for _ in requests:
                self.got += 1
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise
        self.ended = "end of stream"

    async def Write(self, requests: AsyncIterator[content_pb2.WriteContentRequest], context: ServicerContext
                    ) -> AsyncIterator[content_pb2.WriteContentResponse]:
        if self.inline:
            await self._read(requests)
        else:
            self.reader = asyncio.create_task(self._read(requests))
            await asyncio.Event().wait()  # the handler's own work, e.g. answering from elsewhere
        yield content_pb2.WriteContentResponse()


@pytest.mark.parametrize("inline", [True, False], ids=["handler-reads", "reader-task"])
@pytest.mark.parametrize("how", ["rst-stream", "deadline", "connection-closed"])
def test_a_reader_waiting_on_a_request_stream_that_goes_away_is_woken(how: str, inline: bool) -> None:
    # a Content.Write stream sends one message, the reader waits for the next; then the client
    # resets the stream (RST_STREAM CANCEL), its deadline passes, or it closes the connection:
    # the reader must see CancelledError (not a clean end of stream), wherever it reads from.
    # Old code: the handler's task was cancelled, but a reader in another task waited forever
    # (only a closed connection woke it, and it then went back to waiting).
    from tests.fixtures import h2raw as h
    from tests.fixtures.procs import wait_for_async

    servicer = _Reader(inline)
    sock = f"/tmp/pycd-unit-rpc-{os.getpid()}.sock"
    extra = [("grpc-timeout", "300m")] if how == "deadline" else []
    msg = h.grpc_message(content_pb2.WriteContentRequest(ref="r", data=b"d").SerializeToString())

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        c = await asyncio.to_thread(h.RawConn, sock)
        try:
            await asyncio.to_thread(c.handshake)
            block = h.request_block("/containerd.services.content.v1.Content/Write", extra)
            assert await asyncio.to_thread(c.request, 1, block, msg, end_stream=False)
            await wait_for_async(lambda: servicer.got == 1, 10, "the first message read")
            assert servicer.ended is None
            if how == "rst-stream":
                await asyncio.to_thread(c.send, h.rst_stream(1))
            elif how == "connection-closed":
                c.close()
            await wait_for_async(lambda: servicer.ended, 5, "the reader to stop waiting")
            assert servicer.ended == "cancelled"
            if servicer.reader is not None:
                await wait_for_async(servicer.reader.done, 5, "the reader task to end")
            await wait_for_async(lambda: server.live_calls == 0, 5, "the call to be gone")
            assert (await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty())).version == "v"
        finally:
            c.close()
            if servicer.reader is not None:
                servicer.reader.cancel()

    _serve(scenario, content=servicer)


def test_a_service_from_its_static_table_loads_its_descriptor_at_its_first_call_and_a_failed_load_is_asked_again(
) -> None:
    """``add_service_table``: the service is known (its unknown methods worded as such) before its
    descriptor is loaded; its first call loads it; a ``describe`` that raises fails that call
    (UNKNOWN, its message) and is asked again by the next one; a descriptor of another service, or
    one that disagrees with the table, fails the call too."""
    from pycontainerd.services.tables import SERVICES

    asked: list[str] = []
    failures = [RuntimeError("not yet")]

    def describe() -> Any:
        asked.append("leases")
        if failures:
            raise failures.pop()
        from pycontainerd.api.services.leases.v1 import leases_pb2

        return leases_pb2.DESCRIPTOR.services_by_name["Leases"]

    class _Leases:
        async def List(self, request: Any, context: ServicerContext) -> Any:
            from pycontainerd.api.services.leases.v1 import leases_pb2

            return leases_pb2.ListResponse(leases=[leases_pb2.Lease(id="l1")])

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc

        leases = "containerd.services.leases.v1.Leases"
        server.add_service_table(leases, SERVICES[leases], _Leases(), describe)
        stub = leases_pb2_grpc.LeasesStub(ch)
        code, details = await _code(stub.List(leases_pb2.ListRequest()))
        assert code == grpc.StatusCode.UNKNOWN and "not yet" in details
        assert [lease.id for lease in (await stub.List(leases_pb2.ListRequest())).leases] == ["l1"]
        assert [lease.id for lease in (await stub.List(leases_pb2.ListRequest())).leases] == ["l1"]
        assert asked == ["leases", "leases"]  # loaded once, after the failure
        assert await _code(stub.Create(leases_pb2.CreateRequest(id="x"))) == (
            grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        # a service not yet loaded is a known service: an unknown method is worded so (nothing loaded)
        namespaces = "containerd.services.namespaces.v1.Namespaces"
        server.add_service_table(namespaces, SERVICES[namespaces], _Leases(), describe)
        call = ch.unary_unary(f"/{namespaces}/Nope", request_serializer=lambda m: b"", response_deserializer=bytes)
        assert await _code(call(b"")) == (grpc.StatusCode.UNIMPLEMENTED,
                                          f"unknown method Nope for service {namespaces}")
        assert asked == ["leases", "leases"]
        # its describe answers another service's descriptor: the call fails, and the next one too
        call = ch.unary_unary(f"/{namespaces}/List", request_serializer=lambda m: b"", response_deserializer=bytes)
        for _ in range(2):
            code, details = await _code(call(b""))
            assert code == grpc.StatusCode.UNKNOWN and f"the descriptor of {namespaces} is {leases}'s" in details
        # a table that disagrees with the descriptor (a method's kind): refused at the first call
        images = "containerd.services.images.v1.Images"
        drifted = [(name, "server_stream" if name == "List" else kind) for name, kind in SERVICES[images]]

        def describe_images() -> Any:
            from pycontainerd.api.services.images.v1 import images_pb2

            return images_pb2.DESCRIPTOR.services_by_name["Images"]

        server.add_service_table(images, drifted, _Leases(), describe_images)
        call = ch.unary_unary(f"/{images}/List", request_serializer=lambda m: b"", response_deserializer=bytes)
        code, details = await _code(call(b""))
        assert code == grpc.StatusCode.UNKNOWN and "differs from its descriptor" in details
        assert "('List', 'server_stream')" in details and "('List', 'unary')" in details

    _serve(scenario)


def test_a_method_with_its_own_codec_is_served_by_it() -> None:
    """``add_service_table``'s codecs: the handler gets what the codec parses (here an Empty,
    read by ``rpc.wire``) and the client what it serializes; the service's descriptor is never
    asked for; a request the codec refuses fails INTERNAL."""
    from pycontainerd.services.version import VERSION

    asked: list[str] = []
    seen: list[Any] = []

    class _Hand:
        async def Version(self, request: Any, context: ServicerContext) -> dict[str, str]:
            seen.append(request)
            return {"version": "v1", "revision": "r"}

    def describe() -> Any:
        asked.append("version")
        raise AssertionError("not needed")

    async def scenario(ch: grpc.aio.Channel, server: Server) -> None:
        name = "containerd.hand.v1.Version"  # a service of its own, beside the protobuf one
        server.add_service_table(name, [("Version", "unary")], _Hand(), describe, {"Version": VERSION})
        call = ch.unary_unary(f"/{name}/Version", request_serializer=lambda m: m,
                              response_deserializer=version_pb2.VersionResponse.FromString)
        resp = await call(b"\x08\x05")  # an unknown field of Empty: skipped
        assert (resp.version, resp.revision) == ("v1", "r")
        assert vars(seen[0]) == {}
        code, details = await _code(call(b"\x0a\x05ab"))  # truncated
        assert code == grpc.StatusCode.INTERNAL and details.startswith("Failed to parse request")
        assert asked == []

    _serve(scenario)


def test_servicers_register_their_generated_modules_deferred() -> None:
    """Importing the daemon's servicer modules imports no generated module (a fresh interpreter);
    each served ``DeferredModule`` announces its module's protobuf package (the service names
    the server's loaders are registered under) and, once used, takes the module's place."""
    import json
    import subprocess
    import sys

    script = r"""
import json, sys
from pycontainerd.services import containers, content, diff, events, images, introspection, leases
from pycontainerd.services import namespaces, snapshots, tasks
import pycontainerd.services.common as common
before = sorted(m for m in sys.modules if m.startswith("pycontainerd.api.") and m.endswith("_pb2"))
loaded = {}
for mod in (containers, content, diff, events, images, introspection, leases, namespaces, snapshots, tasks):
    for alias, value in list(vars(mod).items()):
        if isinstance(value, common.DeferredModule) and value.deferred_package:
            loaded[alias + "@" + mod.__name__] = (value.deferred_package, value.DESCRIPTOR.package,
                                                  sorted(value.DESCRIPTOR.services_by_name))
print(json.dumps({"before": before, "loaded": loaded,
                  "replaced": [type(vars(m)["pb"]).__name__ for m in (containers, leases, tasks)]}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout)
    assert got["before"] == []  # importing the servicer modules imported no generated service module
    assert len(got["loaded"]) == 10
    for where, (announced, actual, services) in got["loaded"].items():
        assert announced == actual and services, where
    assert got["replaced"] == ["module"] * 3  # the proxies took their modules' place
