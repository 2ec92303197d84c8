"""HPACK (RFC 7541): header compression for HTTP/2, both halves, as the daemon and client need them.

``Decoder`` is complete: static and dynamic table, Huffman strings, table size updates (bounded
by the size we advertise: above it is a ``HPACKError``, the caller's COMPRESSION_ERROR), and a
bound on the decoded header list (``HeaderListTooLarge``: the block is still decoded to the end so
the dynamic table stays in step with the peer's encoder, but the fields are not kept).  Decoded
blocks that left the dynamic table untouched are cached by their bytes: after its first call a
grpc-go client sends the same all-indexed block for every call of a method, and a dictionary
lookup is far cheaper than decoding it again.  The cache is emptied whenever the table changes,
since indexed fields mean something else then; ``Decoder.generation`` counts those changes, so a
caller can memoise its own facts about a block (the server's well-formedness check) the same way.

``Encoder``/``encode_block`` are deliberately stateless: static-table indexed fields where name and
value match exactly, otherwise literals without indexing (with an indexed name when the static
table has it), never Huffman.  No dynamic table means no encoder state to keep in step with the
peer, so a constant block (``:status 200`` + ``content-type application/grpc``) is encoded once
and reused by every call on every connection.
"""

from __future__ import annotations

from collections.abc import Iterable


class HPACKError(ValueError):
    """A header block that cannot be decoded (the connection's COMPRESSION_ERROR)."""


class HeaderListTooLarge(HPACKError):
    """The decoded header list is larger than ``max_header_list_size`` (the block was still consumed)."""


STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)
_NSTATIC = len(STATIC_TABLE)
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is its name and value octets plus 32

# -- Huffman (RFC 7541 Appendix B) ------------------------------------------------------------------
# The code is canonical: the code length of each octet (then EOS, 30 bits) determines every code.
# Lengths as chr(48 + length).
_HUFFMAN_LENGTHS = (
    "=GLLLLLLLHNLLNLLLLLLLLNLLLLLLLLL6::<=68;::8;8666555666666678?6<:=67777777777777777777777878=C=>6?56565666"
    "577666567655677777?;>=LDFDDFFFGFGGGGGHGHHFGHGGGGEFGFGGHFEDFFGGEGFFHEFGGEEFEGFGGDFFFGFFGJJDCFGFIJJJKKJHICEJ"
    "KKJKHEEJJLKKKDHDEFEEGFFIIHHJGJKJJKKKKKLKKKKKJ"
)
_EOS = 256
# Indexed by state << 4 | nibble (states are the code tree's internal nodes, root 0; four bits
# complete at most one symbol, since the shortest code has five): ``_huff_next`` the next state
# (a byte: the tree has 256 internal nodes), ``_huff_out`` 0, the completed symbol + 1, or -1
# when the nibble completes EOS.  Every value is a cached small int, so the tables are ~36 KiB,
# not ~150 KiB of int objects (W6, idle PSS).  Built on first use: a few thousand steps, not
# paid by processes that never see a Huffman string.
_huff_next: bytes | None = None
_huff_out: list[int] | None = None
_huff_accept: list[bool] | None = None


