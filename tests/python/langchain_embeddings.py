"""langchain-openai's OpenAIEmbeddings against wick (tests/embeddings_api.rs), as retrieval
code uses it: embed_documents, then embed_query, then the nearest document.

`check_embedding_ctx_length=False` sends the texts themselves. Left at its default (True),
OpenAIEmbeddings first tokenizes with tiktoken's cl100k_base, whose table tiktoken downloads
from OpenAI at first use (out of reach here), and would send OpenAI's token ids, which mean
nothing to another model's vocabulary.

Usage: langchain_embeddings.py BASE_URL MODEL.
"""
import sys

from langchain_openai import OpenAIEmbeddings

base, model = sys.argv[1], sys.argv[2]
embeddings = OpenAIEmbeddings(
    model=model,
    base_url=base + "/v1",
    api_key="not-needed",
    check_embedding_ctx_length=False,
)
docs = [
    "Paris is the capital of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Rust is a systems programming language focused on safety.",
]
vectors = embeddings.embed_documents(docs)
assert len(vectors) == 3 and all(len(v) == 384 for v in vectors), [len(v) for v in vectors]
query = embeddings.embed_query("Which language is memory safe?")


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


scores = [dot(query, v) for v in vectors]
assert max(range(3), key=lambda i: scores[i]) == 2, scores
print("langchain checks passed")
