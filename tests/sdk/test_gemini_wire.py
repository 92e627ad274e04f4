"""What reaches a Gemini-format upstream: the `openai` SDK calls switchyard's routed `chat-gemini`
/ `embed-gemini` models, then each test reads the request tests/sdk/gemini_mock.py last
received (`GET /_mock/last`) and checks switchyard's translation to Google AI's v1beta API.

The SDK-level behaviour through this upstream is covered by test_openai.py and
test_anthropic.py (target `routed-gemini`); these tests pin the wire itself.
"""

from __future__ import annotations

import json
import os
import urllib.request

import openai
import pytest

from conftest import TIMEOUT

MOCK = os.environ.get("SWITCHYARD_GEMINI_MOCK_URL")
ROUTED = os.environ.get("SWITCHYARD_ROUTED_URL")

pytestmark = pytest.mark.skipif(
    not MOCK or not ROUTED, reason="SWITCHYARD_GEMINI_MOCK_URL unset: run tests/sdk/run.sh"
)

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture
def client() -> openai.OpenAI:
    with openai.OpenAI(
        base_url=f"{ROUTED}/v1", api_key="sk-sdk-test", max_retries=0, timeout=TIMEOUT
    ) as c:
        yield c


def last() -> dict:
    with urllib.request.urlopen(f"{MOCK}/_mock/last", timeout=TIMEOUT) as r:
        return json.load(r)


def test_key_travels_in_header_not_url(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="chat-gemini", messages=[{"role": "user", "content": "key"}]
    )
    got = last()
    assert got["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert got["headers"].get("x-goog-api-key") == "<set>"
    assert "key" not in got["query"]
    assert "authorization" not in got["headers"], "the caller's credential is not forwarded"


def test_stream_uses_alt_sse(client: openai.OpenAI) -> None:
    list(client.chat.completions.create(
        model="chat-gemini", messages=[{"role": "user", "content": "s"}], stream=True
    ))
    got = last()
    assert got["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert got["query"] == {"alt": ["sse"]}


def test_messages_and_generation_config(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="chat-gemini",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=["END"],
    )
    body = last()["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
        {"role": "user", "parts": [{"text": "second"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }


def test_seed_and_penalties_forwarded(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="chat-gemini",
        messages=[{"role": "user", "content": "deterministic"}],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    gen = last()["body"].get("generationConfig", {})
    assert gen.get("seed") == 7
    assert gen.get("presencePenalty") == 0.5
    assert gen.get("frequencyPenalty") == 0.25


def test_tools_as_json_schema_and_named_choice(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="chat-gemini",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[{
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS},
        }],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    body = last()["body"]
    assert body["tools"] == [{
        "functionDeclarations": [
            {"name": "get_weather", "description": "Weather", "parametersJsonSchema": WEATHER_PARAMS}
        ]
    }]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    call = r.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 1, "unit": "c"}


def test_tool_round_trip_wire(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}}
    first = client.chat.completions.create(
        model="chat-gemini", messages=[{"role": "user", "content": "Oslo"}], tools=[tool]
    )
    call = first.choices[0].message.tool_calls[0]
    client.chat.completions.create(
        model="chat-gemini",
        tools=[tool],
        messages=[
            {"role": "user", "content": "Oslo"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
        ],
    )
    contents = last()["body"]["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model_part = contents[1]["parts"][0]
    assert model_part["functionCall"] == {
        "name": "get_weather", "args": {"city": "Oslo", "days": 1, "unit": "c"}
    }
    # A JSON-object tool result is sent as the response object itself.
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}
    ]


def test_json_schema_response_format_wire(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="chat-gemini",
        messages=[{"role": "user", "content": "Ada"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    gen = last()["body"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseJsonSchema"] == schema
    assert json.loads(r.choices[0].message.content) == {"name": "Ada"}


def test_embeddings_wire(client: openai.OpenAI) -> None:
    client.embeddings.create(
        model="embed-gemini", input=["a", "b"], dimensions=64, encoding_format="float"
    )
    got = last()
    assert got["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert got["body"] == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]},
             "outputDimensionality": 64}
            for t in ("a", "b")
        ]
    }
