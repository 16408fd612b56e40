"""Model creation (timm): pretrained weights from the Hub, a local file or a local folder.

The classification head is reset to the data's classes, the class names travel in the saved
``config.json``, and the folder written by :func:`save_image_model` loads back with
``timm.create_model("local-dir:<folder>", pretrained=True)``.
"""

from __future__ import annotations

import copy
import difflib
import os
import shutil
from pathlib import Path

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, split_model_name_tag
from timm.models._hub import save_for_hf
from timm.models.resnet import BasicBlock, ResNet

from hfkit.lora import is_adapter_model, load_text_model, save_adapter
from hfkit.offline import loading_weights, offline_weights_help
from hfkit.recipes import ModelArgs, RecipeError
from hfkit.results import ADAPTER_CONFIG, RUN_FILES, ResultFolder, read_result

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# timm's register_model reads the preprocessing of a model from its module's default_cfgs
default_cfgs = generate_default_cfgs({"resnet18_cifar": dict(
    input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD, interpolation="bilinear", crop_pct=1.0,
    crop_mode="squash", num_classes=10, first_conv="conv1", classifier="fc")})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """ResNet-18 for 32x32 inputs: a 3x3 stride-1 stem and no max-pool (He et al.'s CIFAR
    setting), so the last stage still sees 4x4 features instead of 1x1.

    Registered with timm when hfkit.models is imported: ``timm.create_model("resnet18_cifar")``,
    and result folders of it load with ``timm.create_model("local-dir:...")`` after
    ``import hfkit.models``.
    """
    model = build_model_with_cfg(_CifarResNet, "resnet18_cifar", pretrained, block=BasicBlock,
                                 layers=(2, 2, 2, 2), **kwargs)
    return model


class _CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem; built before weights load, so checkpoints fit."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conv1 = torch.nn.Conv2d(self.conv1.in_channels, 64, 3, stride=1, padding=1, bias=False)
        # ResNet.__init__ initialised the stem it built; the replacement gets the same init
        torch.nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = torch.nn.Identity()


def create_image_model(args: ModelArgs, label_names: list[str],
                       image_size: int | None = None) -> torch.nn.Module:
    """Build a timm model with a fresh head for ``label_names``."""
    kwargs = dict(num_classes=len(label_names))
    name, pretrained = _model_source(args.name), args.pretrained
    if isinstance(pretrained, str):
        name, overlay = _local_weights(name, pretrained)
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    else:
        kwargs.update(pretrained=pretrained)
    try:
        with loading_weights(str(pretrained) if isinstance(pretrained, str) else name, "model.pretrained"):
            model = timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if not pretrained or isinstance(pretrained, str) or not isinstance(e.__cause__, OSError):
            raise
        raise RuntimeError(_no_weights_message(name, e.__cause__)) from e.__cause__
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=list(label_names))
    if image_size is not None:  # train and serve at the recipe's size, not the checkpoint's
        model.pretrained_cfg["input_size"] = (3, image_size, image_size)
    return model


def check_model_name(name: str) -> None:
    """RecipeError naming ``model.name`` unless timm has the architecture and its weights tag
    (said before the data loads, with the nearest names, in place of timm's bare "Unknown model"
    later); a folder, an ``hf-hub:`` id or an ``owner/name`` repo is left to loading."""
    if ":" in _model_source(name) or "/" in name:
        return
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        near = ", ".join(difflib.get_close_matches(arch, timm.list_models(), n=3))
        raise RecipeError(f"model.name: timm has no model '{arch}'{f' (nearest: {near})' if near else ''}; "
                          f"timm.list_models('{arch[:4]}*') lists its names, or give a model folder")
    tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise RecipeError(f"model.name: timm has no weights '{tag}' for {arch}; "
                          f"{'its tags: ' + ', '.join(tags) if tags else 'it has no pretrained weights'}")


def _model_source(name: str) -> str:
    """A local folder becomes timm's ``local-dir:`` source; Hub/timm names pass through."""
    if ":" not in name and Path(name).expanduser().is_dir():
        return "local-dir:" + str(Path(name).expanduser())
    return name


