"""The official `anthropic` Python SDK, unchanged, against switchyard's Anthropic surface.

Base URL is `http://host:port` (no /v1). Current SDKs send `Authorization: Bearer` (not only
`x-api-key`) and a recent `anthropic-version`; switchyard must accept both as they come.
Each test runs against every target in conftest.py: the in-process mock, an `openai_compatible`
upstream hop (Anthropic caller, OpenAI upstream), an `anthropic` upstream hop and a `gemini`
upstream hop (Anthropic caller, Gemini upstream: tests/sdk/gemini_mock.py).
"""

from __future__ import annotations

import json

import anthropic
import pydantic
import pytest

from conftest import ANTHROPIC_SKIP_REASON, ANTHROPIC_SURFACE, TIMEOUT, Target, tool_result_text

pytestmark = pytest.mark.skipif(not ANTHROPIC_SURFACE, reason=ANTHROPIC_SKIP_REASON)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
}
CLOCK_TOOL = {
    "name": "get_time",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}, "precise": {"type": "boolean"}},
    },
}


@pytest.fixture
def client(target: Target) -> anthropic.Anthropic:
    with anthropic.Anthropic(
        base_url=target.url, api_key="sk-ant-sdk-test", max_retries=0, timeout=TIMEOUT
    ) as c:
        yield c


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_sdk_sends_bearer_and_recent_version(client: anthropic.Anthropic, target: Target) -> None:
    """Guards the premise of this file: what the pinned SDK sends, and that it is accepted."""
    raw = client.messages.with_raw_response.create(
        model=target.chat, max_tokens=32, messages=user("auth")
    )
    sent = raw.http_request.headers
    assert sent["authorization"] == "Bearer sk-ant-sdk-test"
    assert sent["anthropic-version"] >= "2023-06-01"
    assert raw.status_code == 200


def test_x_api_key_and_old_version_accepted(target: Target) -> None:
    """Older callers: `x-api-key` only, `anthropic-version: 2023-06-01`."""
    with anthropic.Anthropic(
        base_url=target.url,
        api_key=None,
        auth_token=None,
        default_headers={"x-api-key": "sk-ant-old", "anthropic-version": "2023-06-01"},
        max_retries=0,
        timeout=TIMEOUT,
    ) as c:
        raw = c.messages.with_raw_response.create(
            model=target.chat, max_tokens=32, messages=user("old style")
        )
    assert raw.http_request.headers["x-api-key"] == "sk-ant-old"
    assert "authorization" not in raw.http_request.headers
    assert raw.parse().content[0].text == "old style"


