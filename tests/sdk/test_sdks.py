"""The official OpenAI, Anthropic and MCP Python SDKs, unchanged, against a running hub.

Run by tests/sdk/run.sh (from scripts/test.sh), which starts a hub of its own with the mock
provider and passes:

    SDK_BASE_URL                          the hub, e.g. http://127.0.0.1:38123
    SDK_ADMIN_EMAIL, SDK_ADMIN_PASSWORD   an admin made with `aihub admin create-user`

The admin signs in, grants itself credits and makes an API key, which the SDKs use.

Every check that spends credits also checks the balance: what the request took equals the
price table of GET /v1/models times the usage the answer reported. (The checks that spend run
inside `billed`, which counts the account's events, so one check's charge never lands in the
next one's.)
"""

import base64
import json
import os
import sys
import time
import urllib.request

import anthropic
import anyio
import httpx2
import openai
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel

BASE = os.environ["SDK_BASE_URL"]
MODEL = "mock-1"


def call(method, path, body=None, token=None, headers=None):
    request = urllib.request.Request(
        f"{BASE}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {}),
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


signed_in = call("POST", "/api/auth/login",
                 {"email": os.environ["SDK_ADMIN_EMAIL"], "password": os.environ["SDK_ADMIN_PASSWORD"]})
TOKEN = signed_in["token"]
call("POST", "/api/admin/credits/grant",
     {"user_id": signed_in["user"]["id"], "amount_micros": 50_000_000, "reason": "SDK tests"},
     token=TOKEN, headers={"Idempotency-Key": f"sdk-{time.time_ns()}"})
KEY = call("POST", "/api/keys", {"name": "sdk tests", "scopes": ["inference", "read"]}, token=TOKEN)["key"]

oa = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)

# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6364f8cf500f0003860180a563f46b0000000049454e44ae426082"
    )
).decode()


def get(path):
    return call("GET", path, token=TOKEN)


def settled_balance(at_least_version=0):
    """The balance once nothing is reserved and the read model holds at least
    `at_least_version` events of the account (it lags the event store a little)."""
    deadline = time.monotonic() + 15
    while True:
        balance = get("/api/credits/balance")
        if balance["reserved_micros"] == 0 and balance["version"] >= at_least_version:
            return balance
        if time.monotonic() > deadline:
            raise AssertionError(f"reservations never settled: {balance}")
        time.sleep(0.05)


PRICES = {m["id"]: m["pricing"] for m in get("/v1/models")["data"]}


def cost(model, prompt, completion, cached=0):
    """The price table's charge in micro-credits, rounded up as the hub rounds."""
    p = PRICES[model]
    total = (prompt - cached) * p["input"] + cached * p["cached_input"] + completion * p["output"]
    return -(-total // 1_000_000)


checks = []


def check(name):
    def register(fn):
        checks.append((name, fn))
        return fn

    return register


def billed(expected_fn, requests=1):
    """Runs `requests` requests and asserts the balance moved by exactly the price of their
    usage. Each request is two events of the account: its reservation and its settlement."""
    before = settled_balance()
    expected = expected_fn()
    after = settled_balance(before["version"] + 2 * requests)
    charged = before["available_micros"] - after["available_micros"]
    assert charged == expected, f"charged {charged}, the price table says {expected}"


@check("openai: chat, JSON")
def _():
    def run():
        answer = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=32
        )
        assert answer.object == "chat.completion"
        assert answer.choices[0].message.role == "assistant"
        assert answer.choices[0].message.content
        assert answer.choices[0].finish_reason in ("stop", "length")
        u = answer.usage
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        return cost(MODEL, u.prompt_tokens, u.completion_tokens)

    billed(run)


@check("openai: chat, streamed with usage")
def _():
    def run():
        stream = oa.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me a story."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        assert text and finish == "stop" and usage
        return cost(MODEL, usage.prompt_tokens, usage.completion_tokens)

    billed(run)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@check("openai: tools, a round trip")
def _():
    def run():
        question = {"role": "user", "content": "Weather in Paris?"}
        first = oa.chat.completions.create(model=MODEL, messages=[question], tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"
        assert "city" in json.loads(call.function.arguments)
        second = oa.chat.completions.create(
            model=MODEL,
            tools=TOOLS,
            messages=[
                question,
                first.choices[0].message,
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
            ],
        )
        assert second.choices[0].message.content and not second.choices[0].message.tool_calls
        return cost(MODEL, first.usage.prompt_tokens, first.usage.completion_tokens) + cost(
            MODEL, second.usage.prompt_tokens, second.usage.completion_tokens
        )

    billed(run, requests=2)


@check("openai: tools, streamed")
def _():
    def run():
        stream = oa.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
            stream_options={"include_usage": True},
        )
        name, arguments, usage = None, "", None
        for chunk in stream:
            usage = chunk.usage or usage
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                assert call.index == 0
                name = name or call.function.name
                arguments += call.function.arguments or ""
        assert name == "get_weather" and "city" in json.loads(arguments)
        return cost(MODEL, usage.prompt_tokens, usage.completion_tokens)

    billed(run)


class Person(BaseModel):
    name: str
    age: int


@check("openai: response_format json_schema, parsed")
def _():
    def run():
        answer = oa.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "Invent a person."}], response_format=Person
        )
        person = answer.choices[0].message.parsed
        assert isinstance(person, Person), answer
        return cost(MODEL, answer.usage.prompt_tokens, answer.usage.completion_tokens)

    billed(run)


@check("openai: an image")
def _():
    def run():
        answer = oa.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"}},
                    ],
                }
            ],
        )
        assert answer.choices[0].message.content
        return cost(MODEL, answer.usage.prompt_tokens, answer.usage.completion_tokens)

    billed(run)


