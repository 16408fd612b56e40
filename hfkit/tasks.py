"""What each task *is*, in one record: the registry every other module looks tasks up in.

A task's recipe name, model family and transformers Auto class, the architectures that mark a
folder as one of its models, its Hub pipeline tag and card wording, the command and the demo
that use its models, the metric its curves plot, and the recipe fields it reads. Code that
trains or serves a task is named by ``module:attribute`` (``builder``, ``predictor``) and imported
on first use, so this module imports nothing of hfkit and sits below all of it.

Adding a task: one ``register(Task(...))`` here, its builder in :mod:`hfkit.finetune`, its data
loader in :mod:`hfkit.data`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

# recipe fields every task reads (the run itself, the loop, the Hub upload)
COMMON_FIELDS = frozenset({
    "name", "task", "description", "output_dir", "model.name", "model.pretrained", "data.path",
    "data.train_split", "data.eval_split", "data.val_fraction", "data.max_train_samples",
    "data.max_eval_samples", "train.epochs", "train.batch_size", "train.eval_batch_size",
    "train.lr", "train.optimizer", "train.momentum", "train.weight_decay", "train.weight_decay_norm_and_bias",
    "train.schedule", "train.warmup_ratio", "train.gradient_accumulation_steps", "train.max_grad_norm",
    "train.mixed_precision", "train.seed", "train.checkpoint_steps", "train.checkpoint_epochs",
    "train.keep_checkpoints", "train.early_stopping_patience", "train.tensorboard", "train.compile",
    "train.compile_mode", "train.ema_decay", "train.layer_lr_decay", "eval.metric",
    "eval.greater_is_better"}) | {
    f"hub.{k}" for k in ("push", "repo_id", "private", "license", "revision", "create_pr", "commit_message")}
TEXT_FIELDS = frozenset({"model.attention_dropout"})
LORA_FIELDS = frozenset({"train.strategy", "train.lora_r", "train.lora_alpha", "train.lora_dropout",
                         "train.lora_target_modules"})
FREEZING = ("full", "linear-probe", "freeze-then-unfreeze", "gradual-unfreeze")  # strategies of a classifier


@dataclass(frozen=True)
class Task:
    name: str
    family: Literal["timm", "transformers"]
    pipeline_tag: str
    title: str  # the Hub's name of the pipeline tag, in a card's model-index
    summary: str  # the card's first words: "An image classifier"
    builder: str  # module:function that builds a recipe's model, data loaders and objective
    predictor: str  # module:class that serves its models
    command: str  # the hfkit command for its models, with {} for the model
    demo: str  # the name of its demo in hfkit.demo
    curve_metric: str  # the eval metric its training curves plot beside the loss
    metrics: tuple[str, ...]  # the eval metrics it computes as one number each: eval.metric's choices
    fields: frozenset[str]  # recipe fields it reads besides COMMON_FIELDS
    data: Literal["images", "texts", "questions and contexts"]  # what its data sets hold, in words
    auto_class: str | None = None  # transformers Auto class of its models
    architectures: tuple[str, ...] = ()  # suffixes of config.json "architectures" of its models
    does: str = ""  # the card's words after the model: " that continues a text"
    labels: bool = True  # whether its models have class labels
    exporter: str = ""  # module:class that exports its models to ONNX ("": not exportable)
    # module:class that serves an export of it with onnxruntime (causal-lm: the loader of the
    # (model, tokenizer) that hfkit.inference.generate drives)
    onnx_predictor: str = ""
    evaluator: str = ""  # module:function that scores its models on labelled data (hfkit evaluate)
    strategies: tuple[str, ...] = ("full",)  # the train.strategy values it trains with
    peft_task_type: str | None = None  # peft's TaskType of its LoRA models (None: a custom model, timm's)

    def load(self, what: Literal["builder", "predictor", "exporter", "onnx_predictor", "evaluator"]):
        """The function or class named by ``builder``/``predictor``/..., imported now."""
        module, _, attribute = getattr(self, what).partition(":")
        return getattr(importlib.import_module(module), attribute)

    @property
    def reads(self) -> frozenset[str]:
        return COMMON_FIELDS | self.fields


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; hfkit trains {', '.join(TASKS)}")
    return TASKS[name]


def for_config(config: dict) -> Task | None:
    """The task of a model folder's ``config.json``: timm's (``architecture``) or transformers'
    ``architectures`` suffix; None when it says neither."""
    if "architecture" in config and "architectures" not in config:
        return TASKS["image-classification"]
    for arch in config.get("architectures") or []:
        for task in TASKS.values():
            if arch.endswith(task.architectures):
                return task
    return None


register(Task(
    name="image-classification", data="images", family="timm", pipeline_tag="image-classification",
    title="Image Classification", summary="An image classifier",
    builder="hfkit.finetune:build_image_classification", predictor="hfkit.inference:ImageClassifier",
    command="predict --model {} image.jpg", demo="image", curve_metric="accuracy",
    metrics=("loss", "accuracy", "f1"),
    architectures=("ForImageClassification",),
    exporter="hfkit.export:ImageExport", onnx_predictor="hfkit.export:OnnxImageClassifier",
    evaluator="hfkit.evaluation:evaluate_classifier",
    fields=frozenset({"model.channels_last", "data.image_column", "data.label_column", "data.image_size",
                      "data.num_workers",
                      "data.cache_images", "data.hflip", "data.color_jitter", "data.auto_augment",
                      "data.in_memory", "data.crop_padding", "data.random_erasing", "data.erase_size",
                      "train.label_smoothing", "train.strategy", "train.unfreeze_after_epochs",
                      "train.unfreeze_every_epochs", "train.mixup", "train.cutmix",
                      "eval.num_preview_images", "eval.tta_hflip"}) | LORA_FIELDS,
    strategies=(*FREEZING, "lora")))
register(Task(
    name="text-classification", data="texts", family="transformers", pipeline_tag="text-classification",
    title="Text Classification", summary="A text classifier",
    builder="hfkit.finetune:build_text_classification", predictor="hfkit.inference:TextClassifier",
    command='predict --model {} "A text to classify."', demo="sentiment", curve_metric="accuracy",
    metrics=("loss", "accuracy", "f1"),
    auto_class="AutoModelForSequenceClassification", architectures=("ForSequenceClassification",),
    exporter="hfkit.export:TextExport", onnx_predictor="hfkit.export:OnnxTextClassifier",
    evaluator="hfkit.evaluation:evaluate_classifier",
    fields=TEXT_FIELDS | LORA_FIELDS | {"data.config", "data.text_column", "data.label_column",
                                        "data.max_length", "data.group_by_length", "train.label_smoothing",
                                        "train.unfreeze_after_epochs", "train.unfreeze_every_epochs"},
    strategies=(*FREEZING, "lora"), peft_task_type="SEQ_CLS"))
register(Task(
    name="causal-lm", data="texts", family="transformers", pipeline_tag="text-generation",
    title="Text Generation", summary="A causal language model", does=" that continues a text",
    builder="hfkit.finetune:build_causal_lm", predictor="hfkit.inference:generate",
    command='generate --model {} --prompt "Once upon a time"', demo="generation", curve_metric="perplexity",
    metrics=("loss", "perplexity"),
    auto_class="AutoModelForCausalLM", architectures=("ForCausalLM", "LMHeadModel"), labels=False,
    exporter="hfkit.export:CausalLMExport", onnx_predictor="hfkit.export:load_onnx_causal_lm",
    evaluator="hfkit.evaluation:evaluate_causal_lm",
    fields=TEXT_FIELDS | LORA_FIELDS | {"data.config", "data.text_column", "data.block_size"},
    strategies=("full", "lora"), peft_task_type="CAUSAL_LM"))
register(Task(
    name="question-answering", data="questions and contexts", family="transformers",
    pipeline_tag="question-answering",
    title="Question Answering", summary="An extractive question-answering model",
    does=" that points at the answer to a question in a given text",
    builder="hfkit.finetune:build_question_answering", predictor="hfkit.inference:QuestionAnswerer",
    command='qa --model {} --question "..." --context "..."', demo="qa", curve_metric="f1",
    metrics=("exact_match", "f1"),
    auto_class="AutoModelForQuestionAnswering", architectures=("ForQuestionAnswering",), labels=False,
    exporter="hfkit.export:QAExport", onnx_predictor="hfkit.export:OnnxQuestionAnswerer",
    evaluator="hfkit.evaluation:evaluate_qa",
    fields=TEXT_FIELDS | LORA_FIELDS | {"data.max_length", "data.doc_stride", "data.group_by_length",
                                        "eval.max_answer_length", "eval.qa_scorer"},
    strategies=("full", "lora"), peft_task_type="QUESTION_ANS"))
