"""One fine-tuning run: recipe -> data -> model -> training loop -> result folder."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from hfkit import plots, tasks
from hfkit.data.images import image_datasets, load_image_splits, make_loader
from hfkit.data.transforms import check_auto_augment
from hfkit.devices import note_launcher, process_state
from hfkit.diskspace import DiskFullError, disk_full_error, failed_folder
from hfkit.hub import AGAIN, push
from hfkit.lora import add_lora, base_source, trainable_parameters
from hfkit.models import check_model_name, create_image_model, image_lora_layers, save_image_model
from hfkit.objectives import CausalLM, Classification, Objective
from hfkit.offline import check_model_source
from hfkit.recipes import QA_MAX_LENGTH, Recipe
from hfkit.training import (
    TrainerState,
    check_optimizer,
    check_output_dir,
    fit,
    output_lock,
    saved_checkpoints,
)


def finetune(recipe: Recipe, resume: str | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Run ``recipe``; returns the metrics also written to ``all_results.json``."""
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be a positive integer, got {max_steps}")
    note_launcher()  # now, so a launcher killed while data loads is noticed when training starts
    out = Path(recipe.output_dir)
    with output_lock(out):  # held until the results are written: one run per folder
        check_output_dir(out, resume, recipe)  # before minutes of data loading
        check_optimizer(recipe.train.optimizer)  # and names the libraries would judge only later
        check_auto_augment(recipe.data.auto_augment)
        if not isinstance(recipe.model.pretrained, str):  # a weights path: that is what loads
            check_model_source(recipe.model.name, "model.name")
        if tasks.get(recipe.task).family == "timm":
            check_model_name(recipe.model.name)
        set_seed(recipe.train.seed)
        try:
            return train(recipe, tasks.get(recipe.task).load("builder"), resume, max_steps)
        except DiskFullError:  # the loop's own, naming its last checkpoint
            raise
        except Exception as e:  # any other write: data cache, plots, results
            saved = bool(saved_checkpoints(out))
            then = ("The checkpoints saved so far are complete: free some space, then go on with "
                    "--resume latest." if saved else
                    "No checkpoint was saved yet: free some space and start the run again.")
            full = disk_full_error(failed_folder(e) or out, "the run's files", 0, e, then)
            if full is None:
                raise
            raise full from e


@dataclass
class Run:
    """What a task's builder makes of a recipe: what ``fit`` trains, and how the results are told."""

    model: torch.nn.Module
    train_loader: Any
    eval_loader: Any
    save_model: Callable[[torch.nn.Module, Path], None]
    objective: Objective
    report: Callable[[TrainerState, float], dict[str, Any]]  # (state, wall seconds) -> results, written


def train(recipe: Recipe, build: Callable[[Recipe], Run], resume: str | None,
          max_steps: int | None) -> dict[str, Any]:
    """Build the task's run (data, model, objective; one of the build_* below), train it, report."""
    started = time.perf_counter()
    run = build(recipe)
    state = fit(recipe, run.model, run.train_loader, run.eval_loader, run.save_model,
                objective=run.objective, resume=resume, max_steps=max_steps)
    return run.report(state, time.perf_counter() - started)


def build_image_classification(recipe: Recipe) -> Run:
    from hfkit.data import tensor_images as tensors
    from hfkit.data.transforms import batch_augment, serve_like_tensor_pipeline

    t = recipe.train
    splits = load_image_splits(recipe.data, t.seed)
    model = create_image_model(recipe.model, splits.label_names, recipe.data.image_size)
    objective = Classification(recipe.model.channels_last, t.label_smoothing,
                               mixup=_mixup(t, len(splits.label_names)), tta_hflip=recipe.eval.tta_hflip,
                               num_classes=len(splits.label_names))
    static = t.compile  # one batch shape: a compiled model would compile again for the last one
    if tensors.want_in_memory(recipe.data, splits.train, splits.image_column):
        # decoded once; crops, flips and resizing run on whole batches on the training device
        serve_like_tensor_pipeline(model)
        objective.batch_transform = batch_augment(model, recipe.data, recipe.model.channels_last)
        train_ds, eval_ds, skipped = tensors.tensor_datasets(splits, t.seed, recipe.data.image_size)
        train_loader = tensors.make_tensor_loader(train_ds, t.batch_size, True, t.seed, drop_last=static)
        eval_loader = tensors.make_tensor_loader(eval_ds, t.eval_batch_size or t.batch_size, False, t.seed)
    else:
        train_ds, eval_ds = image_datasets(splits, model, recipe.data, t.seed)
        train_loader = make_loader(train_ds, t.batch_size, True, recipe.data.num_workers, t.seed,
                                   drop_last=static)
        eval_loader = make_loader(eval_ds, t.eval_batch_size or t.batch_size, False,
                                  recipe.data.num_workers, t.seed)
        skipped = [str(p) for ds in (train_ds, eval_ds) for p in ds.skipped_sources]
    model = adapt(model, recipe)  # after the data pipeline read and set the model's pretrained_cfg

    def report(state: TrainerState, seconds: float) -> dict[str, Any]:
        results = summarize(state, splits.label_names, len(train_ds), len(eval_ds), seconds)
        results["skipped_files"] = skipped
        eval_labels = [int(y) for y in eval_ds.labels]

        def draw(out: Path) -> None:
            write_classification_plots(state, eval_labels, splits.label_names, out)
            write_prediction_grid(state, eval_ds, splits.label_names, recipe.eval.num_preview_images, out)
            write_examples(eval_ds, eval_labels, splits.label_names, out / EXAMPLES)
        return finish(recipe, state, results, draw)
    return Run(model, train_loader, eval_loader, save_image_model, objective, report)


def build_text_classification(recipe: Recipe) -> Run:
    from hfkit.data.text import load_text_classification, make_text_loader, tokenize_splits
    from hfkit.text_models import create_text_model, text_model_saver

    t = recipe.train
    splits = load_text_classification(recipe.data, t.seed)  # checked before any model is built
    model, tokenizer = create_text_model(recipe.model, recipe.task, splits.label_names)
    model = adapt(model, recipe)
    # tokenizers without a limit report a huge model_max_length; BERT-style models stop at 512
    max_length = _max_length(recipe.data.max_length, min(tokenizer.model_max_length or 512, 512), model,
                             tokenizer)
    train_ds, eval_ds = tokenize_splits(splits, tokenizer, max_length)
    train_loader = make_text_loader(train_ds, tokenizer, t.batch_size, True, t.seed,
                                    recipe.data.group_by_length)
    eval_loader = make_text_loader(eval_ds, tokenizer, t.eval_batch_size or t.batch_size, False, t.seed)

    def report(state: TrainerState, seconds: float) -> dict[str, Any]:
        results = summarize(state, splits.label_names, len(train_ds), len(eval_ds), seconds)
        labels = list(eval_ds["labels"])

        def draw(out: Path) -> None:
            write_classification_plots(state, labels, splits.label_names, out)
            write_text_predictions(state, splits.eval, splits.label_names, out)
        return finish(recipe, state, results, draw)
    return Run(model, train_loader, eval_loader, text_model_saver(tokenizer),
               Classification(label_smoothing=t.label_smoothing, num_classes=len(splits.label_names)), report)


