"""The official openai SDK's embeddings.create against wick (tests/embeddings_api.rs).

Usage: embeddings_sdk.py BASE_URL MODEL. Exits non-zero on the first failed check.
"""
import math
import sys

import openai
from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="not-needed")
CAT = "The cat sat on the mat."


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


# The SDK asks for base64 unless told otherwise and decodes it itself.
one = client.embeddings.create(model=model, input=CAT)
v = one.data[0].embedding
assert len(v) == 384, len(v)
assert abs(math.sqrt(dot(v, v)) - 1) < 1e-4
assert one.usage.prompt_tokens == 9, one.usage
assert one.model == model

floats = client.embeddings.create(
    model=model, input=["A dog runs in the park.", CAT], encoding_format="float"
)
assert [d.index for d in floats.data] == [0, 1]
assert dot(floats.data[1].embedding, v) > 0.99999
assert dot(floats.data[0].embedding, v) < 0.9

ids = client.embeddings.create(model=model, input=[[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]])
assert dot(ids.data[0].embedding, v) > 0.99999

try:
    client.embeddings.create(model=model, input="")
    raise AssertionError("an empty input was embedded")
except openai.BadRequestError as e:
    assert e.status_code == 400

try:
    client.embeddings.create(model="smollm2-135m-instruct", input="hi")
    raise AssertionError("a chat model made embeddings")
except openai.BadRequestError as e:
    assert "embeddings" in str(e), e

print("embeddings checks passed")
