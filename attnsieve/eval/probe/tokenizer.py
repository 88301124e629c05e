"""Byte-level tokenizer of the probe model: ids 0-255 are the UTF-8 bytes, then 3 special tokens.

A tiny self-contained class (no downloads, no ``tokenizers`` dependency) with the part of the
Hugging Face tokenizer interface that attnsieve uses: ``encode``, ``decode``, the special token ids,
``save_pretrained`` and ``from_pretrained``. Saved as ``byte_tokenizer.json`` beside the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

FILE_NAME = "byte_tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes as tokens. ``encode`` prepends BOS like Llama's tokenizer unless
    ``add_special_tokens=False``; ``decode`` replaces invalid UTF-8 with U+FFFD."""

    pad_token_id = 256
    bos_token_id = 257
    eos_token_id = 258
    vocab_size = 259  # the model's embedding is padded to a multiple of 8 (264 rows)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        data, specials = bytearray(), {256: "<pad>", 257: "<s>", 258: "</s>"}
        out: list[str] = []
        for i in (int(t) for t in ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must be in [0, {self.vocab_size}), got {i}")
            if i < 256:
                data.append(i)
            elif not skip_special_tokens:
                out.append(data.decode("utf-8", errors="replace") + specials[i])
                data = bytearray()
        return "".join(out) + data.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size

    def save_pretrained(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        spec = {
            "type": "attnsieve-byte",
            "version": 1,
            "vocab_size": self.vocab_size,
            "special_tokens": {"<pad>": 256, "<s>": 257, "</s>": 258},
        }
        (path / FILE_NAME).write_text(json.dumps(spec, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ByteTokenizer:
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {FILE_NAME} in {directory}")
        spec = json.loads(path.read_text())
        if spec.get("type") != "attnsieve-byte" or spec.get("version") != 1:
            raise ValueError(f"{path} is not an attnsieve byte tokenizer (version 1): {spec}")
        return cls()
