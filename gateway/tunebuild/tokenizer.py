"""Train the demo BPE tokenizer, give it its chat template, and encode training examples."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.tunebuild.data import Demonstration

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "Example",
    "build_tokenizer",
    "chat_template",
    "encode_demonstrations",
    "encode_texts",
]

# role -> token. The order fixes the ids: pad 0, bos 1, eos 2, system 3, user 4, assistant 5, unk 6.
DEFAULT_SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<|pad|>",
    "bos": "<|begin|>",
    "eos": "<|end|>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "unk": "<|unk|>",
}


def chat_template(tokens: Mapping[str, str] = DEFAULT_SPECIAL_TOKENS) -> str:
    """Jinja chat template: bos, then <|role|>content<|end|> per message; `developer` renders
    as system; the generation prompt is the bare assistant marker. Training uses the same text,
    so a generated answer ends with the eos token (<|end|>)."""
    s, u, a, e = tokens["system"], tokens["user"], tokens["assistant"], tokens["eos"]
    return (
        "{{- bos_token -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] in ['system', 'developer'] -%}"
        f"{s}{{{{ message['content'] | trim }}}}{e}"
        "{%- elif message['role'] == 'user' -%}"
        f"{u}{{{{ message['content'] | trim }}}}{e}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{a}{{{{ (message['content'] or '') | trim }}}}{e}"
        "{%- else -%}"
        "{{- raise_exception('unsupported role: ' ~ message['role']) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{a}{{%- endif -%}}"
    )


CHAT_TEMPLATE = chat_template()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, as used by the ByteLevel pre-tokenizer."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Mapping[str, str] = DEFAULT_SPECIAL_TOKENS,
    model_max_length: int = 512,
) -> Any:
    """Train a BPE on `texts`; return a transformers PreTrainedTokenizerFast.

    Byte-level pre-tokenisation, but the alphabet is printable ASCII plus tab and newline rather
    than all 256 bytes, so a 512-token vocabulary keeps ~400 merges (mostly whole words); any
    other byte encodes as the unk token. Special tokens get the first ids in the order of
    `special_tokens`; the tokenizer adds none of them implicitly: the chat template writes bos,
    and the template's markers delimit turns.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(special_tokens.values())
    byte_char = _bytes_to_unicode()
    alphabet = [byte_char[b] for b in [9, 10, *range(32, 127)]]
    tok = Tokenizer(models.BPE(unk_token=special_tokens["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    for i, token in enumerate(specials):
        if tok.token_to_id(token) != i:
            raise RuntimeError(f"special token {token} did not get id {i}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special_tokens["bos"],
        eos_token=special_tokens["eos"],
        pad_token=special_tokens["pad"],
        unk_token=special_tokens["unk"],
        additional_special_tokens=[special_tokens[k] for k in ("system", "user", "assistant")],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = chat_template(special_tokens)
    return fast


@dataclass(frozen=True, slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 where no loss is taken


def encode_demonstrations(
    demos: Sequence[Demonstration],
    tokenizer: Any,
    *,
    max_seq_len: int,
    loss_on_prompt: bool,
    log: Callable[[str], None] = print,
) -> list[Example]:
    """Render each demonstration with the tokenizer's chat template (the one used at inference)
    and mask everything before the final answer unless `loss_on_prompt`; the answer's trailing
    eos is always a target, so generation learns to stop. Longer ones are skipped."""
    examples: list[Example] = []
    for demo in demos:
        chat = demo.as_chat()
        full = tokenizer.apply_chat_template(chat, tokenize=False)
        prompt = tokenizer.apply_chat_template(
            chat[:-1], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        cut = len(prompt_ids)
        if ids[:cut] != prompt_ids or ids[-1] != tokenizer.eos_token_id:
            raise RuntimeError(f"{demo.source}:{demo.line}: prompt does not tokenize as a prefix")
        if len(ids) <= max_seq_len:
            cut = 1 if loss_on_prompt else cut
            examples.append(Example(ids, [-100] * cut + ids[cut:]))
    if len(examples) < len(demos):
        log(f"  skipped {len(demos) - len(examples)} demonstrations over {max_seq_len} tokens")
    if not examples:
        raise RuntimeError("no demonstrations fit the maximum sequence length")
    return examples


def encode_texts(texts: Sequence[str], tokenizer: Any, *, max_seq_len: int) -> list[Example]:
    """Plain text without the chat template (bos + text + eos), all of it a target: lets the
    base learn words it never says in chat, e.g. the tunes' vocabulary."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    examples = []
    for text in texts:
        ids = [bos, *tokenizer(text, add_special_tokens=False)["input_ids"], eos][:max_seq_len]
        examples.append(Example(ids, [-100, *ids[1:]]))
    return examples
