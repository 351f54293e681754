"""Tokenizers: the model's own (transformers), and a tiny byte-level one for tests and replays.

`load_tokenizer(path)` returns the Hugging Face tokenizer of a model directory or GGUF file.
`byte_tokenizer()` builds, with no download, a byte-level tokenizer whose vocabulary is the 256
bytes plus the ChatML and tool-call markers as single tokens, with a ChatML chat template. The
scripted and replay engines and the test suite use it so the solver's token-level logic (stop at
`</tool_call>` by id, EOS by id) runs exactly as with a Qwen2.5 model.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer(tool_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A deterministic byte-level tokenizer (no merges): every byte is one token; with
    `tool_tokens`, the tool-call markers are single tokens too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if tool_tokens:  # like Qwen2.5: single, non-special tokens
        tokenizer.add_tokens([TOOL_CALL_START, TOOL_CALL_END])
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_tokenizer(model_path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory, or of a GGUF file (its metadata carries one)."""
    from transformers import AutoTokenizer

    path = Path(model_path)
    if path.is_file() and path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(path))


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int | None:
    """The id of `text` if the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos: tuple[int, ...] = ()) -> tuple[int, ...]:
    """End-of-sequence ids: the tokenizer's EOS, `<|im_end|>`/`<|endoftext|>` where they are
    single tokens, and any EOS ids from the model's generation config."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|endoftext|>"):
        token_id = single_token_id(tokenizer, marker)
        if token_id is not None:
            ids.append(token_id)
    ids.extend(generation_eos)
    return tuple(dict.fromkeys(ids))
