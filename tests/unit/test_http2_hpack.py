"""HPACK (``http2.hpack``): the RFC 7541 examples, Huffman on every octet, the block cache, errors,
and both halves against an independent implementation (the ``hpack`` package of hyper-h2)."""

from __future__ import annotations

from typing import Any

import hpack as hyper_hpack
import pytest

from pycontainerd.http2.hpack import (
    Decoder,
    Encoder,
    HeaderListTooLarge,
    HPACKError,
    encode_block,
    encode_int,
    huffman_decode,
)


def test_rfc7541_c3_requests_without_huffman() -> None:
    d = Decoder()
    assert d.decode(bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    assert d.decode(bytes.fromhex("828684be58086e6f2d6361636865")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
        ("cache-control", "no-cache")]
    assert d.decode(bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565")) == [
        (":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
        ("custom-key", "custom-value")]
    assert d.size == 164
    assert d.table == [("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")]


def test_rfc7541_c6_responses_with_huffman_and_eviction() -> None:
    d = Decoder(256)
    assert d.decode(bytes.fromhex(
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"
    )) == [(":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
           ("location", "https://www.example.com")]
    assert d.decode(bytes.fromhex("4883640effc1c0bf"))[0] == (":status", "307")
    third = d.decode(bytes.fromhex(
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f"
        "3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"))
    assert third[-1] == ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
    assert d.size == 215 and len(d.table) == 3


def test_huffman_every_octet_round_trips_through_an_independent_encoder() -> None:
    encoder, decoder = hyper_hpack.Encoder(), Decoder()
    for value in (bytes(range(256)), bytes(range(255, -1, -1)), b"a", b"", b"\xff" * 40, b"/containerd.services"):
        block = encoder.encode([(b"x-bin", value)], huffman=True)
        name_value = decoder.decode(block)
        assert name_value[0][0] == "x-bin"
        assert name_value[0][1] == value.decode("utf-8", "replace")
    codes = hyper_hpack.huffman_constants
    huffman = hyper_hpack.huffman.HuffmanEncoder(codes.REQUEST_CODES, codes.REQUEST_CODES_LENGTH)
    for i in range(256):
        raw = huffman.encode(bytes([i]) * 3)
        assert huffman_decode(raw) == bytes([i]) * 3


def test_huffman_errors() -> None:
    with pytest.raises(ValueError, match="padding"):
        huffman_decode(b"\x00")  # padding must be ones
    with pytest.raises(ValueError, match="padding"):
        huffman_decode(bytes.fromhex("a8eb10649cbf") + b"\xff")  # 8 bits of padding
    with pytest.raises(ValueError, match="EOS"):
        huffman_decode(b"\xff\xff\xff\xff")  # EOS (30 ones) inside a string


def test_independent_encoder_with_indexing_and_huffman_decodes_over_many_blocks() -> None:
    enc = hyper_hpack.Encoder()
    dec = Decoder()
    for i in range(300):
        fields = [(":method", "POST"), (":scheme", "http"), (":path", f"/svc.S/M{i % 7}"), (":authority", "x"),
                  ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", f"{i}m"),
                  ("containerd-namespace", f"ns-{i % 13}"), ("x-" + "k" * (i % 50), "v" * (i % 300))]
        assert dec.decode(enc.encode(fields)) == fields
    assert dec.size <= 4096


def test_our_encoder_is_read_by_an_independent_decoder() -> None:
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "13"),
              ("grpc-message", "caf%C3%A9 " + "x" * 300), (":path", "/index.html"), ("x-new", "")]
    ours = encode_block(fields)
    decoded: list[Any] = [tuple(x) for x in hyper_hpack.Decoder().decode(ours)]
    assert decoded == fields
    assert ours[:1] == b"\x88"  # :status 200 is static index 8
    assert Encoder().encode(fields) == ours
    assert encode_block([("grpc-bin", b"\x00\xff")]) == b"\x00\x08grpc-bin\x02\x00\xff"


def test_encode_int_rfc_examples() -> None:
    assert encode_int(10, 5) == b"\x0a"
    assert encode_int(1337, 5) == b"\x1f\x9a\x0a"
    assert encode_int(42, 8) == b"\x2a"


def test_the_block_cache_follows_the_dynamic_table() -> None:
    d = Decoder()
    d.decode(b"\x40\x01a\x01A")  # insert (a, A): index 62
    assert d.decode(b"\xbe") == [("a", "A")]
    assert d.decode(b"\xbe") == [("a", "A")]  # cached
    d.decode(b"\x40\x01b\x01B")  # insert (b, B): index 62 is now it
    assert d.decode(b"\xbe") == [("b", "B")]
    assert d.decode(b"\xbf") == [("a", "A")]
    d.decode(b"\x20")  # table size 0: all evicted
    with pytest.raises(HPACKError):
        d.decode(b"\xbe")


def test_cached_results_are_copies() -> None:
    d = Decoder()
    first = d.decode(b"\x83\x86")
    first.append(("x", "y"))
    assert d.decode(b"\x83\x86") == [(":method", "POST"), (":scheme", "http")]


def test_decoder_errors() -> None:
    for block in (b"\x80", b"\xc0", b"\x7f", b"\x00\x05ab", b"\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x41\x83\xff"):
        with pytest.raises(HPACKError):
            Decoder().decode(block)
    with pytest.raises(HPACKError, match="above"):
        Decoder(max_table_size=100).decode(b"\x3f\x62")  # size update to 129
    with pytest.raises(HPACKError, match="after"):
        Decoder().decode(b"\x82\x20")


def test_header_list_limit_still_follows_the_table() -> None:
    d = Decoder(max_header_list_size=100)
    with pytest.raises(HeaderListTooLarge):
        d.decode(b"\x40\x01a\x7f\x21" + b"v" * 160)  # a 160-byte value, indexed
    assert d.table == [("a", "v" * 160)]


def test_huffman_tables_hold_no_int_objects_of_their_own() -> None:
    """The decoder's tables (built at the first Huffman string, kept for the process's life) are
    a byte string and a list of cached small ints: ~36 KiB, where a list of ``state | symbol << 8``
    entries held ~150 KiB of int objects in every idle daemon (W6, idle PSS)."""
    import sys

    from pycontainerd.http2 import hpack

    assert huffman_decode(hyper_hpack.huffman.HuffmanEncoder(
        hyper_hpack.huffman_constants.REQUEST_CODES, hyper_hpack.huffman_constants.REQUEST_CODES_LENGTH,
    ).encode(b"/containerd.services.version.v1.Version/Version")) == b"/containerd.services.version.v1.Version/Version"
    assert isinstance(hpack._huff_next, bytes) and hpack._huff_out is not None
    assert all(-5 <= v <= 256 for v in hpack._huff_out)  # CPython's small-int cache: no object each
    assert sys.getsizeof(hpack._huff_next) + sys.getsizeof(hpack._huff_out) < 48 << 10
