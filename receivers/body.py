"""Request bodies: content-encoding handling with a hard cap on the decompressed size."""

from __future__ import annotations

import zlib

from loopkit_receivers.errors import BadRequest, TooLarge, UnsupportedMedia

_CHUNK = 256 * 1024


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
    pending = data
    try:
        while True:
            d = zlib.decompressobj(wbits)
            chunk_in = pending
            while True:
                chunk = d.decompress(chunk_in, _CHUNK)
                out += chunk
                if len(out) > limit:
                    raise TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
                chunk_in = d.unconsumed_tail
                if d.eof or (not chunk and not chunk_in):
                    break
            if not d.eof:
                raise BadRequest("compressed body is truncated")
            # A gzip file may hold several members back to back.
            pending = d.unused_data
            if wbits != 31 or not pending:
                break
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {'gzip' if wbits == 31 else 'deflate'} data: {exc}") from exc
    return bytes(out)
