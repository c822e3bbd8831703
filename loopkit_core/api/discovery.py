"""Liveness and agent discovery: `/healthz`, `/llms.txt`, `/openapi.json`, and the documentation llms.txt links."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from loopkit_core import __version__
from loopkit_core.api.errors import ApiError, json_response

STATIC = Path(__file__).resolve().parent.parent / "static"
# static/docs and static/README.md link to the repository's docs/ and README.md (package-data copies them into a
# wheel), so what is served is what is in the repository. A name is letters, digits, - and _: never a path.
DOC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,60}")


# The defaults llms.txt names (for a reader of the repository); the served copy names this server's instead.
LLMS_HTTP_DEFAULT = "(default `http://127.0.0.1:4318`)"
LLMS_GRPC_DEFAULT = "on port 4317 (default)"


@cache
def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP."""
    return json_response({"ok": True, "version": __version__})


async def llms_txt(request: Request) -> Response:
    """The llms.txt index for agents: the repository's llms.txt with this server's URLs in place of the defaults."""
    settings = request.app.state.loopkit.settings
    base, grpc = settings.base_url(), settings.grpc_endpoint()
    text = (
        _static("llms.txt")
        .decode()
        .replace(LLMS_HTTP_DEFAULT, f"(on this server `{base}`)")
        .replace(LLMS_GRPC_DEFAULT, f"at `{grpc}` on this server")
    )
    # The summary quote ends the header: this server's endpoints come right after it.
    head, sep, rest = text.partition("\n\n")
    first, sep2, rest2 = rest.partition("\n\n")
    here = f"This server: HTTP API and OTLP/HTTP at `{base}`, OTLP/gRPC at `{grpc}`; quickstart: {base}/quickstart.md"
    return Response(f"{head}{sep}{first}{sep2}{here}\n\n{rest2}", media_type="text/plain; charset=utf-8")


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 document of every HTTP route."""
    return Response(_static("openapi.json"), media_type="application/json")


async def packet_schema(request: Request) -> Response:
    """The JSON Schema of a diagnosis packet (and of the `json` handoff, which extends it)."""
    return Response(_static("packet.schema.json"), media_type="application/schema+json")


async def eval_example_schema(request: Request) -> Response:
    """The JSON Schema (2020-12) of one line of an eval dataset (GET /v1/packets/{packet_id}/evals?format=jsonl)."""
    return Response(_static("eval_example.schema.json"), media_type="application/schema+json")


async def quickstart_md(request: Request) -> Response:
    """The quickstart, with this server's URLs filled in."""
    return Response(_with_urls(request, "quickstart.md"), media_type="text/markdown; charset=utf-8")


async def agents_md(request: Request) -> Response:
    """The operating loop and its guardrails, for coding agents."""
    return Response(_static("agents.md"), media_type="text/markdown; charset=utf-8")


def _with_urls(request: Request, name: str) -> bytes:
    settings = request.app.state.loopkit.settings
    text = _static(name).decode()
    return (
        text.replace("{{BASE_URL}}", settings.base_url())
        .replace("{{GRPC_ENDPOINT}}", settings.grpc_endpoint())
        .encode()
    )


async def readme_md(request: Request) -> Response:
    """The README (install, run, the whole loop with curl and the OpenTelemetry SDK)."""
    return Response(_static("README.md"), media_type="text/markdown; charset=utf-8")


async def doc_md(request: Request) -> Response:
    """One page of the documentation (docs/NAME.md in the repository)."""
    name = request.path_params["name"]
    if not DOC_NAME.fullmatch(name) or not (STATIC / "docs" / f"{name}.md").is_file():
        raise ApiError(404, f"no documentation page {name[:60]!r}.md; /llms.txt lists them")
    return Response(_static(f"docs/{name}.md"), media_type="text/markdown; charset=utf-8")
