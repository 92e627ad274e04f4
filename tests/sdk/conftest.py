"""Shared fixtures: which switchyard to call, and with which model names.

tests/sdk/run.sh starts the servers and exports their base URLs:

- SWITCHYARD_BUILTIN_URL: `switchyard serve` without config (the in-process mock provider).
- SWITCHYARD_ROUTED_URL: `switchyard serve --config` whose public models route to a separate
  `switchyard mock` upstream, as an `openai_compatible` provider (`chat-default`, ...) and as
  an `anthropic` provider (`chat-anthropic`, ...).
- SWITCHYARD_ANTHROPIC: "1" when the build serves `POST /v1/messages`.

Every SDK test is parametrized over the targets below, so each runs against the in-process
mock and through a real upstream hop.
"""

from __future__ import annotations

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
            "upstream", "echo",
        ),
        Target(
            "routed-anthropic", routed, "chat-anthropic", "chat-anthropic-lorem", "",
            "upstream-anthropic", "echo", embeddings=False,
        ),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = _targets()
        metafunc.parametrize("target", targets, ids=[t.id for t in targets])


ANTHROPIC_SURFACE = os.environ.get("SWITCHYARD_ANTHROPIC") == "1"
ANTHROPIC_SKIP_REASON = (
    "this switchyard build has no Anthropic caller surface (POST /v1/messages is not served)"
)

TIMEOUT = 15.0