def _local_weights(name: str, path_str: str) -> tuple[str, dict]:
    """``model.pretrained`` as a path: a weights file, or a folder in timm's Hub format."""
    path = Path(path_str).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "local-dir:" + str(path), {}
        weights = [p for p in sorted(path.iterdir()) if p.suffix in WEIGHT_SUFFIXES]
        if not weights:
            raise RecipeError(f"model.pretrained: '{path}' has neither config.json nor a weights file")
        path = weights[0]
    if not path.is_file():
        raise RecipeError(f"model.pretrained: no such file or folder '{path_str}' "
                          "(use true, false, or the path of a weights file or model folder)")
    return name, {"file": str(path)}


def _no_weights_message(name: str, error: Exception) -> str:
    cfg = timm.models.get_pretrained_cfg(name.removeprefix("hf-hub:").split(":")[-1])
    repo = name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else (
        getattr(cfg, "hf_hub_id", None) or f"timm/{name}")
    return (f"pretrained weights for '{name}' are neither in the local cache nor reachable "
            f"({type(error).__name__}).\n{offline_weights_help(repo)}\n"
            "or train from random weights with --set model.pretrained=false")


# the strategies of set_trainable whose trainable set grows during a run
UNFREEZING = ("freeze-then-unfreeze", "gradual-unfreeze")


def set_trainable(model: torch.nn.Module, strategy: str, epoch: int, unfreeze_after: int,
                  unfreeze_every: int = 1) -> None:
    """Freeze the backbone for linear probing, or for the first epochs of freeze-then-unfreeze; with
    gradual-unfreeze, the head and one more layer group (top down) every ``unfreeze_every`` epochs.

    Only ``requires_grad`` changes: the optimizer holds every parameter from the start (one without
    a gradient is neither updated nor decayed), so its state survives each change, and the
    trainable set is a function of the epoch alone, which a resumed run recomputes."""
    if strategy == "lora":  # peft froze all but the adapters and the head, once, when it wrapped the model
        return
    if strategy == "gradual-unfreeze":
        groups = layer_map(model)
        lowest = max(groups.values()) - epoch // unfreeze_every
        for name, p in model.named_parameters():
            p.requires_grad_(groups[name] >= lowest)
        return
    head_only = strategy == "linear-probe" or (
        strategy == "freeze-then-unfreeze" and epoch < unfreeze_after)
    for p in model.parameters():
        p.requires_grad_(not head_only)
    if head_only:
        for p in classifier(model).parameters():
            p.requires_grad_(True)


def layer_map(model: torch.nn.Module) -> dict[str, int]:
    """Parameter name -> layer group, 0 at the input up to the head at the top: the groups of
    layer-wise lr decay and of gradual unfreezing.

    timm models: timm's own grouping, the one its ``param_groups_layer_decay`` uses (the model's
    ``group_matcher``, else ``auto_group_layers``). transformers models: see ``_transformer_layers``.
    """
    if getattr(model, "base_model", None) is None:
        from timm.models import group_parameters
        from timm.optim import auto_group_layers

        if hasattr(model, "group_matcher"):
            return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        return auto_group_layers(model)
    return _transformer_layers(model)


def _transformer_layers(model: torch.nn.Module) -> dict[str, int]:
    """Embeddings 0, block i of the layer stack i + 1, everything after the stack (pooler, final
    norm, the task head) on top.

    The stack is the longest ``ModuleList`` inside ``model.base_model``: BERT/RoBERTa/ELECTRA
    ``encoder.layer``, DistilBERT ``transformer.layer``, GPT-2 ``h``, Llama/Qwen/Mistral ``layers``;
    encoder-decoder models (two stacks) are not covered. Parameters are registered in forward order,
    so those seen before the stack are the embeddings."""
    names = {id(m): n for n, m in model.named_modules()}
    stacks = [m for m in model.base_model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(model).__name__}: no stack of layers (a ModuleList) to group by depth")
    stack = max(stacks, key=len)
    prefix, top = names[id(stack)] + ".", len(stack) + 1
    groups: dict[str, int] = {}
    seen_stack = False
    for name, _ in model.named_parameters():
        if name.startswith(prefix):
            seen_stack = True
            groups[name] = int(name[len(prefix):].split(".")[0]) + 1
        else:
            groups[name] = top if seen_stack else 0
    return groups


def classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The classification head: timm's ``get_classifier()``, or transformers' classifier/score."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
    else:
        head = getattr(model, "classifier", None) or getattr(model, "score", None)
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        raise ValueError(f"{type(model).__name__} has no trainable classifier to probe")
    return head


