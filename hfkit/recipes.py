"""Recipes: typed dataclasses, filled from YAML files and ``--set key=value`` overrides.

Precedence is defaults < YAML < command line. Every key is checked against the dataclass
fields and types, and every error names the key, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hfkit.tasks import TASKS

__all__ = [
    "DataArgs",
    "EvalArgs",
    "HubArgs",
    "ModelArgs",
    "Recipe",
    "RecipeError",
    "TrainArgs",
    "field_docs",
    "list_recipes",
    "load_recipe",
    "recipe_path",
    "save_recipe",
]


QA_MAX_LENGTH = 384  # tokens per window when a question-answering recipe leaves data.max_length unset


class RecipeError(ValueError):
    """A recipe file or override is wrong; the message names the key."""


@dataclass
class ModelArgs:
    name: str = "resnet18"
    """timm model name (``resnet18``), ``hf-hub:org/name``, or a local result folder."""
    pretrained: bool | str = True
    """true (Hub weights), false (random init), or a local weights file / model folder."""
    channels_last: bool = True
    """Use the channels-last memory format (faster convolutions on CPU and GPU)."""
    attention_dropout: float | None = None
    """Transformers: dropout on attention weights (null: the model's own). 0 lets PyTorch's
    fused attention (SDPA) run its fast kernel in training too."""

    def __post_init__(self) -> None:
        if not self.name:
            raise RecipeError("model.name must not be empty")
        if isinstance(self.pretrained, str) and not self.pretrained:
            raise RecipeError("model.pretrained must be true, false or a path")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise RecipeError(f"model.attention_dropout must be in [0, 1), got {self.attention_dropout}")


@dataclass
class DataArgs:
    path: str = ""
    """Hub data set id, local folder or file, or http(s) URL of a zip file."""
    config: str | None = None
    """Configuration of a Hub data set, e.g. ``wikitext-2-raw-v1``."""
    train_split: str | None = None
    """Name of the training split (default: ``train``)."""
    eval_split: str | None = None
    """Name of the evaluation split (default: validation/valid/val/test, else a seeded split)."""
    val_fraction: float = 0.2
    """Share of the training data held out when the data has no evaluation split."""
    image_column: str | None = None
    """Image column of a Hub/parquet data set (default: the first Image feature)."""
    label_column: str | None = None
    """Label column (default: the first ClassLabel feature, else ``label``)."""
    text_column: str | None = None
    """Text column of a text data set (default: ``text``, else the only string column)."""
    max_length: int | None = None
    """Truncate texts to this many tokens (default: the tokenizer's limit, at most 512; extractive
    QA: tokens per window, default 384)."""
    doc_stride: int = 128
    """Extractive QA: tokens shared by neighbouring windows of a context longer than max_length."""
    block_size: int | None = None
    """Causal LM: tokens per training block (default: the model's context, at most 1024)."""
    group_by_length: bool = False
    """Batch texts of similar length together (less padding; order still seeded)."""
    max_train_samples: int | None = None
    """Use a seeded random subset of this many training examples."""
    max_eval_samples: int | None = None
    """Use a seeded random subset of this many evaluation examples."""
    image_size: int | None = None
    """Square input size; default is the model's own ``pretrained_cfg`` input size."""
    num_workers: int | None = None
    """DataLoader worker processes (default: up to 8 with a GPU; on CPU none for cached images)."""
    cache_images: bool | None = None
    """Decode images once and keep them in memory (default: when there are at most 20,000)."""
    hflip: float = 0.5
    """Probability of a horizontal flip in training."""
    color_jitter: float = 0.4
    """Colour jitter strength in training (0: none)."""
    auto_augment: str | None = None
    """timm auto-augment policy for training, e.g. ``rand-m9-mstd0.5-inc1`` (RandAugment)."""
    in_memory: bool | None = None
    """Decode all images once into one uint8 tensor and augment whole batches on the training
    device (default: for sets of small images, at most 96 px, without auto_augment)."""
    crop_padding: int = 4
    """In memory: random crops of the image padded (reflecting its border) by this many pixels,
    pixels of the image as held (Tiny ImageNet's 64 px; data.image_size for images of several
    sizes), before the resize to the model's input."""
    random_erasing: float = 0.0
    """In memory: probability of erasing a random square of each training image (Cutout)."""
    erase_size: int | None = None
    """In memory: side of the erased square in pixels of the model's input, after the resize
    (default: a quarter of its side); its centre is anywhere in the image, so it may be cut off
    at the border, as in Cutout."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise RecipeError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")
        for key in ("max_train_samples", "max_eval_samples", "image_size", "max_length", "block_size",
                    "doc_stride", "erase_size"):
            _check_positive(f"data.{key}", getattr(self, key))
        if not 0.0 <= self.hflip <= 1.0:
            raise RecipeError(f"data.hflip must be a probability in [0, 1], got {self.hflip}")
        if self.color_jitter < 0:
            raise RecipeError(f"data.color_jitter must be >= 0, got {self.color_jitter}")
        if self.crop_padding < 0:
            raise RecipeError(f"data.crop_padding must be >= 0, got {self.crop_padding}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise RecipeError(f"data.random_erasing must be in [0, 1], got {self.random_erasing}")
        if self.in_memory and self.auto_augment:
            raise RecipeError("data.auto_augment runs on PIL images: it needs data.in_memory=false")
        if self.num_workers is not None and self.num_workers < 0:
            raise RecipeError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TrainArgs:
    epochs: int = 10
    """Number of passes over the training data."""
    batch_size: int = 32
    """Examples per optimizer step per process (before gradient accumulation)."""
    eval_batch_size: int | None = None
    """Examples per evaluation batch (default: batch_size)."""
    lr: float = 1e-3
    """Peak learning rate."""
    optimizer: str = "sgd"
    """Any timm optimizer name: sgd, adamw, lamb, ... On a CPU, adam and adamw take torch's fused
    step (one pass over each group, not a Python loop over the parameters)."""
    momentum: float = 0.9
    """Momentum for SGD-style optimizers."""
    weight_decay: float = 1e-4
    """Weight decay (not applied to biases and norm layers unless weight_decay_norm_and_bias)."""
    weight_decay_norm_and_bias: bool = False
    """Also decay biases and norm-layer weights, as classic from-scratch CIFAR recipes do (timm's
    optimizer factory leaves them out, the usual choice for fine-tuning)."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = 0.0
    """Share of all optimizer steps spent warming up linearly from 0."""
    gradient_accumulation_steps: int = 1
    """Micro-batches summed before each optimizer step."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value (null: no clipping, usual for CNNs with SGD)."""
    label_smoothing: float = 0.0
    """Label smoothing for the cross-entropy loss."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    """Autocast precision. bf16 runs on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs; on a CPU
    without bf16 kernels (AVX2 only) hfkit trains in fp32 instead."""
    seed: int = 42
    """Seed for initialisation, shuffling, augmentation and subsets."""
    strategy: Literal["full", "linear-probe", "freeze-then-unfreeze", "gradual-unfreeze", "lora"] = "full"
    """Train everything, only the new head, the head first and then everything, the head first
    and then one more layer group, from the top down, every unfreeze_every_epochs, or LoRA adapters
    on a frozen model plus the whole task head (the result folder holds the adapter)."""
    lora_r: int = 8
    """With lora: rank of each adapter (trainable parameters per adapted Linear: r * (in + out); per
    Conv2d: r * (in * kernel area + out))."""
    lora_alpha: float = 16.0
    """With lora: scale of the adapters' update (applied as lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """With lora: dropout on the adapters' input in training."""
    lora_target_modules: str | None = None
    """With lora: comma-separated names of the Linear (or Conv2d) layers that get adapters
    (``query,value``; a name matches a module whose path ends with it). Null: peft's default for a
    transformers architecture, the attention's query and value projections (BERT ``query,value``,
    GPT-2 ``c_attn``, Llama/Qwen ``q_proj,v_proj``); for a timm model every Linear and dense Conv2d
    between the stem and the head (a ViT's qkv/proj/fc1/fc2, a ResNet's block convolutions)."""
    unfreeze_after_epochs: int = 1
    """With freeze-then-unfreeze: epochs of head-only training before unfreezing."""
    unfreeze_every_epochs: int = 1
    """With gradual-unfreeze: epochs between unfreezing one layer group and the next (the groups of
    layer_lr_decay; a ResNet-18 has 10, a BERT with N layers N + 2)."""
    layer_lr_decay: float | None = None
    """Discriminative learning rates: the head trains at train.lr and each layer group below it at
    this factor times the lr of the group above (e.g. 0.7; null or 1: one lr for all)."""
    checkpoint_steps: int | None = None
    """Also save a resumable checkpoint every N optimizer steps within epochs."""
    checkpoint_epochs: int = 1
    """Save a resumable checkpoint every N epochs (always after the last one, and when stopped by
    Ctrl-C, SIGTERM or --max-steps): more than 1 suits short epochs, where saving costs as much as
    training."""
    keep_checkpoints: int = 2
    """Number of most recent checkpoints kept on disk."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement (null: never)."""
    tensorboard: bool = False
    """Also log metrics to TensorBoard under ``<output_dir>/tensorboard``."""
    compile: bool = False
    """Compile the model with ``torch.compile`` (faster steps on GPUs after a slow first one);
    the last partial training batch is dropped so every step has one shape."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default")
    """``torch.compile`` mode: reduce-overhead replays CUDA graphs (fewer kernel launches, for small
    models on a GPU); max-autotune also searches kernel configurations (long compile)."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights with this decay (e.g. 0.9998);
    evaluation and the saved model use the averaged weights (null: off)."""
    mixup: float = 0.0
    """Mixup alpha for image classification (0: off); batch size must be even."""
    cutmix: float = 0.0
    """CutMix alpha for image classification (0: off); batch size must be even."""

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "gradient_accumulation_steps", "unfreeze_after_epochs",
                    "unfreeze_every_epochs",
                    "keep_checkpoints", "eval_batch_size", "checkpoint_steps", "checkpoint_epochs",
                    "early_stopping_patience"):
            _check_positive(f"train.{key}", getattr(self, key))
        if self.lr <= 0:
            raise RecipeError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise RecipeError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RecipeError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise RecipeError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.mixup < 0 or self.cutmix < 0:
            raise RecipeError("train.mixup and train.cutmix are alphas: >= 0 (0 turns them off)")
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise RecipeError(f"train.mixup/cutmix pair images within a batch: train.batch_size must be "
                              f"even, got {self.batch_size}")
        if self.layer_lr_decay is not None and not 0.0 < self.layer_lr_decay <= 1.0:
            raise RecipeError(f"train.layer_lr_decay must be in (0, 1] or null, got {self.layer_lr_decay}")
        _check_positive("train.lora_r", self.lora_r)
        if self.lora_alpha <= 0:
            raise RecipeError(f"train.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise RecipeError(f"train.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_target_modules is not None and not self.target_modules():
            raise RecipeError("train.lora_target_modules must name modules (query,value) or be null")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise RecipeError(f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")


    def target_modules(self) -> list[str] | None:
        """``lora_target_modules`` as peft's list of name suffixes (None: peft's default)."""
        if self.lora_target_modules is None:
            return None
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]


@dataclass
class EvalArgs:
    metric: str = "accuracy"
    """Metric that picks the best checkpoint and drives early stopping: one its task computes
    (classification: loss, accuracy, f1; causal-lm: loss, perplexity; QA: exact_match, f1)."""
    greater_is_better: bool | None = None
    """Direction of ``metric`` (default: false for loss and perplexity, else true)."""
    num_preview_images: int = 16
    """Validation images drawn in the prediction grid (0: no grid)."""
    tta_hflip: bool = False
    """Image classification: score each evaluation image by the mean of its logits and those of
    its mirror image (flip test-time augmentation; costs a second forward pass). The model's
    ``hfkit predict``, ``evaluate``, ``serve`` and demo answer so too."""
    max_answer_length: int = 30
    """Extractive QA: longest answer span, in tokens (a Chinese character is one token)."""
    qa_scorer: Literal["auto", "cmrc2018", "squad"] = "auto"
    """Extractive QA: EM/F1 definition; auto picks cmrc2018 for Chinese contexts, else squad."""

    def __post_init__(self) -> None:
        if self.greater_is_better is None:
            self.greater_is_better = not any(w in self.metric for w in ("loss", "perplexity"))
        if self.num_preview_images < 0:
            raise RecipeError("eval.num_preview_images must be >= 0")
        _check_positive("eval.max_answer_length", self.max_answer_length)


@dataclass
class HubArgs:
    push: bool = False
    """Upload the result folder to the Hugging Face Hub after training."""
    repo_id: str | None = None
    """Target repository, e.g. ``alice/resnet18-ants-bees``."""
    private: bool = False
    """Create the repository as private."""
    license: str = "apache-2.0"
    """License id written in the model card's metadata (a Hub license id: mit, cc-by-4.0, other, ...)."""
    revision: str | None = None
    """Branch to push to (created from main if missing; default: main)."""
    create_pr: bool = False
    """Open a pull request with the upload instead of committing to the branch."""
    commit_message: str | None = None
    """Commit message (default: ``Upload <folder> with hfkit push``)."""
    # No token field, on purpose: the token comes from HF_TOKEN or `hf auth login`, never from a recipe,
    # which is saved as recipe.yaml in the result folder and uploaded with it.

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise RecipeError("hub.push=true needs hub.repo_id, e.g. --set hub.repo_id=alice/my-model")
        if not self.license or not isinstance(self.license, str):
            raise RecipeError("hub.license must be a license id, e.g. apache-2.0, mit or other")


