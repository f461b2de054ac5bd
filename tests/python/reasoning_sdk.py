"""The official Python `openai` SDK reading a thinking model's thinking from a running wick
(base URL, then the model id, as arguments; tests/common/thinking.rs serves SmolLM2 under a
template that opens the think block). The SDK has no `reasoning_content` field, so it lands
in the message's and the delta's extra fields (`model_extra`), as with llama.cpp's server.
Any failed check raises, so the process exits non-zero."""

import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
MODEL = sys.argv[2]
STORY = [{"role": "user", "content": "Tell me a long story about a brave knight and a dragon."}]


def chat():
    r = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=10, temperature=0)
    message = r.choices[0].message
    thinking = message.model_extra["reasoning_content"]
    assert thinking and message.content is None, message
    assert r.usage.completion_tokens_details.reasoning_tokens == 10, r.usage

    deltas = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=STORY, max_tokens=10, temperature=0, stream=True
    ):
        delta = chunk.choices[0].delta
        assert not delta.content, delta
        deltas.append((delta.model_extra or {}).get("reasoning_content") or "")
    assert "".join(deltas) == thinking, (deltas, thinking)

    # OpenAI's own switch: no thinking, an answer.
    r = client.chat.completions.create(
        model=MODEL, messages=STORY, max_tokens=10, temperature=0, reasoning_effort="none"
    )
    message = r.choices[0].message
    assert message.content and "reasoning_content" not in (message.model_extra or {}), message

    # The thinking sent back with the conversation is accepted.
    history = STORY + [{"role": "assistant", "content": "Once", "reasoning_content": thinking}]
    history.append({"role": "user", "content": "Go on."})
    client.chat.completions.create(model=MODEL, messages=history, max_tokens=2)


def responses():
    # The SDK's stream helper rebuilds the response from the events and fails on a
    # malformed sequence (or one that ends incomplete: SmolLM2 ends this answer on its own,
    # still inside the think block).
    question = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=MODEL, messages=question, max_tokens=40, temperature=0)
    thinking = r.choices[0].message.model_extra["reasoning_content"]
    assert r.choices[0].finish_reason == "stop", r
    kinds, deltas = [], []
    with client.responses.stream(
        model=MODEL, input=question, max_output_tokens=40, temperature=0
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.reasoning_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == thinking, (deltas, thinking)
    reasoning, message = final.output[0], final.output[1]
    assert reasoning.type == "reasoning" and reasoning.content[0].text == thinking, final.output
    assert message.type == "message", final.output
    usage = final.usage
    assert usage.output_tokens_details.reasoning_tokens == usage.output_tokens, usage
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.done")


chat()
responses()
print("reasoning checks passed")
