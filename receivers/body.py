"""Request bodies: content-encoding handling with a hard cap on the decompressed size."""

from __future__ import annotations

import zlib

from loopkit_receivers.errors import BadRequest, TooLarge, UnsupportedMedia

_CHUNK = 256 * 1024
_FIRST_SLICE = 1024
# Real exporters send one gzip member; a body of thousands of empty ones is an attack on the decoder.
MAX_GZIP_MEMBERS = 64


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body; TooLarge as soon as the output passes `limit` (zip bombs stop early)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, 31, limit)
    if encoding == "deflate":
        # RFC 9110 "deflate" is zlib-wrapped, but some clients send raw deflate: accept both.
        return _inflate(body, 15 if _looks_like_zlib(body) else -15, limit)
    raise UnsupportedMedia(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")


def _looks_like_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    view = memoryview(data)
    pos = members = 0
    try:
        while True:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise BadRequest(f"gzip body has more than {MAX_GZIP_MEMBERS} members; exporters send one")
            d = zlib.decompressobj(wbits)
            size = _FIRST_SLICE
            while not d.eof:
                if pos >= len(view):
                    raise BadRequest("compressed body is truncated")
                # Input goes in slices of a memoryview, small at a member's start and doubling: zlib copies what
                # a call leaves over (unused_data, unconsumed_tail), so the copies stay proportional to the
                # member, not to the rest of the body (which made many small members quadratic).
                piece = view[pos : pos + size]
                pos += len(piece)
                size = min(size * 2, _CHUNK)
                while True:
                    chunk = d.decompress(piece, _CHUNK)  # bounded output: a zip bomb stops at the limit
                    out += chunk
                    if len(out) > limit:
                        raise TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
                    piece = d.unconsumed_tail
                    if d.eof or (not piece and len(chunk) < _CHUNK):
                        break
            pos -= len(d.unused_data)
            # A gzip file may hold several members back to back; zlib or raw deflate is one stream.
            if wbits != 31 or pos >= len(view):
                break
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {'gzip' if wbits == 31 else 'deflate'} data: {exc}") from exc
    return bytes(out)
