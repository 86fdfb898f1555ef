"""TEST HELPER, not part of unlearnlm's API: tiny random-initialised causal LMs, built offline in
seconds, for the tests (tests/conftest.py) and the fast benchmarks.

It ships in the package only so that tests and benchmarks of every checkout import it from one
place (``unlearnlm.tiny``); nothing in unlearnlm itself uses it. The tokenizer is a word-level
vocabulary fitted to the given texts (plus byte-free fallbacks), so every test sentence tokenises
without unknown words; the model is a 2-layer Llama.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<s>"]


def make_tiny_model(
    folder: str | Path,
    texts: Iterable[str],
    chat_template: bool = True,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    max_vocab: int = 30000,
) -> Path:
    """Write a tiny Llama and its tokenizer (at most ``max_vocab`` tokens) into ``folder``; returns the folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    corpus = list(texts) + ["Question: Answer: user assistant system"]
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=SPECIAL_TOKENS,
                                                                       min_frequency=1))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>" if chat_template else "<s>",
        bos_token="<|im_start|>",
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder
