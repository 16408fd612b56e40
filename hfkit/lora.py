"""LoRA adapters (peft) on transformers and timm models: wrap for training, save, load.

An adapter result folder holds peft's ``adapter_config.json`` + ``adapter_model.safetensors`` (the
adapters and the whole task head), the tokenizer of a text model, and the trained model's
``config.json`` (transformers' or timm's), which says what the folder is (task, labels, the
preprocessing) like any result folder's. The frozen base weights are not copied:
``adapter_config.json`` names them (``base_model_name_or_path``: the recipe's model, a Hub id, a
timm name or an absolute path), and :func:`load_text_model` (``hfkit.models.load_image_model`` for
timm) loads them and the adapter on top. Merging is ``hfkit.models.merge_adapter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hfkit.offline import loading_weights
from hfkit.recipes import ModelArgs, RecipeError, TrainArgs
from hfkit.results import read_result
from hfkit.tasks import TASKS

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def base_source(args: ModelArgs) -> str:
    """Where the frozen weights come from, as the adapter folder will name them: a local folder as an
    absolute path (the folder is then usable from any working directory), else the Hub id."""
    if args.pretrained is False:
        raise RecipeError("train.strategy=lora adapts pretrained weights: with model.pretrained=false it "
                          "would freeze a random model; use strategy full, or pretrained weights")
    source = args.pretrained if isinstance(args.pretrained, str) else args.name
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def add_lora(model: torch.nn.Module, t: TrainArgs, task: str, base: str,
             default_targets: list[str] | None = None, also_trained: Sequence[str] = ()) -> torch.nn.Module:
    """``model`` as a peft model: LoRA adapters on the target layers (``train.lora_target_modules``,
    else ``default_targets``, else peft's default for the architecture), the task head and the
    ``also_trained`` modules fully trainable and saved with the adapter (peft's ``modules_to_save``),
    everything else frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type=TASKS[task].peft_task_type, r=t.lora_r, lora_alpha=t.lora_alpha,
                        lora_dropout=t.lora_dropout, target_modules=t.target_modules() or default_targets,
                        modules_to_save=[*head_modules(model, task), *also_trained] or None)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:  # no default targets for the architecture, or none of the names matched
        raise RecipeError(f"train.lora_target_modules: {e} Name the Linear layers to adapt, e.g. "
                          "--set train.lora_target_modules=query,value") from e
    peft_model.peft_config["default"].base_model_name_or_path = base
    return peft_model


def head_modules(model: torch.nn.Module, task: str) -> list[str]:
    """The task head: the model's children beside its backbone (``base_model_prefix``) that hold
    weights (BERT ``classifier``, DistilBERT ``pre_classifier`` + ``classifier``, ``qa_outputs``,
    Llama/Qwen ``score``). None for a causal LM: its LM head is the pretrained output embedding,
    often tied to the input one, not a new layer to learn. A timm model's is its ``get_classifier()``."""
    if TASKS[task].peft_task_type == "CAUSAL_LM":
        return []
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return [name for name, child in model.named_modules() if child is head and name]
    return [name for name, child in model.named_children()
            if name != model.base_model_prefix and any(True for _ in child.parameters())]


def is_adapter_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each tensor counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    """peft's adapter files and the trained model's ``config.json`` into ``folder``."""
    base = model.get_base_model()
    timm_model = hasattr(base, "pretrained_cfg")
    # a timm model has no token embeddings, whose vocabulary peft would otherwise look up (and warn)
    model.save_pretrained(folder, **({"save_embedding_layers": False} if timm_model else {}))
    # peft's stub card would go up as the user's own card; `hfkit push` writes the real one
    (Path(folder) / "README.md").unlink(missing_ok=True)
    if timm_model:  # timm: its Hub config, with the labels and preprocessing
        from timm.models._hub import save_config_for_hf

        save_config_for_hf(base, str(Path(folder) / "config.json"),
                           model_config={"label_names": base.pretrained_cfg.get("label_names")})
        return
    base.config.architectures = [type(base).__name__]  # what transformers' save_pretrained writes too
    base.config.save_pretrained(folder)


def load_text_model(auto_class, name_or_path: str, **kwargs) -> torch.nn.Module:
    """The transformers model of a result folder or Hub id: ``auto_class.from_pretrained``, or for an
    adapter folder its base model (sized by the folder's config, so the head fits) with the adapter
    loaded on top, unmerged: the outputs are those of the model at the end of training."""
    found = read_result(name_or_path)
    if not found.adapter:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    from peft import PeftModel
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    with loading_weights(found.base_model):  # the head's weights are the adapter's: no size check
        base = auto_class.from_pretrained(found.base_model, config=config, ignore_mismatched_sizes=True,
                                          **kwargs)
    return PeftModel.from_pretrained(base, name_or_path).eval()
