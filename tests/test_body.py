"""Request body decompression: gzip members are capped and inflating is linear in the body (issue 22 item 1)."""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib

import httpx
import pytest
from conftest import make_settings, new_project
from google.rpc import status_pb2

from loopkit_core.server import in_thread
from loopkit_receivers.body import MAX_GZIP_MEMBERS, decompress
from loopkit_receivers.errors import BadRequest, TooLarge

LIMIT = 64 * 1024 * 1024


def members(*parts: bytes) -> bytes:
    """One gzip member per part, back to back."""
    return b"".join(gzip.compress(part) for part in parts)


def test_several_members_below_the_cap_are_one_body():
    parts = [f"member {i};".encode() * (i + 1) for i in range(5)]
    assert decompress(members(*parts), "gzip", LIMIT) == b"".join(parts)


def test_exactly_the_cap_of_members_is_accepted_and_one_more_is_400():
    parts = [bytes([i]) * 3000 for i in range(MAX_GZIP_MEMBERS)]
    assert MAX_GZIP_MEMBERS == 64
    assert decompress(members(*parts), "gzip", LIMIT) == b"".join(parts)
    with pytest.raises(BadRequest) as refused:
        decompress(members(*parts, b"one too many"), "gzip", LIMIT)
    assert refused.value.message == "gzip body has more than 64 members; exporters send one"
    assert refused.value.http_status == 400


def test_members_larger_than_a_slice_and_random_data_come_out_exact():
    # Incompressible members of 1 MiB and more cross every input slice boundary, the last one mid-member.
    parts = [os.urandom(1024 * 1024 + 17), b"", os.urandom(300_001), b"z" * 5_000_000]
    assert decompress(members(*parts), "gzip", LIMIT) == b"".join(parts)
    assert decompress(members(*parts), "x-gzip", LIMIT) == b"".join(parts)


def test_deflate_is_one_stream_zlib_or_raw():
    data = os.urandom(700_000) + b"a" * 700_000
    assert decompress(zlib.compress(data), "deflate", LIMIT) == data
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(data) + raw.flush(), "deflate", LIMIT) == data


def test_a_truncated_last_member_is_400_and_the_output_cap_is_exact():
    with pytest.raises(BadRequest, match="compressed body is truncated"):
        decompress(members(b"first", b"second")[:-5], "gzip", LIMIT)
    assert decompress(members(b"a" * 1000, b"b" * 1000), "gzip", 2000) == b"a" * 1000 + b"b" * 1000
    with pytest.raises(TooLarge):
        decompress(members(b"a" * 1000, b"b" * 1001), "gzip", 2000)


def test_many_empty_members_are_refused_at_once():
    # The repro of issue 22: 8 MiB of empty members took 45.5 s to inflate (the remaining input was copied
    # once per member); now the 65th member stops it.
    hostile = gzip.compress(b"") * (8 * 2**20 // 20)
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="more than 64 members"):
        decompress(hostile, "gzip", LIMIT)
    assert time.perf_counter() - started < 0.5


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory):
    """A LoopKit decoding in one worker process, as `loopkit serve` does on two cores."""
    with in_thread(make_settings(tmp_path_factory.mktemp("body"), decode_workers=1)) as running:
        yield running


def test_a_body_of_empty_gzip_members_is_400_fast_and_another_project_is_served_meanwhile(pool_server):
    hostile_project, other = new_project(pool_server, "hostile"), new_project(pool_server, "bystander")
    hostile = gzip.compress(b"") * (4 * 2**20 // 20)  # 4 MiB: took 10.4 s before the fix
    answer: dict[str, object] = {}

    def send() -> None:
        started = time.monotonic()
        response = httpx.post(
            f"{pool_server.http_url}/v1/traces",
            content=hostile,
            headers={
                "content-type": "application/x-protobuf",
                "content-encoding": "gzip",
                **hostile_project.auth(),
            },
            timeout=120,
        )
        answer["seconds"] = time.monotonic() - started
        answer["response"] = response

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    time.sleep(0.5)  # the hostile body is uploaded and being decoded
    with httpx.Client(base_url=pool_server.http_url, timeout=120) as client:
        started = time.monotonic()
        response = client.post("/v1/traces", json={"records": [{"type": "event", "name": "meanwhile"}]},
                                headers=other.auth())  # fmt: skip
        assert response.status_code == 200 and response.json()["accepted"] == 1
        assert time.monotonic() - started < 3.0  # it waited 69 s before the fix
    thread.join(timeout=120)
    assert not thread.is_alive()
    response = answer["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 400
    assert status_pb2.Status.FromString(response.content).message == (
        "gzip body has more than 64 members; exporters send one"
    )
    assert answer["seconds"] < 5.0
