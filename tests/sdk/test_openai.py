"""The official `openai` Python SDK, unchanged, against switchyard's OpenAI surface.

Each test runs against every target in conftest.py: the in-process mock, a real
`openai_compatible` upstream hop, and an `anthropic` upstream hop (OpenAI caller, Anthropic
upstream) and a `gemini` upstream hop (OpenAI caller, Gemini upstream: tests/sdk/gemini_mock.py).
"""

from __future__ import annotations

import json
import math

import openai
import pydantic
import pytest

from conftest import TIMEOUT, Target, tool_result_text

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "precise": {"type": "boolean"}},
        },
    },
}


@pytest.fixture
def client(target: Target) -> openai.OpenAI:
    # No retries: a retried failure would hide a gateway bug behind a slow pass or a 2nd try.
    with openai.OpenAI(
        base_url=target.openai_base, api_key="sk-sdk-test", max_retries=0, timeout=TIMEOUT
    ) as c:
        yield c


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- chat: plain --------------------------------------------------------------------------


def test_chat_plain(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(model=target.chat, messages=user("hello switchyard"))
    assert r.object == "chat.completion"
    assert r.id
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello switchyard"
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_system_and_history(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(
        model=target.chat,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second, as parts"}]},
        ],
        temperature=0.2,
        max_tokens=64,
    )
    assert r.choices[0].message.content == "second, as parts"


def test_chat_lorem_max_tokens(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(model=target.lorem, messages=user("x"), max_tokens=5)
    assert len(r.choices[0].message.content.split()) == 5
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_chat_max_completion_tokens(client: openai.OpenAI, target: Target) -> None:
    """Newer callers send `max_completion_tokens` instead of `max_tokens`."""
    r = client.chat.completions.create(
        model=target.lorem, messages=user("x"), max_completion_tokens=3
    )
    assert len(r.choices[0].message.content.split()) == 3
    assert r.choices[0].finish_reason == "length"


def test_chat_common_optional_params(client: openai.OpenAI, target: Target) -> None:
    """Parameters SDK users routinely send are accepted (and do not break routing)."""
    r = client.chat.completions.create(
        model=target.chat,
        messages=user("with options"),
        temperature=0,
        top_p=1,
        seed=7,
        user="sdk-test-user",
        stop=["\n\n"],
        presence_penalty=0,
        frequency_penalty=0,
        n=1,
        parallel_tool_calls=False,
        metadata={"suite": "sdk"},
    )
    assert r.choices[0].message.content == "with options"


def test_chat_image_part(client: openai.OpenAI, target: Target) -> None:
    """A multimodal user message (text + image) decodes; echo answers its text."""
    pixel = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
    r = client.chat.completions.create(
        model=target.chat,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": pixel}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == "what is this"


def test_raw_response_headers(client: openai.OpenAI, target: Target) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=target.chat, messages=user("headers please")
    )
    assert raw.status_code == 200
    assert raw.headers["x-switchyard-provider"] == target.provider
    assert raw.headers["x-switchyard-model"] == target.upstream_model
    assert raw.headers.get("x-request-id")
    assert int(raw.headers["x-switchyard-overhead-us"]) >= 0
    completion = raw.parse()
    assert completion.choices[0].message.content == "headers please"


def test_caller_request_id_is_echoed(client: openai.OpenAI, target: Target) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=target.chat,
        messages=user("id"),
        extra_headers={"x-request-id": "sdk-test-req-42"},
    )
    assert raw.headers["x-request-id"] == "sdk-test-req-42"
    assert raw.request_id == "sdk-test-req-42" or raw.request_id is None


# ---- chat: streaming ----------------------------------------------------------------------


def test_stream_text(client: openai.OpenAI, target: Target) -> None:
    stream = client.chat.completions.create(
        model=target.chat, messages=user("stream these words please"), stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one stream has the same id"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream these words please"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.usage is None for c in chunks), "no usage chunk unless include_usage was asked"


def test_stream_include_usage(client: openai.OpenAI, target: Target) -> None:
    stream = client.chat.completions.create(
        model=target.lorem,
        messages=user("x"),
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 7
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + 7
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 7
    assert chunks[-2].choices[0].finish_reason == "length"


def test_stream_helper_final_completion(client: openai.OpenAI, target: Target) -> None:
    """The SDK's `chat.completions.stream` helper accumulates the snapshot itself."""
    with client.chat.completions.stream(
        model=target.chat, messages=user("helper stream")
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == "helper stream"
    assert final.choices[0].message.content == "helper stream"
    assert final.choices[0].finish_reason == "stop"


def test_stream_raw_response_headers(client: openai.OpenAI, target: Target) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=target.chat, messages=user("raw stream"), stream=True
    )
    assert raw.headers["x-switchyard-provider"] == target.provider
    assert raw.headers["content-type"].startswith("text/event-stream")
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "raw stream"


# ---- tools ----------------------------------------------------------------------------------


def test_tool_call(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(
        model=target.chat, messages=user("Paris"), tools=[WEATHER_TOOL]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 1, "unit": "c"}


def test_tool_choice_named(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(
        model=target.chat,
        messages=user("UTC"),
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments) == {"zone": "UTC", "precise": True}


def test_tool_choice_none(client: openai.OpenAI, target: Target) -> None:
    r = client.chat.completions.create(
        model=target.chat, messages=user("just talk"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert r.choices[0].message.content == "just talk"
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"


def test_tool_result_round_trip(client: openai.OpenAI, target: Target) -> None:
    first = client.chat.completions.create(
        model=target.chat, messages=user("Oslo"), tools=[WEATHER_TOOL]
    )
    call = first.choices[0].message.tool_calls[0]
    messages = user("Oslo") + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(
        model=target.chat, messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].message.content == tool_result_text(target, "sunny, 21C")
    assert second.choices[0].finish_reason == "stop"


def test_stream_tool_call_deltas(client: openai.OpenAI, target: Target) -> None:
    stream = client.chat.completions.create(
        model=target.chat,
        messages=user("Lisbon"),
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    fragments = 0
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or []:
            slot = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            if d.id:
                assert slot["id"] is None, "a tool call's id arrives once"
                slot["id"] = d.id
            if d.function and d.function.name:
                slot["name"] = d.function.name
            if d.function and d.function.arguments:
                slot["arguments"] += d.function.arguments
                fragments += 1
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Lisbon", "days": 1, "unit": "c"}
    assert fragments >= 1
    assert finish == "tool_calls"
    assert usage is not None and usage.completion_tokens > 0


def test_stream_helper_tool_call(client: openai.OpenAI, target: Target) -> None:
    with client.chat.completions.stream(
        model=target.chat, messages=user("Rome"), tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome", "days": 1, "unit": "c"}


# ---- structured output ----------------------------------------------------------------------


def _json_mode_observable(target: Target) -> None:
    if target.id == "routed-anthropic":
        pytest.skip(
            "anthropic upstream: switchyard emulates JSON modes with a system-prompt instruction "
            "(by design, src/wire/anthropic.rs); the mock upstream echoes and ignores instructions"
        )


def test_response_format_json_object(client: openai.OpenAI, target: Target) -> None:
    _json_mode_observable(target)
    r = client.chat.completions.create(
        model=target.chat,
        messages=user("as json"),
        response_format={"type": "json_object"},
    )
    assert json.loads(r.choices[0].message.content) == {"echo": "as json"}


def test_response_format_json_schema(client: openai.OpenAI, target: Target) -> None:
    _json_mode_observable(target)
    r = client.chat.completions.create(
        model=target.chat,
        messages=user("Ada"),
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "age", "tags"],
                    "additionalProperties": False,
                },
            },
        },
    )
    assert json.loads(r.choices[0].message.content) == {"name": "Ada", "age": 1, "tags": ["Ada"]}


class Person(pydantic.BaseModel):
    name: str
    age: int
    height: float
    member: bool
    level: str = pydantic.Field(json_schema_extra={"enum": ["gold", "silver"]})


def test_parse_pydantic(client: openai.OpenAI, target: Target) -> None:
    """`chat.completions.parse` sends a strict json_schema built from the pydantic model."""
    _json_mode_observable(target)
    r = client.chat.completions.parse(
        model=target.chat, messages=user("Grace"), response_format=Person
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert parsed == Person(name="Grace", age=1, height=1.5, member=True, level="gold")


# ---- embeddings -----------------------------------------------------------------------------


def _embed_model(target: Target) -> str:
    if not target.embeddings:
        pytest.skip("the anthropic upstream kind has no embeddings API")
    return target.embed


def test_embeddings_default_base64(client: openai.OpenAI, target: Target) -> None:
    """The SDK asks for base64 unless told otherwise, and decodes it to floats itself."""
    model = _embed_model(target)
    raw = client.embeddings.with_raw_response.create(model=model, input="hello")
    body = json.loads(raw.text)
    assert isinstance(body["data"][0]["embedding"], str), "the SDK asked for base64"
    r = raw.parse()
    assert r.object == "list"
    assert len(r.data) == 1
    vec = r.data[0].embedding
    assert len(vec) == 16
    assert all(isinstance(x, float) for x in vec)
    assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, rel_tol=1e-4)
    if target.upstream_kind == "gemini":
        # Google AI's BatchEmbedContentsResponse has `embeddings` only, no usage: nothing to relay.
        assert r.usage.prompt_tokens >= 0
    else:
        assert r.usage.prompt_tokens > 0


def test_embeddings_float_matches_base64(client: openai.OpenAI, target: Target) -> None:
    model = _embed_model(target)
    inputs = ["alpha", "beta", "gamma"]
    b64 = client.embeddings.create(model=model, input=inputs)
    flt = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    assert [d.index for d in flt.data] == [0, 1, 2]
    assert len(flt.data) == 3
    for a, b in zip(b64.data, flt.data):
        assert len(a.embedding) == len(b.embedding) == 16
        assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a.embedding, b.embedding))
    assert flt.data[0].embedding != flt.data[1].embedding
    again = client.embeddings.create(model=model, input="beta", encoding_format="float")
    assert again.data[0].embedding == flt.data[1].embedding, "embeddings are deterministic"


def test_embeddings_dimensions(client: openai.OpenAI, target: Target) -> None:
    model = _embed_model(target)
    r = client.embeddings.create(model=model, input="dims", dimensions=64, encoding_format="float")
    assert len(r.data[0].embedding) == 64


# ---- models ---------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI, target: Target) -> None:
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert target.chat in ids, ids
    assert all(m.object == "model" for m in models)
    assert all(m.owned_by for m in models)


def test_models_retrieve(client: openai.OpenAI, target: Target) -> None:
    # Ids with a `/` (mock/echo) arrive percent-encoded (mock%2Fecho): switchyard decodes them.
    m = client.models.retrieve(target.chat)
    assert m.id == target.chat
    assert m.object == "model"


def test_models_retrieve_unknown_is_not_found(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model-xyz")


# ---- errors ---------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model-xyz", messages=user("hi"))
    assert e.value.status_code == 404
    assert "no-such-model-xyz" in e.value.message
    assert isinstance(e.value.body, dict) and e.value.body.get("message")


def test_unknown_model_stream_is_not_found(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.NotFoundError):
        list(client.chat.completions.create(model="no-such-model-xyz", messages=user("hi"), stream=True))


def test_empty_messages_is_bad_request(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=target.chat, messages=[])
    assert e.value.status_code == 400


def test_wrong_type_is_bad_request(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=target.chat, messages=user("hi"), max_tokens="lots"  # type: ignore[arg-type]
        )
    assert e.value.status_code == 400
    assert e.value.param == "max_tokens"
    assert e.value.type == "invalid_request_error"


def test_bad_role_is_bad_request(client: openai.OpenAI, target: Target) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=target.chat, messages=[{"role": "wizard", "content": "hi"}]  # type: ignore[list-item]
        )


def test_embeddings_bad_input_is_bad_request(client: openai.OpenAI, target: Target) -> None:
    model = _embed_model(target)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=model, input={"not": "valid"})  # type: ignore[arg-type]
