"""Shared fixtures: which switchyard to call, and with which model names.

tests/sdk/run.sh starts the servers and exports their base URLs:

- SWITCHYARD_BUILTIN_URL: `switchyard serve` without config (the in-process mock provider).
- SWITCHYARD_ROUTED_URL: `switchyard serve --config` whose public models route to a separate
  `switchyard mock` upstream, as an `openai_compatible` provider (`chat-default`, ...) and as
  an `anthropic` provider (`chat-anthropic`, ...), and to tests/sdk/gemini_mock.py (Google AI's
  Gemini REST API, answered by the echo mock's rules) as a `gemini` provider (`chat-gemini`, ...).
- SWITCHYARD_ANTHROPIC: "1" when the build serves `POST /v1/messages`.

Every SDK test is parametrized over the targets below, so each runs against the in-process
mock and through a real upstream hop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Target:
    id: str
    url: str  # scheme://host:port, no /v1
    chat: str  # echo model
    lorem: str  # lorem model (streams max_tokens words)
    embed: str  # embeddings model
    provider: str  # expected x-switchyard-provider
    upstream_model: str  # expected x-switchyard-model for `chat`
    embeddings: bool = True  # whether the route can embed (Anthropic has no embeddings API)
    upstream_kind: str = "mock"  # wire format of the upstream: mock, openai, anthropic, gemini

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"


def _targets() -> list[Target]:
    builtin = os.environ.get("SWITCHYARD_BUILTIN_URL")
    routed = os.environ.get("SWITCHYARD_ROUTED_URL")
    if not builtin or not routed:
        raise pytest.UsageError(
            "SWITCHYARD_BUILTIN_URL and SWITCHYARD_ROUTED_URL are unset: run tests/sdk/run.sh"
        )
    return [
        Target("builtin", builtin, "mock/echo", "mock/lorem", "mock/embed", "mock", "echo"),
        Target(
            "routed-openai", routed, "chat-default", "chat-lorem", "embed-default",
            "upstream", "echo", upstream_kind="openai",
        ),
        Target(
            "routed-anthropic", routed, "chat-anthropic", "chat-anthropic-lorem", "",
            "upstream-anthropic", "echo", embeddings=False, upstream_kind="anthropic",
        ),
        Target(
            "routed-gemini", routed, "chat-gemini", "chat-gemini-lorem", "embed-gemini",
            "gemini-up", "gemini-2.5-flash", upstream_kind="gemini",
        ),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = _targets()
        metafunc.parametrize("target", targets, ids=[t.id for t in targets])


def tool_result_text(target: Target, content: str) -> str:
    """What the echo model answers after a plain-text tool result `content`.

    Gemini's `functionResponse.response` must be a JSON object (a protobuf Struct), so switchyard
    sends a text result as `{"content": text}` (src/wire/gemini.rs) and the Gemini mock reports
    that object as JSON; the other upstreams carry the text itself.
    """
    if target.upstream_kind == "gemini":
        return "tool result: " + json.dumps({"content": content})
    return "tool result: " + content


ANTHROPIC_SURFACE = os.environ.get("SWITCHYARD_ANTHROPIC") == "1"
ANTHROPIC_SKIP_REASON = (
    "this switchyard build has no Anthropic caller surface (POST /v1/messages is not served)"
)

TIMEOUT = 15.0