def test_messages_plain(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(model=target.chat, max_tokens=64, messages=user("hello claude"))
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id
    assert len(m.content) == 1
    assert m.content[0].type == "text"
    assert m.content[0].text == "hello claude"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0
    assert m.usage.output_tokens > 0


def test_messages_system(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(
        model=target.chat,
        max_tokens=64,
        system="You are a parrot.",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second, as blocks"}]},
        ],
    )
    assert m.content[0].text == "second, as blocks"


def test_messages_system_blocks(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(
        model=target.chat,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=user("blocks"),
    )
    assert m.content[0].text == "blocks"


def test_messages_max_tokens_stop(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(model=target.lorem, max_tokens=4, messages=user("x"))
    assert len(m.content[0].text.split()) == 4
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 4


def test_raw_response_headers(client: anthropic.Anthropic, target: Target) -> None:
    raw = client.messages.with_raw_response.create(
        model=target.chat, max_tokens=32, messages=user("hdr")
    )
    assert raw.headers["x-switchyard-provider"] == target.provider
    assert raw.headers["x-switchyard-model"] == target.upstream_model
    assert raw.headers.get("x-request-id")
    assert int(raw.headers["x-switchyard-overhead-us"]) >= 0


# ---- streaming ------------------------------------------------------------------------------


def test_stream_text(client: anthropic.Anthropic, target: Target) -> None:
    with client.messages.stream(
        model=target.chat, max_tokens=64, messages=user("stream me please")
    ) as stream:
        texts = [e.text for e in stream if e.type == "text"]
        final = stream.get_final_message()
    assert len(texts) >= 2, "one text event per word"
    assert "".join(texts) == "stream me please"
    assert final.content[0].type == "text"
    assert final.content[0].text == "stream me please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_stream_text_stream_and_usage(client: anthropic.Anthropic, target: Target) -> None:
    with client.messages.stream(model=target.lorem, max_tokens=6, messages=user("x")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 6
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 6
    assert final.usage.input_tokens > 0


def test_stream_raw_events(client: anthropic.Anthropic, target: Target) -> None:
    """`create(stream=True)`: the raw event sequence Anthropic documents."""
    events = list(
        client.messages.create(model=target.chat, max_tokens=32, messages=user("raw events"), stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds.index("content_block_start") < kinds.index("content_block_delta")
    assert events[-2].delta.stop_reason == "end_turn"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "raw events"


# ---- tools ----------------------------------------------------------------------------------


def test_tool_use(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(
        model=target.chat, max_tokens=128, messages=user("Paris"), tools=[WEATHER_TOOL]
    )
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].id
    assert uses[0].name == "get_weather"
    assert uses[0].input == {"city": "Paris", "days": 1, "unit": "c"}


def test_tool_choice_named(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.create(
        model=target.chat,
        max_tokens=128,
        messages=user("UTC"),
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_time"
    assert use.input == {"zone": "UTC", "precise": True}


def test_tool_result_round_trip(client: anthropic.Anthropic, target: Target) -> None:
    first = client.messages.create(
        model=target.chat, max_tokens=128, messages=user("Oslo"), tools=[WEATHER_TOOL]
    )
    use = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(
        model=target.chat,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=user("Oslo")
        + [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}],
            },
        ],
    )
    assert second.content[0].text == tool_result_text(target, "sunny, 21C")
    assert second.stop_reason == "end_turn"


def test_stream_tool_use_input_json(client: anthropic.Anthropic, target: Target) -> None:
    with client.messages.stream(
        model=target.chat, max_tokens=128, messages=user("Lisbon"), tools=[WEATHER_TOOL]
    ) as stream:
        partials = []
        snapshot = None
        for e in stream:
            if e.type == "input_json":
                partials.append(e.partial_json)
                snapshot = e.snapshot
        final = stream.get_final_message()
    assert partials, "streamed tool input arrives as input_json_delta events"
    assert snapshot == {"city": "Lisbon", "days": 1, "unit": "c"}
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather"
    assert use.input == {"city": "Lisbon", "days": 1, "unit": "c"}
    assert final.stop_reason == "tool_use"


# ---- structured output ----------------------------------------------------------------------


class City(pydantic.BaseModel):
    name: str
    population: int
    area: float
    capital: bool


def test_output_config_json_schema(client: anthropic.Anthropic, target: Target) -> None:
    """Native JSON outputs (`output_config.format`): modelled for OpenAI-format upstreams,
    replayed verbatim to an Anthropic upstream."""
    m = client.messages.create(
        model=target.chat,
        max_tokens=128,
        messages=user("Bern"),
        output_config={
            "format": {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                    "required": ["name", "tags"],
                    "additionalProperties": False,
                },
            }
        },
    )
    assert json.loads(m.content[0].text) == {"name": "Bern", "tags": ["Bern"]}


def test_parse_pydantic(client: anthropic.Anthropic, target: Target) -> None:
    m = client.messages.parse(
        model=target.chat, max_tokens=128, messages=user("Bern"), output_format=City
    )
    assert m.parsed_output == City(name="Bern", population=1, area=1.5, capital=True)


# ---- count_tokens, models -------------------------------------------------------------------


def test_count_tokens(client: anthropic.Anthropic, target: Target) -> None:
    short = client.messages.count_tokens(model=target.chat, messages=user("hi"))
    long = client.messages.count_tokens(
        model=target.chat,
        system="You are a helpful assistant.",
        messages=user("a considerably longer message " * 20),
        tools=[WEATHER_TOOL],
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens


def test_models_list(client: anthropic.Anthropic, target: Target) -> None:
    page = client.models.list()
    ids = {m.id for m in page.data}
    assert target.chat in ids, ids
    assert all(m.type == "model" for m in page.data)


# ---- errors ---------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: anthropic.Anthropic, target: Target) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model-xyz", max_tokens=16, messages=user("hi"))
    assert e.value.status_code == 404
    assert isinstance(e.value.body, dict)
    assert e.value.body.get("type") == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model-xyz" in e.value.body["error"]["message"]


def test_unknown_model_stream_is_not_found(client: anthropic.Anthropic, target: Target) -> None:
    with pytest.raises(anthropic.NotFoundError):
        with client.messages.stream(
            model="no-such-model-xyz", max_tokens=16, messages=user("hi")
        ) as stream:
            stream.until_done()


def test_bad_role_is_bad_request(client: anthropic.Anthropic, target: Target) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=target.chat, max_tokens=16, messages=[{"role": "wizard", "content": "hi"}]  # type: ignore[list-item]
        )
    assert e.value.body["error"]["type"] == "invalid_request_error"