@check("openai: embeddings")
def _():
    def run():
        answer = oa.embeddings.create(model="mock-embed-1", input=["the sea", "a credit", "the sea"])
        vectors = [item.embedding for item in answer.data]
        assert len(vectors) == 3 and len(vectors[0]) == 256
        assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
        assert abs(sum(x * x for x in vectors[1]) - 1.0) < 1e-3
        return cost("mock-embed-1", answer.usage.prompt_tokens, 0)

    billed(run)


@check("openai: models.list")
def _():
    ids = [m.id for m in oa.models.list()]
    assert MODEL in ids, ids


@check("openai: errors raise the SDK's own exceptions")
def _():
    for call, kind in [
        (lambda: oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}]),
         openai.NotFoundError),
        (lambda: oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True),
         openai.BadRequestError),
        (lambda: oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=5),
         openai.BadRequestError),
        (lambda: openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-wrong", max_retries=0).models.list(),
         openai.AuthenticationError),
    ]:
        try:
            call()
        except kind as error:
            assert error.body and "message" in error.body, error.body
        else:
            raise AssertionError(f"no {kind.__name__}")
    try:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True)
    except openai.BadRequestError as error:
        assert error.code == "unsupported_parameter" and error.param == "logprobs", error.body


@check("anthropic: messages, JSON")
def _():
    def run():
        message = an.messages.create(
            model=MODEL, max_tokens=64, system="Be brief.",
            messages=[{"role": "user", "content": "Tell me about the sea."}],
        )
        assert message.type == "message" and message.role == "assistant"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason in ("end_turn", "max_tokens")
        return cost(MODEL, message.usage.input_tokens, message.usage.output_tokens)

    billed(run)


@check("anthropic: messages, streamed")
def _():
    def run():
        with an.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Tell me a story."}]
        ) as stream:
            text = "".join(stream.text_stream)
            message = stream.get_final_message()
        assert text and message.content[0].text == text
        assert message.stop_reason in ("end_turn", "max_tokens")
        return cost(MODEL, message.usage.input_tokens, message.usage.output_tokens)

    billed(run)


@check("anthropic: tools, a round trip")
def _():
    tools = [{"name": "get_weather", "description": "Weather.",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

    def run():
        question = {"role": "user", "content": "Weather in Quito?"}
        first = an.messages.create(model=MODEL, max_tokens=64, tools=tools, tool_choice={"type": "any"},
                                   messages=[question])
        assert first.stop_reason == "tool_use"
        use = next(b for b in first.content if b.type == "tool_use")
        assert use.name == "get_weather" and "city" in use.input
        second = an.messages.create(
            model=MODEL, max_tokens=64, tools=tools,
            messages=[question, {"role": "assistant", "content": first.content},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}]}],
        )
        assert second.content[0].type == "text"
        return cost(MODEL, first.usage.input_tokens, first.usage.output_tokens) + cost(
            MODEL, second.usage.input_tokens, second.usage.output_tokens)

    billed(run, requests=2)


@check("anthropic: count_tokens")
def _():
    messages = [{"role": "user", "content": "How many tokens is this?"}]

    def run():
        counted = an.messages.count_tokens(model=MODEL, messages=messages)
        message = an.messages.create(model=MODEL, max_tokens=16, messages=messages)
        assert counted.input_tokens == message.usage.input_tokens, (counted, message.usage)
        return cost(MODEL, message.usage.input_tokens, message.usage.output_tokens)

    billed(run)


@check("anthropic: errors raise the SDK's own exceptions")
def _():
    try:
        an.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as error:
        assert error.body["error"]["type"] == "not_found_error", error.body
    else:
        raise AssertionError("no NotFoundError")
    try:
        anthropic.Anthropic(base_url=BASE, api_key="sk-wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.AuthenticationError:
        pass
    else:
        raise AssertionError("no AuthenticationError")


def mcp_client(key):
    """An MCP client over Streamable HTTP to the hub's /mcp, sending `key` as a bearer token."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(f"{BASE}/mcp", http_client=http))


@check("mcp: list and call tools")
def _():
    async def session():
        async with mcp_client(KEY) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"chat", "balance", "usage_summary", "list_models"} <= names, names
            models = await client.call_tool("list_models", {})
            assert not models.is_error and "mock-1" in json.dumps(models.structured_content), models
            balance = await client.call_tool("balance", {})
            assert not balance.is_error and balance.structured_content["available_micros"] > 0, balance
            summary = await client.call_tool("usage_summary", {"group_by": "day"})
            assert not summary.is_error, summary
            missing = await client.call_tool("chat", {"prompt": "hi", "model": "no-such-model"})
            assert missing.is_error, missing
            return await client.call_tool("chat", {"prompt": "Say hello.", "model": MODEL, "max_tokens": 32})

    def run():
        answer = anyio.run(session)
        assert not answer.is_error, answer
        text = answer.content[0].text
        billed_usage = answer.structured_content["usage"]
        assert text == answer.structured_content["text"] and text
        return cost(MODEL, billed_usage["prompt_tokens"], billed_usage["completion_tokens"])

    billed(run)


@check("mcp: a wrong key is refused")
def _():
    async def session():
        async with mcp_client("sk-wrong") as client:
            await client.list_tools()

    try:
        anyio.run(session)
    except Exception:  # noqa: BLE001 - the SDK raises its own error for a 401
        pass
    else:
        raise AssertionError("a wrong key listed the tools")


def main():
    failed = 0
    for name, fn in checks:
        try:
            fn()
            print(f"ok    {name}")
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the run fails
            failed += 1
            print(f"FAIL  {name}: {type(error).__name__}: {error}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
