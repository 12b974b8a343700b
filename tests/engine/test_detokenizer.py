"""Incremental detokenisation: no broken characters, and the stream equals the full decode."""

from __future__ import annotations

import random

import pytest

from djl_python.engine.detokenizer import IncrementalDetokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "emoji 😀🎉🚀 mixed",
    "日本語のテキストと中文文本",
    "def f(x):\n    return x * 2",
    "Paris 🚀 日本 done",
]


def stream(tokenizer, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.step(t) for t in ids]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("text", TEXTS)
def test_stream_of_known_text_never_splits_a_character(tiny_tokenizer, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    # Byte-level BPE: some tokens are fragments of a multi-byte character.
    deltas = stream(tiny_tokenizer, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text == tiny_tokenizer.decode(ids, skip_special_tokens=True)


def test_emoji_bytes_are_held_until_complete(tiny_tokenizer) -> None:
    # One token per byte of "😀" (4 bytes): nothing is emitted until the last byte.
    byte_ids = [tiny_tokenizer.convert_tokens_to_ids(tok) for tok in tiny_tokenizer.tokenize("😀")]
    pieces = [tiny_tokenizer.convert_tokens_to_ids(c) for c in "".join(tiny_tokenizer.convert_ids_to_tokens(byte_ids))]
    assert len(pieces) == 4
    deltas = stream(tiny_tokenizer, pieces)
    assert deltas == ["", "", "", "😀", ""]


def test_random_token_streams_equal_the_full_decode(tiny_tokenizer) -> None:
    rng = random.Random(0)
    vocab = len(tiny_tokenizer)
    for _ in range(50):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        assert "".join(stream(tiny_tokenizer, ids)) == tiny_tokenizer.decode(ids, skip_special_tokens=True)


def test_special_tokens_are_skipped(tiny_tokenizer) -> None:
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = tiny_tokenizer.encode("Hello") + [im_end] + tiny_tokenizer.encode(" world")
    assert "".join(stream(tiny_tokenizer, ids)) == "Hello world"


def test_window_stays_short_on_long_outputs(tiny_tokenizer) -> None:
    """Per-token cost is O(window): the decoded slices never grow with the output."""
    lengths: list[int] = []

    class Spy:
        def decode(self, ids, skip_special_tokens=True):
            lengths.append(len(ids))
            return tiny_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tiny_tokenizer.encode(" ".join(TEXTS * 4))
    detok = IncrementalDetokenizer(Spy())
    for t in ids:
        detok.step(t)
    assert len(ids) > 100 and max(lengths) <= 8


def test_real_sentencepiece_style_tokenizer(smollm2_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    for text in TEXTS + ["  leading spaces and  double  spaces", "ünïcödé ñ"]:
        ids = tok.encode(text)
        assert "".join(stream(tok, ids)) == tok.decode(ids, skip_special_tokens=True)