def _build_huffman() -> tuple[bytes, list[int], list[bool]]:
    lengths = [ord(c) - 48 for c in _HUFFMAN_LENGTHS] + [30]
    children: list[list[int]] = [[0, 0]]  # internal node -> [child for bit 0, bit 1]; leaves as ~symbol
    depth, all_ones = [0], [True]
    code, prev = 0, 0
    for sym in sorted(range(257), key=lambda s: (lengths[s], s)):
        n = lengths[sym]
        if prev:
            code = (code + 1) << (n - prev)
        prev = n
        node = 0
        for i in range(n - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = ~sym
            else:
                nxt = children[node][bit]
                if nxt == 0:
                    nxt = len(children)
                    children.append([0, 0])
                    depth.append(depth[node] + 1)
                    all_ones.append(all_ones[node] and bit == 1)
                    children[node][bit] = nxt
                node = nxt
    assert len(children) <= 256
    nexts = bytearray(len(children) << 4)
    outs = [0] * (len(children) << 4)
    for state in range(len(children)):
        for nibble in range(16):
            node, emitted = state, 0
            for shift in (3, 2, 1, 0):
                child = children[node][(nibble >> shift) & 1]
                if child < 0:
                    if ~child == _EOS:
                        emitted, node = -1, 0
                        break
                    emitted, node = ~child + 1, 0
                else:
                    node = child
            nexts[(state << 4) | nibble] = node
            outs[(state << 4) | nibble] = emitted
    # a string may end inside a code only on its padding: fewer than 8 bits, all ones (a prefix of EOS)
    accept = [state == 0 or (all_ones[state] and depth[state] <= 7) for state in range(len(children))]
    return bytes(nexts), outs, accept


def huffman_decode(data: bytes | memoryview) -> bytes:
    """Decode a Huffman-coded string; ValueError (HPACKError) on EOS or bad padding."""
    global _huff_next, _huff_out, _huff_accept
    if _huff_next is None or _huff_out is None or _huff_accept is None:
        _huff_next, _huff_out, _huff_accept = _build_huffman()
    nexts, outs = _huff_next, _huff_out
    out = bytearray()
    state = 0
    for byte in data:
        i = (state << 4) | (byte >> 4)
        o = outs[i]
        if o:
            if o < 0:
                raise HPACKError("HPACK: EOS in a Huffman string")
            out.append(o - 1)
        i = (nexts[i] << 4) | (byte & 0xF)
        o = outs[i]
        if o:
            if o < 0:
                raise HPACKError("HPACK: EOS in a Huffman string")
            out.append(o - 1)
        state = nexts[i]
    if not _huff_accept[state]:
        raise HPACKError("HPACK: bad Huffman padding")
    return bytes(out)


# -- decoding ---------------------------------------------------------------------------------------
_CACHE_MAX_ENTRIES = 128
_CACHE_MAX_BLOCK = 1024  # only small blocks are worth keeping (and keys stay small)


class Decoder:
    """The decoding half of HPACK; one per connection (the dynamic table lives as long as it does).

    ``max_table_size`` is the SETTINGS_HEADER_TABLE_SIZE we advertise: the peer's encoder may
    shrink its table below it, never grow it above.  ``max_header_list_size`` bounds the decoded
    list (names + values + 32 per field, RFC 9113 6.5.2).
    """

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 1 << 20) -> None:
        self.table: list[tuple[str, str]] = []  # newest first
        self.size = 0
        self.max_size = max_table_size  # the current limit (size updates change it)
        self.max_table_size = max_table_size  # the highest limit the peer may set
        self.max_header_list_size = max_header_list_size
        self._cache: dict[bytes, tuple[tuple[str, str], ...]] = {}
        # bumped whenever the dynamic table changes: a block decoded in one generation that left
        # it unchanged means the same thing until the next bump (callers may key facts on that)
        self.generation = 0

    def _evict(self) -> None:
        table = self.table
        while self.size > self.max_size and table:
            name, value = table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        """The header list of one complete header block (HEADERS + CONTINUATION payloads joined)."""
        cached = self._cache.get(data)
        if cached is not None:
            return list(cached)
        headers: list[tuple[str, str]] = []
        table = self.table  # mutated in place below: the alias stays valid
        static = STATIC_TABLE
        total = 0
        limit = self.max_header_list_size
        too_large = False
        changed = False
        n = len(data)
        i = 0
        try:
            while i < n:
                b = data[i]
                if b & 0x80:  # indexed field (6.1)
                    if b != 0xFF:
                        index = b & 0x7F
                        i += 1
                    else:
                        index, i = _int(data, i, 0x7F)
                    if index == 0:
                        raise HPACKError("HPACK: index 0")
                    # an index past the dynamic table raises IndexError: reported as HPACKError below
                    field = static[index - 1] if index <= _NSTATIC else table[index - _NSTATIC - 1]
                elif b & 0xE0 == 0x20:  # dynamic table size update (6.3): only before the first field
                    if headers or total:
                        raise HPACKError("HPACK: table size update after a header field")
                    size, i = _int(data, i, 0x1F)
                    if size > self.max_table_size:
                        raise HPACKError(f"HPACK: table size update to {size} above our {self.max_table_size}")
                    self.max_size = size
                    self._evict()
                    changed = True
                    continue
                else:
                    indexing = b & 0xC0 == 0x40  # with incremental indexing (6.2.1); else 6.2.2/6.2.3
                    index, i = _int(data, i, 0x3F if indexing else 0x0F)
                    if index:
                        name = static[index - 1][0] if index <= _NSTATIC else table[index - _NSTATIC - 1][0]
                    else:
                        name, i = _str(data, i)
                    value, i = _str(data, i)
                    field = (name, value)
                    if indexing:
                        table.insert(0, field)
                        self.size += len(name) + len(value) + ENTRY_OVERHEAD
                        self._evict()
                        changed = True
                total += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
                if total > limit:
                    # keep decoding (the table must follow the peer's), but keep nothing more
                    too_large = True
                    headers.clear()
                if not too_large:
                    headers.append(field)
        except IndexError:
            raise HPACKError("HPACK: truncated header block, or an index beyond the table") from None
        if changed:
            self._cache.clear()
            self.generation += 1
        if too_large:
            raise HeaderListTooLarge(f"HPACK: header list larger than {limit} bytes")
        if not changed and n <= _CACHE_MAX_BLOCK:
            if len(self._cache) >= _CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[bytes(data)] = tuple(headers)
        return headers


