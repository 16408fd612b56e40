"""Model creation (transformers, text tasks): a Hub id or a local folder, with its tokenizer.

Kept apart from :mod:`hfkit.models` (timm) so that a text prediction imports no timm, nor an image
prediction transformers: each is a second or more of start-up on a small CPU. (Training an image
model imports timm alone: the loop takes timm's optimizers and torch's LambdaLR.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from hfkit.lora import is_adapter_model, save_adapter
from hfkit.offline import loading_weights
from hfkit.recipes import ModelArgs, RecipeError
from hfkit.tasks import TASKS


def create_text_model(args: ModelArgs, task: str, label_names: list[str] | None = None):
    """(model, tokenizer) from a Hub id or a local folder; ``pretrained=false`` keeps only the config.

    For classification the head is sized to ``label_names`` and the names are stored as
    ``id2label``/``label2id``, so the saved folder shows labels by name.
    """
    import transformers

    source = args.pretrained if isinstance(args.pretrained, str) else args.name
    if isinstance(args.pretrained, str) and not Path(source).expanduser().exists():
        raise RecipeError(f"model.pretrained: no such folder '{source}'")
    model_class = getattr(transformers, TASKS[task].auto_class)
    with loading_weights(source, "model.name" if source == args.name else "model.pretrained"):
        kwargs = _attention_dropout(source, args.attention_dropout)
        if label_names is not None:
            kwargs.update(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                          label2id={name: i for i, name in enumerate(label_names)})
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        if args.pretrained is False:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
            model = model_class.from_config(config)
        else:  # a new head of another size than the checkpoint's is expected, not an error
            model = model_class.from_pretrained(source, ignore_mismatched_sizes=True, **kwargs)
    if tokenizer.pad_token is None:  # GPT-2 has none; padding then reuses end-of-text
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# what each architecture calls its attention dropout (BERT/RoBERTa, GPT-2, DistilBERT/Llama)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout")


def _attention_dropout(source: str, value: float | None) -> dict[str, float]:
    if value is None:
        return {}
    import transformers

    config = transformers.AutoConfig.from_pretrained(source)
    keys = [k for k in ATTENTION_DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise RecipeError(f"model.attention_dropout: {type(config).__name__} has no attention dropout "
                          "setting; leave it null")
    return dict.fromkeys(keys, value)


def text_model_saver(tokenizer):
    """A ``save_model`` for the training loop: safetensors weights (a LoRA model's adapter only, see
    :mod:`hfkit.lora`), config and the tokenizer."""
    def save(model: torch.nn.Module, folder: Path) -> None:
        if is_adapter_model(model):
            save_adapter(model, folder)
        else:
            model.save_pretrained(folder)  # safetensors: the only format transformers 5 writes
        tokenizer.save_pretrained(folder)
    return save


def position_limit(config, tokenizer) -> int:
    """Longest input (tokens) a transformers model takes: its tokenizer's ``model_max_length`` where
    set (a RoBERTa's says 512 of its 514 positions, two going to its padding offset), else its
    position embeddings. An unset limit reads as a huge number (transformers' VERY_LARGE_INTEGER)."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    told = getattr(tokenizer, "model_max_length", None) or limit
    return min(told, limit)


def clamp_max_length(requested: int | None, default: int, config, tokenizer) -> tuple[int, str | None]:
    """``data.max_length`` (else ``default``) cut to the model's position limit, and the note to print
    when the recipe asked for more: a longer text would crash the first forward pass that meets it."""
    limit = position_limit(config, tokenizer)
    wanted = requested or default
    if wanted <= limit:
        return wanted, None
    return limit, (f"data.max_length={wanted} is more than this model's {limit} positions: texts are "
                   f"cut to {limit} tokens" if requested else None)