def save_image_model(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Write ``model.safetensors`` + ``config.json`` in timm's Hub format (a LoRA model: its adapter
    files + ``config.json``, see :mod:`hfkit.lora`)."""
    # safetensors wants contiguous fp32 tensors; copy so the training model keeps channels_last
    export = copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format)
    if is_adapter_model(export):
        save_adapter(export, Path(folder))
        return
    cfg = export.pretrained_cfg
    save_for_hf(export, folder, model_config={"label_names": cfg.get("label_names")},
                safe_serialization=True)


def image_lora_layers(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(layers that get adapters, layers trained in full) of a timm model under ``train.strategy=lora``,
    by full name.

    Adapted: every Linear and every dense (not depthwise) Conv2d between the stem and the head: a
    ViT's attention ``qkv``/``proj`` and MLP ``fc1``/``fc2``, a ResNet's block convolutions (3x3 and
    1x1, shortcuts included), a ConvNeXt's MLP Linears. The stem keeps its pretrained filters;
    depthwise convolutions have too few weights per filter for a low-rank update to save anything.
    Trained in full (beside the head): the batch norms. Training updates their running statistics
    anyway (they are buffers), so they must be saved with the adapter for the folder to give the
    trained model's outputs, and their scale and shift are a few thousand parameters."""
    groups = layer_map(model)
    top = max(groups.values())
    adapted = [name for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.groups == 1)
               if 0 < groups.get(f"{name}.weight", 0) < top]
    norms = [name for name, m in model.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and name]
    return adapted, norms


def load_image_model(name_or_path: str) -> torch.nn.Module:
    """Load a result folder, or a Hub repo (``hf-hub:org/name``), ready for inference."""
    if (Path(name_or_path).expanduser() / ADAPTER_CONFIG).is_file():
        return _load_image_adapter(name_or_path, read_result(name_or_path))
    source = _model_source(name_or_path)
    if ":" not in source:  # a bare "org/name" that is not a local folder: a Hub repo
        if "/" not in source:
            raise FileNotFoundError(f"no model folder '{name_or_path}'")
        source = "hf-hub:" + source
    with loading_weights(name_or_path):
        model = timm.create_model(source, pretrained=True)
    return model.eval()


def _load_image_adapter(folder: str, found: ResultFolder) -> torch.nn.Module:
    """An adapter folder's base model (a timm name or Hub id with its pretrained weights, or a local
    weights file or folder) with a head for the folder's labels, the folder's preprocessing, and
    the adapter on top, unmerged: the outputs are the model's at the end of training."""
    from peft import PeftModel

    base = found.base_model
    local = Path(base).expanduser().exists()
    args = ModelArgs(name=found.architecture if local else base, pretrained=base if local else True)
    cfg = found.config.get("pretrained_cfg", {})
    model = create_image_model(args, found.labels)
    model.pretrained_cfg = dict(model.pretrained_cfg, **cfg)  # input size, mean/std, crop as trained
    return PeftModel.from_pretrained(model, folder).eval()


def merge_adapter(run_dir: str, out_dir: str) -> Path:
    """Write a plain model folder of adapter folder ``run_dir`` into ``out_dir``: the adapters merged
    into the base weights (peft's ``merge_and_unload``), tokenizer, recipe and results beside them."""
    found = read_result(run_dir)
    if not found.adapter:
        raise ValueError(f"'{run_dir}' has no LoRA adapter (adapter_config.json): it is a plain model "
                         "folder already")
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"'{out}' is not empty: merge into a new folder")
    if found.family == "timm":
        save_image_model(load_image_model(run_dir).merge_and_unload(), out)
    else:
        import transformers

        model = load_text_model(getattr(transformers, found.task.auto_class), run_dir).merge_and_unload()
        model.save_pretrained(out)
        transformers.AutoTokenizer.from_pretrained(run_dir).save_pretrained(out)
    for name in RUN_FILES:  # how the model was made: read_result reads them in the merged folder too
        if (Path(run_dir) / name).is_file():
            shutil.copy2(Path(run_dir) / name, out / name)
    return out


def label_names(model: torch.nn.Module) -> list[str]:
    names = model.pretrained_cfg.get("label_names")
    return list(names) if names else [str(i) for i in range(model.num_classes)]
