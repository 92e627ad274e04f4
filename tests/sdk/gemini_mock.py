#!/usr/bin/env python3
"""A Gemini-format upstream for the SDK tests: Google AI's `generativelanguage` v1beta REST API,
as documented, answered by the same rules as switchyard's built-in echo mock. Stdlib only.

    python3 gemini_mock.py [--api-key KEY]

Binds 127.0.0.1:0 and prints the bound port, alone, as its first stdout line. Serves:

- `POST /v1beta/models/{model}:generateContent` -> one `GenerateContentResponse`;
- `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` -> `data: {GenerateContentResponse}`
  events separated by CRLF CRLF, the last carrying `finishReason` and complete `usageMetadata`
  (without `alt=sse`: the JSON array of those responses, as Google does);
- `POST /v1beta/models/{model}:batchEmbedContents` -> `{"embeddings": [{"values": [...]}]}`.

Authentication: header `x-goog-api-key`. Missing -> 401 UNAUTHENTICATED; a different key ->
400 INVALID_ARGUMENT with reason API_KEY_INVALID (what Google answers for a bad key).
Errors use Google's body: `{"error": {"code", "message", "status", "details"?}}`.

Requests are checked the way Google's JSON parser checks them: unknown field names are a 400
("Invalid JSON payload received. Unknown name ..."), and so are the documented conflicts
(`parameters` with `parametersJsonSchema`, `responseSchema` with `responseJsonSchema`, a JSON
schema without `responseMimeType: application/json`, a content without parts, a bad role).

Answers (model names containing `lorem` are the lorem model, any other is echo):
- echo: the last user text part. With `tools[].functionDeclarations` and a
  `toolConfig.functionCallingConfig.mode` other than NONE, when the last content is a user text,
  a `functionCall` of the first (or first allowed) function, `args` filled from its schema
  (`parametersJsonSchema` or `parameters`): strings get the user text, integers 1, numbers 1.5,
  booleans true, enums their first value, arrays one item, objects recursively. When the last
  content holds a `functionResponse`: `tool result: <JSON of its response>`. With
  `generationConfig.responseMimeType == "application/json"`: `{"echo": text}`, or a value filled
  from `responseJsonSchema` / `responseSchema`.
- lorem: `maxOutputTokens` (default 16) words of lorem ipsum, finishReason MAX_TOKENS when
  `maxOutputTokens` was given.
- embeddings: a deterministic unit vector per text, `outputDimensionality` (default 16) long.
Streamed text comes one word per chunk.

For wire-level tests, `GET /_mock/last` answers the last `POST` as it arrived:
`{"path", "query", "headers", "body"}` (header names lower-cased; the API key shown as `<set>`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import struct
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua"
).split()

PATH_RE = re.compile(r"^/v1beta/models/([^/:]+):([A-Za-z]+)$")

# Field names the v1beta JSON parser accepts (proto3 JSON: lowerCamel and the original
# snake_case both parse). Anything else is "Unknown name" -> 400.
def _names(*camel: str) -> frozenset[str]:
    out = set()
    for n in camel:
        out.add(n)
        out.add(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), n))
    return frozenset(out)


REQUEST_FIELDS = _names(
    "model", "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
    "generationConfig", "cachedContent",
)
CONTENT_FIELDS = _names("role", "parts")
PART_FIELDS = _names(
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata", "partMetadata",
)
GENERATION_CONFIG_FIELDS = _names(
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution",
)
TOOL_FIELDS = _names(
    "functionDeclarations", "googleSearchRetrieval", "codeExecution", "googleSearch",
    "urlContext", "computerUse", "fileSearch", "googleMaps",
)
FUNCTION_DECLARATION_FIELDS = _names(
    "name", "description", "behavior", "parameters", "parametersJsonSchema", "response",
    "responseJsonSchema",
)
TOOL_CONFIG_FIELDS = _names("functionCallingConfig", "retrievalConfig")
FUNCTION_CALLING_FIELDS = _names("mode", "allowedFunctionNames")
MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}
EMBED_REQUEST_FIELDS = _names("model", "content", "taskType", "title", "outputDimensionality")


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str, details: list | None = None):
        super().__init__(message)
        self.code, self.status, self.message, self.details = code, status, message, details

    def body(self) -> dict:
        err = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def get(obj: dict, camel: str, default=None):
    """A field by its lowerCamel name or its snake_case one."""
    if camel in obj:
        return obj[camel]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(snake, default)


def check_fields(obj, allowed: frozenset[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise invalid(f"Invalid JSON payload received. {where}: expected an object.")
    for k in obj:
        if k not in allowed:
            raise invalid(
                f'Invalid JSON payload received. Unknown name "{k}" at \'{where}\': '
                "Cannot find field."
            )


# ---- request validation ---------------------------------------------------------------------


def check_content(content, where: str, system: bool = False) -> None:
    check_fields(content, CONTENT_FIELDS, where)
    role = content.get("role")
    if not system and role not in ("user", "model"):
        raise invalid(f"Please use a valid role: user, model. ({where}.role = {role!r})")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        pw = f"{where}.parts[{j}]"
        check_fields(part, PART_FIELDS, pw)
        data_fields = [
            k for k in part
            if k not in ("thought", "thoughtSignature", "thought_signature", "videoMetadata",
                         "video_metadata", "partMetadata", "part_metadata")
        ]
        if len(data_fields) != 1:
            raise invalid(f"* GenerateContentRequest.{pw}: a part must hold exactly one kind of data "
                          f"(found {sorted(data_fields) or 'none'})")
        if "text" in part and not isinstance(part["text"], str):
            raise invalid(f"* GenerateContentRequest.{pw}.text: must be a string")
        if "text" in part and part["text"] == "" and not system:
            raise invalid(f"* GenerateContentRequest.{pw}: text parts must not be empty")
        inline = get(part, "inlineData")
        if inline is not None:
            check_fields(inline, _names("mimeType", "data"), f"{pw}.inline_data")
            if not get(inline, "mimeType"):
                raise invalid(f"* GenerateContentRequest.{pw}.inline_data.mime_type: required")
            try:
                base64.b64decode(inline.get("data", ""), validate=True)
            except Exception:
                raise invalid(f"Invalid value at '{pw}.inline_data.data' (TYPE_BYTES): "
                              "Base64 decoding failed") from None
        call = get(part, "functionCall")
        if call is not None:
            check_fields(call, _names("id", "name", "args"), f"{pw}.function_call")
            if not call.get("name"):
                raise invalid(f"* GenerateContentRequest.{pw}.function_call.name: required")
            if "args" in call and not isinstance(call["args"], dict):
                raise invalid(f"Invalid value at '{pw}.function_call.args' (type.googleapis.com/"
                              "google.protobuf.Struct): not an object")
        resp = get(part, "functionResponse")
        if resp is not None:
            check_fields(resp, _names("id", "name", "response", "parts", "willContinue",
                                      "scheduling"), f"{pw}.function_response")
            if not resp.get("name"):
                raise invalid(f"* GenerateContentRequest.{pw}.function_response.name: required")
            if not isinstance(resp.get("response"), dict):
                raise invalid(f"Invalid value at '{pw}.function_response.response' "
                              "(type.googleapis.com/google.protobuf.Struct): not an object")


def check_generate(body: dict) -> None:
    check_fields(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, c in enumerate(contents):
        check_content(c, f"contents[{i}]")
    system = get(body, "systemInstruction")
    if system is not None:
        check_content(system, "system_instruction", system=True)
        if any("text" not in p for p in system["parts"]):
            raise invalid("* GenerateContentRequest.system_instruction: text parts only")
    names = set()
    for i, tool in enumerate(body.get("tools") or []):
        check_fields(tool, TOOL_FIELDS, f"tools[{i}]")
        for j, decl in enumerate(get(tool, "functionDeclarations") or []):
            w = f"tools[{i}].function_declarations[{j}]"
            check_fields(decl, FUNCTION_DECLARATION_FIELDS, w)
            name = decl.get("name") or ""
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", name):
                raise invalid(f"* GenerateContentRequest.{w}.name: Invalid function name.")
            if "parameters" in decl and get(decl, "parametersJsonSchema") is not None:
                raise invalid(f"* GenerateContentRequest.{w}: parameters and parameters_json_schema "
                              "cannot both be set")
            names.add(name)
    tool_config = get(body, "toolConfig")
    if tool_config is not None:
        check_fields(tool_config, TOOL_CONFIG_FIELDS, "tool_config")
        fcc = get(tool_config, "functionCallingConfig")
        if fcc is not None:
            check_fields(fcc, FUNCTION_CALLING_FIELDS, "tool_config.function_calling_config")
            mode = fcc.get("mode", "MODE_UNSPECIFIED")
            if mode not in MODES:
                raise invalid(f"Invalid value at 'tool_config.function_calling_config.mode' "
                              f"(type.googleapis.com/google.ai.generativelanguage.v1beta."
                              f"FunctionCallingConfig.Mode), \"{mode}\"")
            allowed = get(fcc, "allowedFunctionNames") or []
            if allowed and mode not in ("ANY", "VALIDATED"):
                raise invalid("* GenerateContentRequest.tool_config.function_calling_config."
                              "allowed_function_names: only allowed with mode ANY")
            for n in allowed:
                if n not in names:
                    raise invalid(f"* GenerateContentRequest.tool_config.function_calling_config."
                                  f"allowed_function_names: {n} is not a declared function")
    gen = get(body, "generationConfig")
    if gen is not None:
        check_fields(gen, GENERATION_CONFIG_FIELDS, "generation_config")
        mime = get(gen, "responseMimeType")
        has_schema = get(gen, "responseSchema") is not None
        has_json_schema = get(gen, "responseJsonSchema") is not None
        if has_schema and has_json_schema:
            raise invalid("* GenerateContentRequest.generation_config: response_schema and "
                          "response_json_schema cannot both be set")
        if (has_schema or has_json_schema) and mime not in ("application/json", "text/x.enum"):
            raise invalid("* GenerateContentRequest.generation_config.response_mime_type: "
                          "a response schema requires response_mime_type application/json")
        if mime is not None and mime not in ("text/plain", "application/json", "text/x.enum"):
            raise invalid(f"* GenerateContentRequest.generation_config.response_mime_type: "
                          f"unsupported mime type {mime}")
        count = get(gen, "candidateCount")
        if count is not None and not (isinstance(count, int) and 1 <= count <= 8):
            raise invalid("* GenerateContentRequest.generation_config.candidate_count: "
                          "must be between 1 and 8")
        max_out = get(gen, "maxOutputTokens")
        if max_out is not None and not (isinstance(max_out, int) and max_out >= 1):
            raise invalid("* GenerateContentRequest.generation_config.max_output_tokens: "
                          "must be a positive integer")


# ---- answers --------------------------------------------------------------------------------


def fill(schema, text: str, root=None, depth: int = 0):
    """A value satisfying (the common subset of) a JSON Schema or Gemini `Schema`."""
    if root is None:
        root = schema
    if depth > 8 or not isinstance(schema, dict):
        return None if depth > 8 else text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return fill(target, text, root, depth + 1)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and
                                                   str(o.get("type", "")).lower() == "null")]
            return fill((non_null or options)[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    kind = str(kind).lower()  # Gemini's Schema spells types STRING, OBJECT, ...
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: fill(v, text, root, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [fill(schema.get("items", {}), text, root, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def words(text: str) -> int:
    return max(1, len(text.split()))


def prompt_tokens(body: dict) -> int:
    n = 0
    contents = list(body.get("contents") or [])
    system = get(body, "systemInstruction")
    if system:
        contents.append(system)
    for c in contents:
        for p in c.get("parts") or []:
            n += 4 if "text" not in p else words(p["text"])
    return max(1, n)


def answer(model: str, body: dict) -> tuple[list[dict], str, int]:
    """(parts, finishReason, candidate tokens) for one candidate."""
    gen = get(body, "generationConfig") or {}
    contents = body["contents"]
    last = contents[-1]
    last_user_text = ""
    for c in reversed(contents):
        texts = [p["text"] for p in c.get("parts", []) if "text" in p and not p.get("thought")]
        if c.get("role") == "user" and texts:
            last_user_text = texts[-1]
            break

    if "lorem" in model:
        max_out = get(gen, "maxOutputTokens")
        n = 16 if max_out is None else max_out
        text = " ".join(LOREM[i % len(LOREM)] for i in range(n))
        return [{"text": text}], "STOP" if max_out is None else "MAX_TOKENS", n

    decls = [d for t in body.get("tools") or [] for d in (get(t, "functionDeclarations") or [])]
    fcc = get(get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = fcc.get("mode", "AUTO")
    allowed = get(fcc, "allowedFunctionNames") or []
    last_parts = last.get("parts", [])
    last_is_user_text = last.get("role") == "user" and any("text" in p for p in last_parts)
    if decls and mode != "NONE" and last_is_user_text:
        decl = next((d for d in decls if d["name"] in allowed), None) if allowed else decls[0]
        schema = get(decl, "parametersJsonSchema")
        if schema is None:
            schema = decl.get("parameters") or {"type": "object", "properties": {}}
        args = fill(schema, last_user_text)
        part = {"functionCall": {"name": decl["name"], "args": args}}
        return [part], "STOP", math.ceil(len(json.dumps(args)) / 4) or 1

    responses = [get(p, "functionResponse") for p in last_parts if get(p, "functionResponse")]
    if responses:
        text = "tool result: " + "; ".join(json.dumps(r.get("response")) for r in responses)
        return [{"text": text}], "STOP", words(text)

    text = last_user_text
    if get(gen, "responseMimeType") == "application/json":
        schema = get(gen, "responseJsonSchema")
        if schema is None:
            schema = get(gen, "responseSchema")
        value = {"echo": text} if schema is None else fill(schema, text)
        text = json.dumps(value)
    return [{"text": text}], "STOP", words(text)


def usage(prompt: int, candidates: int | None) -> dict:
    u = {"promptTokenCount": prompt, "totalTokenCount": prompt + (candidates or 0),
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if candidates is not None:
        u["candidatesTokenCount"] = candidates
    return u


def generate(model: str, body: dict) -> tuple[dict, list[dict]]:
    """The whole response, and the same response as stream chunks."""
    check_generate(body)
    count = get(get(body, "generationConfig") or {}, "candidateCount") or 1
    parts, finish, out_tokens = answer(model, body)
    prompt = prompt_tokens(body)
    rid = uuid.uuid4().hex[:22]
    meta = {"modelVersion": model, "responseId": rid}

    def candidate(i: int, parts: list[dict], finish: str | None) -> dict:
        c = {"content": {"parts": parts, "role": "model"}, "index": i}
        if finish:
            c["finishReason"] = finish
        return c

    whole = {
        "candidates": [candidate(i, parts, finish) for i in range(count)],
        "usageMetadata": usage(prompt, out_tokens * count),
        **meta,
    }
    # Streamed: text one word (with its following space) per chunk, a function call whole; the
    # last chunk carries finishReason and the complete usage. Earlier chunks carry the prompt
    # count, as Google's do.
    if len(parts) == 1 and "text" in parts[0] and parts[0]["text"]:
        pieces = re.findall(r"\S+\s*|\s+", parts[0]["text"])
        steps = [[{"text": p}] for p in pieces]
    else:
        steps = [parts]
    chunks = []
    for k, step in enumerate(steps):
        final = k == len(steps) - 1
        chunks.append({
            "candidates": [candidate(i, step, finish if final else None) for i in range(count)],
            "usageMetadata": usage(prompt, out_tokens * count if final else None),
            **meta,
        })
    return whole, chunks


def embed(model: str, body: dict) -> dict:
    check_fields(body, _names("requests"), "")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("* BatchEmbedContentsRequest.requests: at least one request is required")
    out = []
    for i, r in enumerate(requests):
        check_fields(r, EMBED_REQUEST_FIELDS, f"requests[{i}]")
        if r.get("model") != f"models/{model}":
            raise invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: the model of each "
                          f"request must match the batch model models/{model}, got "
                          f"{r.get('model')!r}")
        content = r.get("content")
        check_fields(content, CONTENT_FIELDS, f"requests[{i}].content")
        texts = [p.get("text") for p in content.get("parts") or []]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise invalid(f"* BatchEmbedContentsRequest.requests[{i}].content: text parts only")
        dims = get(r, "outputDimensionality") or 16
        if not isinstance(dims, int) or not 1 <= dims <= 3072:
            raise invalid(f"* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: "
                          "out of range")
        out.append({"values": vector("".join(texts), dims)})
    return {"embeddings": out}


def vector(text: str, dims: int) -> list[float]:
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    v = [(x / 2**31) - 1.0 for x in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


# ---- HTTP -----------------------------------------------------------------------------------


LAST_LOCK = threading.Lock()
LAST: dict = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gemini-mock"
    api_key = "test-gemini-key"

    def log_message(self, fmt, *args):  # noqa: N802 - http.server's name
        sys.stderr.write("gemini-mock: " + (fmt % args) + "\n")

    def send_json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.send_json(200, {"ok": True})
        elif path == "/_mock/last":
            with LAST_LOCK:
                self.send_json(200, dict(LAST))
        else:
            self.send_json(404, ApiError(404, "NOT_FOUND", "Not found.").body())

    def do_POST(self):  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        raw = self.read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "x-goog-api-key" in headers:
            headers["x-goog-api-key"] = "<set>" if headers["x-goog-api-key"] == self.api_key else "<wrong>"
        try:
            recorded = json.loads(raw) if raw else None
        except ValueError:
            recorded = raw.decode("utf-8", "replace")
        with LAST_LOCK:
            LAST.clear()
            LAST.update(path=url.path, query=query, headers=headers, body=recorded)
        try:
            m = PATH_RE.match(url.path)
            if not m:
                raise ApiError(404, "NOT_FOUND", f"Method not found: POST {url.path}")
            model, method = m.groups()
            if "key" in query:
                # Google accepts ?key=, but a gateway that puts its key in the URL leaks it to logs.
                raise invalid("gemini-mock: the API key must travel in x-goog-api-key, not ?key=")
            key = self.headers.get("x-goog-api-key")
            if key is None:
                raise ApiError(
                    401, "UNAUTHENTICATED",
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to "
                    "call this API.",
                )
            if key != self.api_key:
                raise ApiError(400, "INVALID_ARGUMENT",
                               "API key not valid. Please pass a valid API key.",
                               [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                 "reason": "API_KEY_INVALID",
                                 "domain": "googleapis.com"}])
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/json"):
                raise invalid(f"gemini-mock: expected Content-Type application/json, got {ctype!r}")
            try:
                body = json.loads(raw or b"null")
            except ValueError as e:
                raise invalid(f"Invalid JSON payload received. {e}") from None
            if not isinstance(body, dict):
                raise invalid("Invalid JSON payload received. Expected an object.")
            if method == "generateContent":
                whole, _ = generate(model, body)
                self.send_json(200, whole)
            elif method == "streamGenerateContent":
                _, chunks = generate(model, body)
                if query.get("alt") == ["sse"]:
                    self.send_sse(chunks)
                else:
                    self.send_json(200, chunks)
            elif method == "batchEmbedContents":
                self.send_json(200, embed(model, body))
            else:
                raise ApiError(404, "NOT_FOUND", f"Method not found: {method}")
        except ApiError as e:
            self.send_json(e.code, e.body())

    def send_sse(self, chunks: list[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            event = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api-key", default="test-gemini-key")
    args = ap.parse_args()
    Handler.api_key = args.api_key
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