def build_causal_lm(recipe: Recipe) -> Run:
    from hfkit.data.causal_lm import default_block_size, group_into_blocks, load_lm_texts, make_block_loader
    from hfkit.text_models import create_text_model, text_model_saver

    t = recipe.train
    train_texts, eval_texts = load_lm_texts(recipe.data, t.seed)
    model, tokenizer = create_text_model(recipe.model, recipe.task)
    model = adapt(model, recipe)
    block = recipe.data.block_size or default_block_size(tokenizer, model.config)
    train_ds = group_into_blocks(train_texts, tokenizer, block)
    eval_ds = group_into_blocks(eval_texts, tokenizer, block)
    train_loader = make_block_loader(train_ds, t.batch_size, True, t.seed)
    eval_loader = make_block_loader(eval_ds, t.eval_batch_size or t.batch_size, False, t.seed)

    def report(state: TrainerState, seconds: float) -> dict[str, Any]:
        results = summarize(state, [], len(train_ds), len(eval_ds), seconds)
        results["block_size"] = block
        return finish(recipe, state, results, lambda out: None)
    return Run(model, train_loader, eval_loader, text_model_saver(tokenizer), CausalLM(), report)


def build_question_answering(recipe: Recipe) -> Run:
    from hfkit.data.qa import QACollator, eval_features, load_qa_splits, train_features
    from hfkit.data.text import make_text_loader
    from hfkit.objectives import ExtractiveQA
    from hfkit.text_models import create_text_model, text_model_saver

    t, d = recipe.train, recipe.data
    splits = load_qa_splits(d, t.seed)  # checked before any model is built
    model, tokenizer = create_text_model(recipe.model, recipe.task)
    model = adapt(model, recipe)
    max_length = _max_length(d.max_length, QA_MAX_LENGTH, model, tokenizer)
    train_ds = train_features(splits.train, tokenizer, max_length, d.doc_stride)
    windows = eval_features(splits.eval, tokenizer, max_length, d.doc_stride)
    objective = ExtractiveQA(splits.eval, windows, recipe.eval.max_answer_length, recipe.eval.qa_scorer)
    eval_ds = windows.select_columns([c for c in (*QACollator.MODEL_KEYS, "context_mask")
                                      if c in windows.column_names])
    eval_ds = eval_ds.add_column("feature_index", list(range(len(eval_ds))))
    collate = QACollator(tokenizer)
    train_loader = make_text_loader(train_ds, tokenizer, t.batch_size, True, t.seed, d.group_by_length,
                                    collate_fn=collate)
    eval_loader = make_text_loader(eval_ds, tokenizer, t.eval_batch_size or t.batch_size, False, t.seed,
                                   collate_fn=collate)

    def report(state: TrainerState, seconds: float) -> dict[str, Any]:
        from hfkit.qa import write_predictions

        results = summarize(state, [], len(splits.train), len(splits.eval), seconds)
        results.update(qa_scorer=objective.scorer, train_windows=len(train_ds), eval_windows=len(eval_ds),
                       max_length=max_length, doc_stride=d.doc_stride)
        nbest = {row["id"]: row["nbest"] for row in state.best_predictions}
        return finish(recipe, state, results, lambda out: nbest and write_predictions(nbest, out))
    return Run(model, train_loader, eval_loader, text_model_saver(tokenizer), objective, report)


def adapt(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """With ``train.strategy=lora``, ``model`` in LoRA adapters (:mod:`hfkit.lora`), its trainable
    share printed; else ``model``."""
    if recipe.train.strategy != "lora":
        return model
    timm_model = tasks.get(recipe.task).family == "timm"
    targets, also_trained = image_lora_layers(model) if timm_model else (None, [])
    model = add_lora(model, recipe.train, recipe.task, base_source(recipe.model), targets, also_trained)
    trainable, total = trainable_parameters(model)
    process_state().print(f"LoRA: training {trainable:,} of {total:,} parameters "
                          f"({100 * trainable / total:.2f}%: adapters, task head"
                          f"{', batch norms' if also_trained else ''})")
    return model


def _max_length(requested: int | None, default: int, model, tokenizer) -> int:
    from hfkit.text_models import clamp_max_length

    max_length, note = clamp_max_length(requested, default, model.config, tokenizer)
    if note:
        process_state().print(note)
    return max_length


def _mixup(t, num_classes: int):
    """timm's Mixup/CutMix on device batches, when the recipe asks for it (it smooths labels too)."""
    if not (t.mixup or t.cutmix):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.label_smoothing,
                 num_classes=num_classes)


