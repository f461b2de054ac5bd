"""The official Python `openai` SDK against a running wick (base URL as the one argument):
Responses (plain, streamed through the SDK's own event accumulator, stored, continued,
deleted, function_call_output input), Completions, and chat n + logprobs. Any failed check
raises, so the process exits non-zero."""

import math
import sys

import openai
from openai import OpenAI

MODEL = "smollm2-135m-instruct"
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)


def responses():
    r = client.responses.create(
        model=MODEL,
        input="What is the capital of France?",
        instructions="Answer briefly.",
        max_output_tokens=8,
        temperature=0,
    )
    assert r.object == "response" and r.output_text, r
    assert r.usage.input_tokens > 0 and 1 <= r.usage.output_tokens <= 8, r.usage

    # The SDK's stream helper rebuilds the response from the events and fails on a
    # malformed sequence (or one that ends incomplete: the budget lets the answer finish).
    kinds = []
    with client.responses.stream(
        model=MODEL, input="Say hello.", max_output_tokens=64, temperature=0
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ], kinds
    assert "response.output_text.delta" in kinds, kinds
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ], kinds
    assert kinds[-1] == "response.completed", kinds
    assert final.output_text, final

    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text
    follow = client.responses.create(
        model=MODEL,
        input="Say it again.",
        previous_response_id=final.id,
        max_output_tokens=4,
    )
    assert follow.previous_response_id == final.id
    client.responses.delete(final.id)
    try:
        client.responses.retrieve(final.id)
        raise AssertionError("deleted response still there")
    except openai.NotFoundError:
        pass

    tool = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        ],
        tools=[{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        max_output_tokens=6,
    )
    assert tool.output, tool


def completions():
    r = client.completions.create(
        model=MODEL, prompt=["1, 2, 3,", "a, b, c,"], n=2, max_tokens=3, temperature=0, echo=True
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3], r
    assert r.choices[0].text.startswith("1, 2, 3,") and r.choices[2].text.startswith("a, b, c,")
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=4, temperature=0, stream=True
        )
        if c.choices
    )
    assert text, "streamed completion text"


def chat():
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        n=2,
        max_completion_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        stop=["\n\n"],
    )
    assert [c.index for c in r.choices] == [0, 1], r
    for choice in r.choices:
        for t in choice.logprobs.content:
            assert t.top_logprobs[0].token == t.token, t
            assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-6), t
            assert t.logprob <= 0


responses()
completions()
chat()
print(f"openai {openai.__version__}: responses, completions and chat checks passed")