@dataclass
class Recipe:
    name: str = "custom"
    """Short name of the recipe; the default output folder is ``runs/<name>``."""
    task: str = "image-classification"
    """What is trained (a task of hfkit.tasks: image-classification, text-classification, causal-lm,
    question-answering); picks the data loader, model family and metrics."""
    description: str = ""
    """One line shown by ``hfkit recipes``."""
    output_dir: str | None = None
    """Where results and checkpoints go (default: ``runs/<name>``)."""
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    hub: HubArgs = field(default_factory=HubArgs)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RecipeError(f"task: unknown task '{self.task}'; one of {', '.join(TASKS)}")
        strategies = TASKS[self.task].strategies
        if self.train.strategy not in strategies:
            raise RecipeError(f"train.strategy={self.train.strategy}: a {self.task} recipe trains with "
                              f"{', '.join(strategies)}")
        if self.train.strategy != "lora":
            unused = [f"train.{f.name}" for f in dataclasses.fields(TrainArgs) if f.name.startswith("lora_")
                      and getattr(self.train, f.name) != f.default]
            if unused:
                raise RecipeError(f"{', '.join(unused)} set, but train.strategy={self.train.strategy}: the "
                                  "lora_ fields act only with --set train.strategy=lora")
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_positive(key: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise RecipeError(f"{key} must be a positive integer or null, got {value}")


# ---------------------------------------------------------------------------------------------
# Registry of recipe files


def recipes_dir() -> Path:
    """The folder of named recipes: $HFKIT_RECIPES_DIR, else ``recipes/`` beside the package."""
    env = os.environ.get("HFKIT_RECIPES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> dict[str, Path]:
    """Registered recipe names mapped to their YAML files."""
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def recipe_path(name_or_path: str) -> Path:
    """Resolve ``--recipe``: a registered name, or a path to a YAML file."""
    registry = list_recipes()
    if name_or_path in registry:
        return registry[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    hint = difflib.get_close_matches(name_or_path, list(registry), n=1)
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
    raise RecipeError(
        f"unknown recipe '{name_or_path}'.{did_you_mean} Known recipes: {', '.join(registry)}; "
        "or pass the path of a YAML file."
    )


# ---------------------------------------------------------------------------------------------
# Loading, overrides and type checking


def load_recipe(name_or_path: str | None = None, overrides: list[str] | None = None,
                **extra: Any) -> Recipe:
    """Build a validated Recipe from a named recipe or YAML file, then ``key=value`` overrides.

    ``extra`` holds already-typed dotted overrides (``output_dir="runs/x"``), applied last.
    """
    tree: dict[str, Any] = {}
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        tree = _read_yaml(path)
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe file must be a mapping of sections")
        tree.setdefault("name", path.stem)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set expects KEY=VALUE, got '{item}'")
        _set_dotted(tree, key.strip(), _override_value(key.strip(), raw))
    for key, value in extra.items():
        if value is not None:
            _set_dotted(tree, key, value)
    recipe = _build(Recipe, tree, prefix="")
    check_task_fields(recipe)
    _check_eval_metric(recipe)
    return recipe


def check_task_fields(recipe: Recipe) -> None:
    """A field set away from its default that the recipe's task never reads is an error: it would
    silently do nothing (``train.mixup`` on a text recipe, ``data.config`` on an image one)."""
    reads = TASKS[recipe.task].reads
    defaults = flat_fields(Recipe(name=recipe.name, task=recipe.task).to_dict())
    unread = [key for key, value in flat_fields(recipe.to_dict()).items()
              if key not in reads and value != defaults.get(key)]
    if unread:
        raise RecipeError(f"{', '.join(unread)}: not read by a {recipe.task} recipe, so setting "
                          f"{'it' if len(unread) == 1 else 'them'} would change nothing; remove "
                          f"{'it' if len(unread) == 1 else 'them'} (`hfkit recipes --show NAME` lists the "
                          "fields a recipe reads)")


def _check_eval_metric(recipe: Recipe) -> None:
    """Before minutes of training, not at the first evaluation: ``eval.metric`` must be one the
    task computes as one number (its per-class accuracy is a table, so it cannot rank models)."""
    choices = TASKS[recipe.task].metrics
    if recipe.eval.metric not in choices:
        hint = difflib.get_close_matches(recipe.eval.metric, choices, n=1, cutoff=0.5)
        raise RecipeError(f"eval.metric: {recipe.task} recipes compute no '{recipe.eval.metric}'"
                          f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; choose one of "
                          f"{', '.join(choices)}")


def describe(recipe: Recipe) -> str:
    """The fields the recipe's task reads, section by section: value and docstring of each, as
    ``hfkit recipes --show NAME`` prints them."""
    reads = TASKS[recipe.task].reads
    lines = [f"{recipe.name} ({recipe.task}){': ' + recipe.description if recipe.description else ''}"]
    hints = typing.get_type_hints(Recipe)
    sections = [(None, Recipe, recipe)] + [(f.name, hints[f.name], getattr(recipe, f.name))
                                           for f in dataclasses.fields(Recipe)
                                           if dataclasses.is_dataclass(hints[f.name])]
    for section, cls, node in sections:
        docs, prefix = field_docs(cls), f"{section}." if section else ""
        rows = [(prefix + f.name, getattr(node, f.name), docs.get(f.name, ""))
                for f in dataclasses.fields(cls) if prefix + f.name in reads]
        if rows:
            lines.append(f"\n[{section or 'recipe'}]")
            lines += [f"  {key} = {_yaml_value(value)}\n      {' '.join(doc.split())}"
                      for key, value, doc in rows]
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def flat_fields(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe's nested dict as ``{"train.lr": 0.1, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flat_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_yaml(path: Path) -> Any:
    """The YAML tree of a recipe file; a syntax error names the line, not a parser traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = " ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
        raise RecipeError(f"{path}: not valid YAML at {where}: {problem or e}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the fully resolved recipe, so the run can be repeated with ``--recipe path``."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(recipe.to_dict(), f, sort_keys=False, allow_unicode=True)


def _parse_scalar(raw: str) -> Any:
    """Parse an override value as YAML (true, 3, null, [a, b]); fall back to the raw string."""
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def _override_value(key: str, raw: str) -> Any:
    """``--set key=raw``'s value: YAML's reading, but a text field keeps the text as typed where
    YAML reads a number, a boolean or a date, which it spells back differently
    (``data.path=0755`` would be '493', ``hub.revision=1:30`` '90', ``on`` True)."""
    value = _parse_scalar(raw)
    if isinstance(value, (int, float, datetime.date)) and _is_text_field(key):
        return raw.strip()
    return value


def _is_text_field(key: str) -> bool:
    """Whether the dotted ``key`` names a ``str`` (or ``str | None``) field of a Recipe."""
    typ: Any = Recipe
    for part in key.split("."):
        hints = typing.get_type_hints(typ) if dataclasses.is_dataclass(typ) else {}
        if part not in hints:
            return False  # an unknown key: refused by name when the recipe is built
        typ = hints[part]
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return set(typing.get_args(typ)) <= {str, type(None)}
    return typ is str


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"'{part}' in '{key}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"'{prefix.rstrip('.')}' must be a section (a mapping), got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise RecipeError(f"unknown key '{prefix}{key}'{suggestion}; "
                              f"valid keys: {', '.join(prefix + n for n in names)}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, typ, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Return ``value`` as type ``typ`` or raise a RecipeError naming ``key``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(typ)
        if value is None and type(None) in arms:
            return None
        for arm in (a for a in arms if a is not type(None)):
            try:
                return _coerce(value, arm, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key}: expected {_type_name(typ)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(typ)
        if isinstance(value, bool) and ("no" if not value else "yes") in choices:
            value = "yes" if value else "no"  # YAML 1.1 reads a bare `no` as false
        if value not in choices:
            raise RecipeError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if typ is bool and isinstance(value, bool):
        return value
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads "1e-3" as a string, so accept numeric strings here
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            return number
    if typ is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise RecipeError(f"{key}: expected {_type_name(typ)}, got {value!r}")


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(typ))
    return "null" if typ is type(None) else getattr(typ, "__name__", str(typ))


def field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal under each field), for ``--help`` texts."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(node.target, ast.Name)):
            docs[node.target.id] = str(nxt.value.value)
    return docs
