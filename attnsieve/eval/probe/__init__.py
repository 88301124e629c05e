"""The probe model: a small Llama-architecture causal LM trained on retrieval, a lab instrument.

Its attention is real and learned (it must find the needle to answer), so a sparse prefill that
drops the needle's block shows up as a wrong answer, at a fraction of the cost of a 7B model.
It is not a language model. See README.md in this folder for training and the weights' location.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import LlamaConfig

from attnsieve.eval.probe.tokenizer import ByteTokenizer

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CHECKSUM_FILE = "SHA256SUMS"
VOCAB_SIZE = 264  # 259 byte-tokenizer ids, padded to a multiple of 8


def probe_config() -> LlamaConfig:
    """6 layers, hidden 256, 8 query / 2 KV heads of dim 64 (GQA g=4), RoPE theta 5e5."""
    tok = ByteTokenizer()
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    """``sha256sum``-compatible SHA256SUMS of every other file in ``directory``."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != CHECKSUM_FILE)
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in files]
    (directory / CHECKSUM_FILE).write_text("".join(lines))


def verify_checksums(directory: Path) -> None:
    """Raise ValueError if a file listed in SHA256SUMS is missing or differs."""
    for line in (directory / CHECKSUM_FILE).read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        path = directory / name
        if not path.is_file() or sha256_file(path) != expected:
            raise ValueError(f"{path} is missing or does not match its sha256 in {CHECKSUM_FILE}")


def weights_dir(path: str | Path | None = None) -> Path:
    """The probe weights folder (default: the shipped one), with a clear error when untrained."""
    directory = Path(path) if path is not None else WEIGHTS_DIR
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"probe weights not found in {directory}. Train them with `python -m "
            "attnsieve.eval.probe.train --out DIR` and copy DIR/weights there "
            "(see attnsieve/eval/probe/README.md)."
        )
    if (directory / CHECKSUM_FILE).is_file():
        verify_checksums(directory)
    return directory
