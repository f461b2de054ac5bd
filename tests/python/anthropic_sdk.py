"""The official `anthropic` Python SDK against wick's /v1/messages: a plain message, a
streamed one (the SDK's own stream helper and raw events), a forced tool call and its
result going back, a streamed tool call (the SDK assembles input_json_delta), count_tokens,
and errors as the SDK's exception types. Usage: anthropic_sdk.py BASE_URL"""

import sys

import anthropic

base = sys.argv[1]
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
client = anthropic.Anthropic(base_url=base, api_key="not-needed", max_retries=0)
question = [{"role": "user", "content": "Say hello."}]
# SDK 2.x has no `temperature` argument (Anthropic's newer models take none); wick reads the
# API's field, so it goes in the body as older clients send it.
GREEDY = {"temperature": 0}

# Plain.
plain = client.messages.create(
    model=SMOL, max_tokens=12, extra_body=GREEDY, system="You are terse.", messages=question
)
assert plain.type == "message" and plain.role == "assistant", plain
assert plain.content[0].type == "text" and plain.content[0].text, plain
assert plain.stop_reason in ("end_turn", "max_tokens"), plain
assert plain.usage.input_tokens > 5 and 1 <= plain.usage.output_tokens <= 12, plain

# Streamed, through the SDK's helper: the same greedy answer.
with client.messages.stream(
    model=SMOL, max_tokens=12, extra_body=GREEDY, system="You are terse.", messages=question
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed == plain.content[0].text, (streamed, plain)
assert final.content[0].text == streamed and final.stop_reason == plain.stop_reason, final
assert final.usage.output_tokens == plain.usage.output_tokens, final

# Streamed, as raw events.
kinds = [
    e.type
    for e in client.messages.create(
        model=SMOL, max_tokens=4, messages=question, stream=True
    )
]
assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
assert kinds[-2] == "message_delta" and "content_block_delta" in kinds, kinds

# A forced tool call, and its result going back.
weather = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
called = client.messages.create(
    model=QWEN,
    max_tokens=64,
    extra_body=GREEDY,
    tools=[weather],
    tool_choice={"type": "tool", "name": "get_weather"},
    messages=ask,
)
assert called.stop_reason == "tool_use", called
use = next(b for b in called.content if b.type == "tool_use")
assert use.name == "get_weather" and isinstance(use.input["city"], str), use
answered = client.messages.create(
    model=QWEN,
    max_tokens=32,
    extra_body=GREEDY,
    tools=[weather],
    tool_choice={"type": "none"},
    messages=ask
    + [
        {"role": "assistant", "content": called.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 31 C"}
            ],
        },
    ],
)
assert answered.stop_reason != "tool_use" and answered.content[0].type == "text", answered
assert answered.content[0].text.strip(), answered
# The call and its result reached the prompt.
alone = client.messages.count_tokens(
    model=QWEN, tools=[weather], tool_choice={"type": "none"}, messages=ask
)
assert answered.usage.input_tokens > alone.input_tokens + 10, (answered, alone)

# A streamed tool call: the SDK assembles the input from input_json_delta events.
with client.messages.stream(
    model=QWEN,
    max_tokens=64,
    extra_body=GREEDY,
    tools=[weather],
    tool_choice={"type": "any"},
    messages=ask,
) as stream:
    final = stream.get_final_message()
use = next(b for b in final.content if b.type == "tool_use")
assert final.stop_reason == "tool_use" and isinstance(use.input["city"], str), final

# count_tokens counts what create would.
counted = client.messages.count_tokens(
    model=QWEN, tools=[weather], tool_choice={"type": "tool", "name": "get_weather"}, messages=ask
)
assert counted.input_tokens == called.usage.input_tokens, (counted, called)

# Errors arrive as the SDK's own exceptions.
try:
    client.messages.create(model="claude-no-such-model", max_tokens=4, messages=question)
    raise AssertionError("an unknown model was accepted")
except anthropic.NotFoundError as e:
    assert e.status_code == 404 and e.body["error"]["type"] == "not_found_error", e.body
try:
    client.messages.create(
        model=SMOL, max_tokens=4, messages=[{"role": "system", "content": "x"}]
    )
    raise AssertionError("a system-role message was accepted")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body

print("anthropic checks passed")