def finish(recipe: Recipe, state: TrainerState, results: dict[str, Any],
           draw: Callable[[Path], None]) -> dict[str, Any]:
    """Write all_results.json and the plots, push if asked (main process only)."""
    results["interrupted"] = state.interrupted
    if process_state().is_main_process:
        out = Path(recipe.output_dir)
        (out / "all_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        if state.history:
            plots.plot_curves(state.history, out / "training_curves.png",
                              tasks.get(recipe.task).curve_metric, state.best_epoch)
        draw(out)
        metric = f"eval_{recipe.eval.metric}"
        if state.best_epoch is not None and metric in results:
            print(f"Best {metric} {results[metric]:.4f} at epoch {state.best_epoch:g} -> {out}/ "
                  "(model weights, config, all_results.json, plots)")
        else:
            print(f"Results in {out}/ (model weights, config, all_results.json, plots)")
        if recipe.hub.push:  # `hfkit push` with the recipe's hub settings
            h = recipe.hub
            try:
                url = push(out, h.repo_id, private=h.private, revision=h.revision, create_pr=h.create_pr,
                           commit_message=h.commit_message, license=h.license)
            except (ConnectionError, FileNotFoundError, ValueError) as e:
                # "run the same command again" would train again: say how to push the saved results
                command = shlex.join(["hfkit", "push", str(out), "--repo-id", h.repo_id,
                                      *(["--private"] if h.private else []),
                                      *(["--revision", h.revision] if h.revision else []),
                                      *(["--create-pr"] if h.create_pr else [])])
                kind = next(k for k in (ConnectionError, FileNotFoundError, ValueError) if isinstance(e, k))
                raise kind(str(e).replace(AGAIN, f"run `{command}` (no need to train again)") + (
                    f"\nThe results are saved in {out}/." if AGAIN in str(e) else
                    f"\nThe results are saved in {out}/; push them with `{command}`.")) from e
            print(f"Pushed to {url}")
    return results


def summarize(state: TrainerState, label_names: list[str], n_train: int, n_eval: int,
              wall_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"epoch": state.history[-1]["epoch"] if state.history else 0,
                               "global_step": state.global_step, **state.best_eval}
    per_class = results.get("eval_per_class_accuracy")
    if per_class is not None:
        results["eval_per_class_accuracy"] = dict(zip(label_names, per_class))
    results.update(
        best_epoch=state.best_epoch,
        train_runtime=round(state.train_seconds, 3),
        train_samples_per_second=round(state.samples_seen / max(state.train_seconds, 1e-9), 3),
        train_samples=n_train, eval_samples=n_eval, total_runtime=round(wall_seconds, 3))
    return results


def write_classification_plots(state: TrainerState, labels: list[int], label_names: list[str],
                               out: Path) -> None:
    if state.best_predictions:
        plots.plot_confusion_matrix(np.asarray(labels), np.asarray(state.best_predictions),
                                    label_names, out / "confusion_matrix.png")


EXAMPLES = "examples"  # a few evaluation images per class, which `hfkit demo` offers
MAX_EXAMPLES = 10  # what one page of a Gradio demo's examples shows


def example_file_stem(label: str) -> str:
    """The start of an example image's file name: its class, in characters safe in any file system."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)[:40]


def write_examples(eval_ds, labels: list[int], label_names: list[str], folder: Path) -> None:
    """Evaluation images as PNGs named ``<class>-<index>.png``, so a demo of the run shows pictures
    of its own data: the first two of each class, or one each when that would pass MAX_EXAMPLES
    (CIFAR-10's ten classes each get one), taking the first classes when even that is too many."""
    per_class = max(1, min(2, MAX_EXAMPLES // max(len(set(labels)), 1)))
    picks: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if len(picks.setdefault(y, [])) < per_class:
            picks[y].append(i)
    chosen = [(y, i) for y in sorted(picks) for i in picks[y]][:MAX_EXAMPLES]
    folder.mkdir(exist_ok=True)
    for y, i in chosen:
        eval_ds.image(i).save(folder / f"{example_file_stem(label_names[y])}-{i}.png")


def write_prediction_grid(state: TrainerState, eval_ds, label_names: list[str], n_preview: int,
                          out: Path) -> None:
    """``predictions.png``: evenly spaced evaluation images (a class-sorted eval set still shows every
    class), titled with what the saved best model answers for each and how sure it is: the answers
    of ``hfkit predict --model out`` for those images (its decoding and eval transform)."""
    if not state.best_predictions or not n_preview:
        return
    from hfkit.inference import ImageClassifier

    picks = _spread(range(len(eval_ds)), n_preview)
    images = [eval_ds.image(i) for i in picks]
    answers = [top[0] for top in ImageClassifier(str(out)).predict(images, top_k=1)]
    plots.plot_prediction_grid(images, [int(eval_ds.labels[i]) for i in picks],
                               [label_names.index(name) for name, _ in answers], label_names,
                               out / "predictions.png", probs=[p for _, p in answers])


TEXT_SHOWN = 5  # texts in each table of predictions.md
TEXT_RESCORED = 256  # at most this many wrongly predicted eval texts are scored again for it


def write_text_predictions(state: TrainerState, eval_split, label_names: list[str], out: Path) -> None:
    """``predictions.md``: a few evaluation texts with what the saved best model answers and how sure
    it is, then the most confidently wrong ones (fastai's ``show_results`` and ``plot_top_losses``),
    scored by :class:`hfkit.inference.TextClassifier`, as ``hfkit predict`` scores them."""
    preds = state.best_predictions
    if not preds:
        return
    from hfkit.inference import TextClassifier

    texts, labels = eval_split["text"], eval_split["label"]
    wrong = [i for i, (p, y) in enumerate(zip(preds, labels)) if p != y]
    shown = _spread(range(len(texts)), TEXT_SHOWN)
    rescored = _spread(wrong, TEXT_RESCORED)  # evenly spaced among them when there are more
    classifier, answers = TextClassifier(str(out)), {}
    ids = sorted(set(shown) | set(rescored))
    for start in range(0, len(ids), 32):
        chunk = ids[start:start + 32]
        answers.update(zip(chunk, (top[0] for top in classifier.predict([texts[i] for i in chunk], top_k=1))))
    worst = sorted((i for i in rescored if answers[i][0] != label_names[labels[i]]),
                   key=lambda i: -answers[i][1])[:TEXT_SHOWN]
    among = len(wrong) if len(wrong) == len(rescored) else f"{len(rescored)} evenly spaced of {len(wrong)}"
    table = lambda ids: _text_table(ids, texts, labels, label_names, answers)  # noqa: E731
    lines = ["# Predictions of the best model on the evaluation set", "",
             f"{len(texts) - len(wrong)} of {len(texts)} right. Probabilities are the saved model's "
             "(`hfkit predict`); a wrong prediction is in bold.", "",
             f"## {len(shown)} evaluation texts", "", *table(shown), "",
             f"## The most confidently wrong (among {among} wrong)", "",
             *(table(worst) if worst else ["None."])]
    (out / "predictions.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _spread(items, n: int) -> list:
    """``n`` of ``items`` evenly spaced, first and last included (all of them when there are fewer)."""
    items = list(items)
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _text_table(ids: list[int], texts, labels, label_names: list[str], answers: dict) -> list[str]:
    rows = ["| text | prediction | probability | true class |", "|---|---|---:|---|"]
    for i in ids:
        text = " ".join(texts[i].replace("<br />", " ").split())  # IMDb's line breaks are HTML
        text = (text[:200] + " ...") if len(text) > 200 else text
        name, prob = answers[i]
        true = label_names[labels[i]]
        shown = name if name == true else f"**{name}**"
        cell = text.replace("|", "\\|")
        rows.append(f"| {cell} | {shown} | {prob:.2f} | {true} |")
    return rows