def _int(data: bytes, i: int, mask: int) -> tuple[int, int]:
    """An integer with a ``mask``-bit prefix at data[i] (5.1); (value, next offset)."""
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    while True:
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 28:  # nothing we accept needs more than 2^28; stops absurdly long encodings
            raise HPACKError("HPACK: integer too large")


def _str(data: bytes, i: int) -> tuple[str, int]:
    huffman = data[i] & 0x80
    n, i = _int(data, i, 0x7F)
    end = i + n
    if end > len(data):
        raise HPACKError("HPACK: truncated string")
    raw = data[i:end]
    if huffman:
        raw = huffman_decode(raw)
    return raw.decode("utf-8", "replace"), end


# -- encoding ---------------------------------------------------------------------------------------
_STATIC_EXACT: dict[tuple[str, str], int] = {}
_STATIC_NAME: dict[str, int] = {}
for _i, (_n, _v) in enumerate(STATIC_TABLE, 1):
    _STATIC_EXACT.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)


def encode_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with a ``prefix_bits`` prefix; ``first`` holds the pattern bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _raw_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return encode_int(len(raw), 7) + raw


def encode_field(name: str, value: str | bytes) -> bytes:
    """One field: indexed when the static table has it exactly, else a literal without indexing."""
    if isinstance(value, str):
        index = _STATIC_EXACT.get((name, value))
        if index is not None:
            return bytes((0x80 | index,))
    index = _STATIC_NAME.get(name)
    if index is not None:
        return encode_int(index, 4) + _raw_str(value)
    return b"\x00" + _raw_str(name) + _raw_str(value)


def encode_block(headers: Iterable[tuple[str, str | bytes]]) -> bytes:
    """A whole header block; constant blocks are worth encoding once and keeping."""
    return b"".join(encode_field(name, value) for name, value in headers)


class Encoder:
    """``encode_block`` with a bounded memo of the fields seen (names and values repeat per call)."""

    _MAX_MEMO = 512

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str | bytes], bytes] = {}

    def encode(self, headers: Iterable[tuple[str, str | bytes]]) -> bytes:
        memo = self._memo
        parts = []
        for field in headers:
            enc = memo.get(field)
            if enc is None:
                enc = encode_field(*field)
                if len(memo) >= self._MAX_MEMO:
                    memo.clear()
                memo[field] = enc
            parts.append(enc)
        return b"".join(parts)
