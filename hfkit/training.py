"""The training loop on Accelerate: the canonical loop plus small, visible features.

set_seed -> build -> one ``prepare`` -> ``accumulate`` / ``backward`` -> ``gather_for_metrics``.
Added on top: mixed precision, clipping, a warmup + cosine schedule, per-epoch evaluation,
best-model saving, early stopping, atomic ``save_state`` checkpoints and exact resume.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from hfkit.devices import (
    launcher_kill_seconds,
    launcher_pid,
    launcher_requested_processes,
    process_state,
    set_cpu_threads,
    stderr_is_a_pipe,
    stderr_to_stdout,
    training_precision,
    write_launcher_defaults,
)
from hfkit.diskspace import (
    DiskFullError,
    checkpoint_bytes,
    disk_full_error,
    folder_bytes,
    model_bytes,
    space_warning,
)
from hfkit.lora import is_adapter_model
from hfkit.models import UNFREEZING, layer_map, set_trainable
from hfkit.objectives import Classification, Objective
from hfkit.recipes import Recipe, RecipeError, flat_fields, save_recipe

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
    fcntl = None

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
PREDICTIONS_FILE = "eval_predictions.json"  # beside the best model: its predictions on the eval set
LOCK_FILE = ".hfkit-run.lock"
WRITE_FOLDER, WRITE_COMPLETE = ".tmp-write", ".complete"  # write_atomically's staging folder
# recipe fields a resumed run may change without making its past inexact; any other change is refused
RESUME_MAY_CHANGE = frozenset({
    "name", "description", "output_dir", "train.epochs", "train.checkpoint_steps",
    "train.checkpoint_epochs", "train.keep_checkpoints", "train.early_stopping_patience",
    "train.tensorboard", "data.num_workers", "data.cache_images", "eval.num_preview_images"})
RESUME_MAY_CHANGE_SECTIONS = ("hub.",)
PROGRESS_SECONDS = 2.0  # how often the progress bar shows the running loss
STOP_CHECK_STEPS = 10  # with several processes, how often they agree on a stop (one all-reduce)


@dataclass
class TrainerState:
    """What the loop needs besides the accelerate state to continue exactly."""

    epoch: int = 0
    batches_in_epoch: int = 0  # batches of ``epoch`` already trained on
    global_step: int = 0  # optimizer steps
    samples_seen: int = 0
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_epoch: int | None = None
    evals_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_eval: dict[str, Any] = field(default_factory=dict)
    # the best evaluation's predictions, in eval-set order (class indices, or QA n-best lists):
    # written once, with the best model (PREDICTIONS_FILE), not into every checkpoint
    best_predictions: list[Any] = field(default_factory=list, metadata={"checkpointed": False})
    interrupted: bool = False  # stopped by a signal, not by the end of training
    # per process: [loss sum, correct, count] of the batches of ``epoch`` trained so far, so that a
    # resumed epoch's train_loss covers the whole epoch
    train_totals: list[list[float]] = field(default_factory=list)
    # per process and optimizer step of ``epoch`` so far: [loss sum, count], for the per-step curve
    step_totals: list[list[list[float]]] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        saved = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("checkpointed", True)}
        (folder / STATE_FILE).write_text(json.dumps(saved, indent=2))

    @classmethod
    def load(cls, folder: Path, out: Path) -> TrainerState:
        """The state of checkpoint ``folder``, with the best predictions from the result folder ``out``."""
        state = cls(**json.loads((folder / STATE_FILE).read_text()))
        if (out / PREDICTIONS_FILE).is_file():
            state.best_predictions = json.loads((out / PREDICTIONS_FILE).read_text(encoding="utf-8"))
        return state


def fit(recipe: Recipe, model: torch.nn.Module, train_loader, eval_loader,
        save_model: Callable[[torch.nn.Module, Path], None], objective: Objective | None = None,
        resume: str | None = None, max_steps: int | None = None) -> TrainerState:
    """Train ``model``; the best weights are written to ``recipe.output_dir`` by ``save_model``.

    ``objective`` computes losses and metrics (default: image classification).
    """
    channels_last = recipe.model.channels_last and recipe.task == "image-classification"
    objective = objective or Classification(channels_last, recipe.train.label_smoothing)
    t, out = recipe.train, Path(recipe.output_dir)
    precision, changed = training_precision(t.mixed_precision, process_state().device.type)
    if changed:
        process_state().print(changed)
    accelerator = Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=t.gradient_accumulation_steps,
        log_with="tensorboard" if t.tensorboard else None, project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(non_blocking=True))
    _check_world(accelerator)
    if accelerator.is_main_process and (wrote := write_launcher_defaults()):
        accelerator.print(wrote)
    if accelerator.device.type == "cpu":
        accelerator.print(set_cpu_threads(accelerator.num_processes))
    checkpoint = check_output_dir(out, resume)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, t, accelerator.device.type)
    if t.layer_lr_decay not in (None, 1.0):
        accelerator.print(describe_lr_groups(model, optimizer))
    model, optimizer, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loader)
    ema = None
    if t.ema_decay:  # registered before load_state, so a resume restores the average too
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=t.ema_decay)
        accelerator.register_for_checkpointing(ema)
    if t.compile:
        model = torch.compile(model, mode=t.compile_mode)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = steps_per_epoch * t.epochs
    # a prepared scheduler steps once per process per optimizer step, hence the factor
    scheduler = accelerator.prepare(make_scheduler(
        optimizer, t.schedule, warmup_steps=int(t.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps=total_steps * accelerator.num_processes))

    state = TrainerState()
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = TrainerState.load(checkpoint, out)
        accelerator.print(f"Resumed from {checkpoint} (epoch {state.epoch + 1}, "
                          f"step {state.global_step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
    if t.tensorboard:
        accelerator.init_trackers("tensorboard", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flat_fields(recipe.to_dict()).items()})

    with StopRequest() as stop:
        loop = _Loop(recipe, accelerator, model, optimizer, scheduler, train_loader, eval_loader,
                     save_model, state, max_steps, objective, ema, stop)
        result = loop.run()
    result.interrupted = loop.stopping
    if loop.stopping:
        accelerator.print(f"Interrupted at step {result.global_step}; a checkpoint was saved. "
                          "Continue with --resume latest.")
    accelerator.end_training()
    return result


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then ``schedule`` (cosine or linear to 0, or constant): torch's LambdaLR
    with transformers' formulas (``get_cosine_schedule_with_warmup`` and kin), written here because
    importing ``transformers.optimization`` costs about 0.7 s (it loads peft and scipy) of every image
    run's start-up. Unlike transformers' ``constant``, constant warms up too, as the recipe says."""
    if schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"unknown schedule '{schedule}': cosine, linear or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        _lr_factor, schedule=schedule, warmup=warmup_steps, total=total_steps))


def _lr_factor(step: int, *, schedule: str, warmup: int, total: int) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


# torch's optimizers whose fused step hfkit takes on a CPU (fused_option says why these, why there)
FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


def make_optimizer(model: torch.nn.Module, t, device_type: str | None = None) -> torch.optim.Optimizer:
    """timm's optimizer factory with the recipe's settings (``t``: the recipe's TrainArgs).

    Every parameter goes in, also those a strategy freezes later (see ``set_trainable``). With
    ``layer_lr_decay`` each layer group gets ``lr * decay ** (depth below the head)``: timm's own
    grouping for timm models, ``layer_map``'s for transformers models. On a CPU (``device_type``),
    Adam and AdamW take torch's fused step (``fused_option``).
    """
    decay = t.layer_lr_decay if t.layer_lr_decay not in (None, 1.0) else None
    if is_adapter_model(model):  # a LoRA model: group by the wrapped model's own layer names
        model = model.get_base_model()
    optimizer = create_optimizer_v2(
        model, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum,
        filter_bias_and_bn=not t.weight_decay_norm_and_bias, layer_decay=decay,
        param_group_fn=(lambda m: _transformer_lr_groups(m, t, decay))
        if decay and getattr(model, "base_model", None) is not None else None,
        **fused_option(t.optimizer, device_type))
    # timm's groups carry an lr_scale that only timm's schedulers apply; set it as each group's lr,
    # which the LambdaLR schedule then scales (it multiplies each group's initial lr: ratios stay)
    for group in optimizer.param_groups:
        group["lr"] = t.lr * group.get("lr_scale", 1.0)
    if "fused" in optimizer.defaults:
        optimizer.register_load_state_dict_post_hook(_keep_fused_choice)
    return optimizer


def _keep_fused_choice(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict``: each group's ``fused`` is this device's choice again, not the
    checkpoint's (torch restores it from the saved groups). A CPU checkpoint resumed on a GPU would
    otherwise step fused there, and one saved unfused under fp16 would get GradScaler's fused-only
    arguments (the scaler asks the optimizer as it was built)."""
    for group in optimizer.param_groups:
        group["fused"] = optimizer.defaults["fused"]


def check_optimizer(name: str) -> None:
    """RecipeError naming ``train.optimizer`` unless timm has an optimizer ``name``: said before
    the data loads, with the nearest name, in place of timm's "not found in registry" later."""
    from timm.optim import list_optimizers

    try:
        get_optimizer_class(name, bind_defaults=False)
    except ValueError:
        hint = difflib.get_close_matches(name.lower(), list_optimizers(), n=1)
        raise RecipeError(f"train.optimizer: timm has no optimizer '{name}'"
                          f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; e.g. sgd, adamw, lamb "
                          "(timm.optim.list_optimizers() lists them all)") from None


def fused_option(opt: str, device_type: str | None) -> dict[str, bool]:
    """``{"fused": True}`` for timm's optimizer ``opt`` where hfkit takes torch's fused step.

    Left to itself (``fused=None``) torch updates the parameters one by one in Python on a CPU:
    AdamW's step over MiniLM's 22M parameters took 152 ms there against 19 ms fused (2 cores,
    2026-12-02); the fused kernel rounds differently, within float precision. Only there, and only
    Adam and AdamW: fused SGD fails once parameters with momentum and parameters without share a
    group (torch 2.14: a frozen backbone unfrozen mid-run), and under fp16's GradScaler it keeps
    uninitialised momentum after a skipped first step; on a GPU torch's default multi-tensor step
    is already a handful of kernels, and fused Adam there wants each gradient laid out exactly as
    its parameter (pytorch#106951). A resumed run steps as its device chooses, whatever the
    checkpoint was saved with (``_keep_fused_choice``).
    """
    try:
        cls = get_optimizer_class(opt, bind_defaults=False)
    except ValueError:  # timm's own error for an unknown name comes when it builds
        return {}
    return {"fused": True} if device_type == "cpu" and cls in FUSED_OPTIMIZERS else {}


def _transformer_lr_groups(model: torch.nn.Module, t, decay: float) -> list[dict[str, Any]]:
    """Param groups per layer group and weight decay, as timm's ``param_groups_layer_decay``
    makes them for timm models (biases and norm weights undecayed unless weight_decay_norm_and_bias)."""
    layers = layer_map(model)
    top = max(layers.values())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        decayed = t.weight_decay_norm_and_bias or p.ndim > 1
        group = groups.setdefault((layers[name], decayed), {
            "params": [], "lr_scale": decay ** (top - layers[name]),
            "weight_decay": t.weight_decay if decayed else 0.0})
        group["params"].append(p)
    return list(groups.values())


def describe_lr_groups(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """One line: each layer group's name and lr, top down (``fc 1.0e-03, layer4.1 7.0e-04, ...``)."""
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr: dict[float, list[str]] = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], []).extend(names[id(p)] for p in group["params"] if id(p) in names)
    parts = [f"{_group_label(params)} {lr:.1e}" for lr, params in sorted(by_lr.items(), reverse=True)]
    return f"Layer-wise lr decay: {len(parts)} groups, top down: {', '.join(parts)}"


def _group_label(names: list[str]) -> str:
    """The module path the names share (``layer4.1``), else their distinct two-part prefixes
    (``conv1+bn1``, ``bert.pooler+classifier``)."""
    split = [n.split(".")[:-1] or [n] for n in names]
    common = os.path.commonprefix(split)
    return ".".join(common) if common else "+".join(dict.fromkeys(".".join(p[:2]) for p in split))


class StopRequest:
    """Ctrl-C or SIGTERM asks the loop to stop at the next optimizer step and checkpoint there.

    Stopping between steps (never inside ``optimizer.step``) keeps the checkpoint consistent.
    A second Ctrl-C (not a SIGTERM) aborts at once. Several processes each see the signal at
    another batch: they agree through accelerate's trigger (see ``_Loop.should_stop``), so all
    stop at one step.

    ``accelerate launch`` before 1.16 does not pass a SIGTERM on to the process it started: the
    launcher dies and its child would train on, orphaned; 1.16 passes it on but nothing survives
    a ``kill -9`` or the OOM killer. So the child also watches its launcher and stops the same way
    when the launcher is gone. (1.16 kills its child 5 s after passing a signal on: a step and a
    checkpoint longer than that are cut short, and the last complete checkpoint stays.)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    WATCH_SECONDS = 1.0

    def __init__(self) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()  # signals need it
        self.requested = False
        self.previous: dict[int, Any] = {}
        self.done = threading.Event()

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
            launcher = launcher_pid()
            if launcher is not None:
                threading.Thread(target=self._watch, args=(launcher,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        # only a second Ctrl-C aborts: a launcher passes SIGTERM on after the terminal's SIGINT
        # (torchrun does), and that must not cut the checkpoint short
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.request("")

    def request(self, why: str) -> None:
        self.requested = True
        print(f"\n{why}Stopping after this step and saving a checkpoint (Ctrl-C again to abort).",
              file=sys.stderr)

    def _watch(self, launcher: int) -> None:
        while not self.done.wait(self.WATCH_SECONDS):
            if os.getppid() != launcher:  # reparented: the launcher was killed
                if stderr_is_a_pipe():  # to the launcher (accelerate 1.16): it is gone
                    stderr_to_stdout()
                self.request("The accelerate launcher has ended (killed?). ")
                return


class _Loop:
    """One training run; split from ``fit`` so each phase reads as one short method."""

    def __init__(self, recipe: Recipe, accelerator: Accelerator, model, optimizer, scheduler,
                 train_loader, eval_loader, save_model: Callable[[torch.nn.Module, Path], None],
                 state: TrainerState, max_steps: int | None, objective: Objective,
                 ema: ModelEmaV3 | None, stop: StopRequest) -> None:
        self.recipe, self.t, self.out = recipe, recipe.train, Path(recipe.output_dir)
        self.acc, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.train_loader, self.eval_loader, self.save_model = train_loader, eval_loader, save_model
        self.state, self.max_steps = state, max_steps
        self.objective, self.ema, self.stop = objective, ema, stop
        self.stopping = False  # the stop all processes agreed on (see should_stop)
        self.timed_checkpoint = False  # whether a checkpoint's time was looked at (stop_time_warning)
        self.trained_until: float | None = None  # when the last epoch's training ended
        self.totals: torch.Tensor | None = None
        self.steps: torch.Tensor | None = None
        self.model_size, self.checkpoint_size = self._estimate_sizes()

    def _estimate_sizes(self) -> tuple[int, int]:
        """The best model's and a checkpoint's bytes, for the space warning and a full disk's
        error: estimated from what trains (the strategy's first trainable set, which train_epoch
        sets again), or a resumed run's last checkpoint as it is on disk; a strategy that unfreezes
        more later can only grow its checkpoints."""
        t, model = self.t, self.plain_model()
        set_trainable(model, t.strategy, self.state.epoch, t.unfreeze_after_epochs, t.unfreeze_every_epochs)
        grows = t.strategy in UNFREEZING
        estimate = checkpoint_bytes(model, self.optimizer, self.ema is not None, grows)
        done = saved_checkpoints(self.out)
        if done:
            estimate = max(folder_bytes(done[-1]), estimate) if grows else folder_bytes(done[-1])
        return model_bytes(model), estimate

    def plain_model(self) -> torch.nn.Module:
        """The model without DDP/compile wrappers: what is frozen, saved and averaged."""
        return self.acc.unwrap_model(self.model, keep_torch_compile=False)

    def eval_model(self) -> torch.nn.Module:
        """The EMA average, else the uncompiled model: a compiled one would compile again for
        evaluation mode and for each new batch shape."""
        return self.ema.module if self.ema is not None else self.plain_model()

    def run(self) -> TrainerState:
        if self.acc.is_main_process and (warning := space_warning(
                self.out, self.checkpoint_size, self.t.keep_checkpoints,
                len(saved_checkpoints(self.out)), self.model_size,
                has_best=self.state.best_metric is not None)):
            self.acc.print(warning)
        while self.state.epoch < self.t.epochs:
            train_metrics = self.train_epoch()
            if train_metrics is None:  # stopped by --max-steps or a signal inside the epoch
                self.finish_interrupted()
                break
            self.end_epoch(train_metrics)
            early_stop = self._patience_exhausted()
            last = (early_stop or self.should_stop() or self.state.epoch >= self.t.epochs
                    or (self.max_steps is not None and self.state.global_step >= self.max_steps))
            steps = self.t.checkpoint_steps
            if (last or self.state.epoch % self.t.checkpoint_epochs == 0
                    or (steps and self.state.global_step % steps == 0)):
                self.save_checkpoint()
            if early_stop:
                self.acc.print(f"Early stopping: no improvement of eval_{self.recipe.eval.metric} "
                               f"in {self.t.early_stopping_patience} evaluations.")
            if last:
                break
        return self.state

    # -- training ------------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float] | None:
        """Train until the epoch ends (metrics) or --max-steps is reached (None)."""
        s, acc = self.state, self.acc
        self.epoch_started = time.perf_counter()
        set_trainable(self.plain_model(), self.t.strategy, s.epoch, self.t.unfreeze_after_epochs,
                      self.t.unfreeze_every_epochs)
        self.train_loader.set_epoch(s.epoch)
        loader = self.train_loader
        if s.batches_in_epoch:
            loader = acc.skip_first_batches(self.train_loader, s.batches_in_epoch)
        self.model.train()
        totals = torch.zeros(3, device=acc.device)  # loss sum, correct, count
        steps = torch.zeros(math.ceil(len(self.train_loader) / self.t.gradient_accumulation_steps), 2,
                            device=acc.device)  # per optimizer step: loss sum, count
        if s.batches_in_epoch and len(s.train_totals) == acc.num_processes:
            totals += torch.tensor(s.train_totals[acc.process_index], device=acc.device)
            if len(s.step_totals) == acc.num_processes:
                steps += torch.tensor(s.step_totals[acc.process_index], device=acc.device)
        self.totals, self.steps = totals, steps  # read by save_checkpoint
        bar = tqdm(loader, total=len(self.train_loader), initial=s.batches_in_epoch,
                   desc=f"epoch {s.epoch + 1}/{self.t.epochs}", unit="batch",
                   disable=not acc.is_local_main_process, dynamic_ncols=True)
        started = refreshed = time.perf_counter()
        for batch in bar:
            stats = self.train_step(batch)
            totals += stats
            steps[s.batches_in_epoch // self.t.gradient_accumulation_steps] += stats[0::2]
            s.batches_in_epoch += 1
            s.samples_seen += _batch_size(batch) * acc.num_processes
            if not acc.sync_gradients:
                continue
            s.global_step += 1
            # reading a value back from the device waits for it: only every few seconds, so the
            # host keeps queueing steps ahead of a GPU
            if not bar.disable and time.perf_counter() - refreshed >= PROGRESS_SECONDS:
                loss_sum, _, count = totals.tolist()
                bar.set_postfix(loss=f"{loss_sum / max(count, 1):.4f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                refreshed = time.perf_counter()
            if s.batches_in_epoch == len(self.train_loader):
                break  # the epoch's last step: a stop or checkpoint due now waits for its evaluation
            if self.should_stop() or (self.max_steps is not None and s.global_step >= self.max_steps):
                s.train_seconds += time.perf_counter() - started
                bar.close()
                return None
            if self.t.checkpoint_steps and s.global_step % self.t.checkpoint_steps == 0:
                s.train_seconds += time.perf_counter() - started
                self.save_checkpoint()
                started = time.perf_counter()
        bar.close()
        # one read for the epoch's sums and its per-step losses
        summed = self.acc.reduce(torch.cat([totals, steps.flatten()]), reduction="sum").tolist()
        summary = self.objective.train_summary(*summed[:3])
        s.train_seconds += time.perf_counter() - started  # after reading totals: the device is done
        self.trained_until = time.perf_counter()
        pairs = zip(summed[3::2], summed[4::2])
        return {**summary, "train_step_losses": [loss / count for loss, count in pairs if count]}

    def should_stop(self) -> bool:
        """Whether to stop for a signal. One process looks at its flag; several raise accelerate's
        trigger where the signal came and read it together every STOP_CHECK_STEPS optimizer steps
        (one all-reduce), so all of them stop at the same step."""
        if self.acc.num_processes == 1:
            self.stopping = self.stop.requested
        elif self.state.global_step % STOP_CHECK_STEPS == 0:
            if self.stop.requested:
                self.acc.set_trigger()
            self.stopping = self.acc.check_trigger()
        return self.stopping

    def train_step(self, batch) -> torch.Tensor:
        """One micro-batch; returns [loss sum, correct, count], still on the device."""
        with self.acc.accumulate(self.model):
            loss, stats = self.objective.train_loss(self.model, batch)
            self.acc.backward(loss)
            if self.acc.sync_gradients and self.t.max_grad_norm:
                self.acc.clip_grad_norm_(self.model.parameters(), self.t.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None and self.acc.sync_gradients:
                self.ema.update(self.plain_model())
        return stats.float()

    # -- evaluation, best model, checkpoints ---------------------------------------------------

    def end_epoch(self, train_metrics: dict[str, float]) -> None:
        s = self.state
        metrics, predictions = evaluate(self.eval_model(), self.eval_loader, self.acc, self.objective)
        s.epoch += 1
        s.batches_in_epoch = 0
        record = {"epoch": s.epoch, "step": s.global_step, **train_metrics, **metrics,
                  "lr": self.scheduler.get_last_lr()[0],
                  "epoch_seconds": time.perf_counter() - self.epoch_started}
        s.history.append(record)
        best = self._update_best(record, predictions)
        self.acc.print(format_metrics(record) + ("  (best)" if best else ""))
        self._warn_if_one_class(predictions)
        self._log(record)

    def _log(self, record: dict[str, Any]) -> None:
        """To the trackers (TensorBoard): tags grouped as train/..., eval/..., and the training loss
        of every optimizer step at its step."""
        if not self.t.tensorboard:
            return
        losses = record.get("train_step_losses") or []
        for i, loss in enumerate(losses):
            self.acc.log({"train/step_loss": loss}, step=record["step"] - len(losses) + 1 + i)
        tags = {"lr": "train/lr", "epoch_seconds": "time/epoch_seconds", "epoch": "epoch"}
        self.acc.log({tags.get(k) or k.replace("_", "/", 1): v for k, v in record.items()
                      if isinstance(v, (int, float)) and k != "step"}, step=record["step"])

    def _warn_if_one_class(self, predictions: list[Any]) -> None:
        model = self.plain_model()
        names = (model.pretrained_cfg.get("label_names") if hasattr(model, "pretrained_cfg")
                 else getattr(getattr(model, "config", None), "id2label", None))
        warning = one_class_warning(predictions, names)
        if warning:
            self.acc.print(warning)

    def finish_interrupted(self) -> None:
        """Stopped by --max-steps: checkpoint first (so resume is exact), then report."""
        self.save_checkpoint()
        if self.state.best_metric is None:  # nothing saved yet: evaluate what we have
            metrics, predictions = evaluate(self.eval_model(), self.eval_loader, self.acc, self.objective)
            record = {"epoch": self.state.epoch + self.state.batches_in_epoch / len(self.train_loader),
                      "step": self.state.global_step, **metrics}
            self._update_best(record, predictions)
            self.acc.print(format_metrics(record))

    def _update_best(self, record: dict[str, Any], predictions: list[Any]) -> bool:
        """Keep ``record`` as the best so far if it is (then its model is saved); whether it was."""
        s, ev = self.state, self.recipe.eval
        value = record.get(f"eval_{ev.metric}")
        if value is None:
            computed = [k[5:] for k, v in record.items() if k.startswith("eval_") and _is_number(v)]
            raise ValueError(f"eval.metric '{ev.metric}' is not computed; choose one of {computed}")
        better = s.best_metric is None or (value > s.best_metric if ev.greater_is_better
                                           else value < s.best_metric)
        if not better:
            s.evals_without_improvement += 1
            return False
        s.best_metric, s.best_epoch, s.evals_without_improvement = value, record["epoch"], 0
        s.best_eval = {k: v for k, v in record.items() if k.startswith("eval_")}
        s.best_predictions = predictions
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            best = self.ema.module if self.ema is not None else self.plain_model()

            def write(tmp: Path) -> None:
                self.save_model(best, tmp)
                (tmp / PREDICTIONS_FILE).write_text(json.dumps(predictions, ensure_ascii=False))
            try:
                write_atomically(self.out, write)
            except Exception as e:
                if (full := self._disk_full(e, self.out, "the best model", self.model_size)) is not None:
                    raise full from e
                raise
        return True

    def _patience_exhausted(self) -> bool:
        p = self.t.early_stopping_patience
        return p is not None and self.state.evals_without_improvement >= p

    def save_checkpoint(self) -> None:
        """``save_state`` into a temporary folder, renamed into place when complete.

        An existing ``step-N`` is never rewritten (replacing it, a crash could lose the only
        checkpoint): the loop saves an epoch's last step once, after its evaluation, so a second
        save of one step means nothing trained since.
        """
        acc, s = self.acc, self.state
        root = self.out / CHECKPOINTS
        final = root / f"step-{s.global_step:08d}"
        if final.exists():
            return
        tmp = root / f".tmp-{final.name}"
        mid_epoch = s.batches_in_epoch and self.totals is not None
        s.train_totals = acc.gather(self.totals[None]).tolist() if mid_epoch else []
        s.step_totals = acc.gather(self.steps[None]).tolist() if mid_epoch else []
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        started = time.perf_counter()
        error: Exception | None = None
        try:
            acc.save_state(str(tmp))
            if acc.is_main_process:
                save_recipe(self.recipe, tmp / "recipe.yaml")
                s.save(tmp)  # last: a folder with its trainer state is complete
        except Exception as e:  # e.g. the disk is full
            error = e
        self._agree_on_checkpoint(error, tmp, root, final.name)
        if acc.is_main_process:
            os.replace(tmp, final)
            for old in saved_checkpoints(self.out)[:-self.t.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            self._note_checkpoint_time(time.perf_counter() - started)
        acc.wait_for_everyone()

    def _agree_on_checkpoint(self, error: Exception | None, tmp: Path, root: Path, name: str) -> None:
        """Raise unless every process wrote its part of checkpoint ``name`` into ``tmp`` (each
        writes its own RNG state): one missing part would make the renamed folder resume
        inexactly, and a process left alone at the next barrier would wait there for ever.
        The partial copy's space is given back once every process has stopped writing into it."""
        acc, what = self.acc, f"checkpoint {name}"
        full = self._disk_full(error, root, what) if error is not None else None
        codes = acc.gather(torch.tensor([0 if error is None else 1 if full is None else 2],
                                        device=acc.device)).tolist()
        if not any(codes):
            return
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from error
        if error is not None:
            raise error
        failed = ", ".join(str(i) for i, code in enumerate(codes) if code)
        if 2 in codes:
            raise DiskFullError(f"the disk of {root} is full: process {failed} could not write its part "
                                f"of {what}. {self._then(disk=True)}")
        raise RuntimeError(f"process {failed} could not write its part of {what} (its error is "
                           f"above). {self._then(disk=False)}")

    def _note_checkpoint_time(self, seconds: float) -> None:
        """After the run's first checkpoint: warn if a stop would take longer than the launcher
        allows (a step, then the evaluation, the best model and the checkpoint: a stop that
        comes in an epoch's last step waits for them)."""
        if self.timed_checkpoint:
            return
        self.timed_checkpoint = True
        step = self.state.train_seconds / max(self.state.global_step, 1)
        after = time.perf_counter() - self.trained_until if self.trained_until else seconds
        if warning := stop_time_warning(step, after, launcher_kill_seconds()):
            self.acc.print(warning)

    def _disk_full(self, error: Exception, folder: Path, what: str,
                   need: int | None = None) -> DiskFullError | None:
        """The DiskFullError to raise in place of ``error`` if the disk is full (it names the last
        complete checkpoint, from which the run goes on, and what to do); None otherwise.
        ``need``: the bytes the write needed, a checkpoint's by default."""
        return disk_full_error(folder, what, self.checkpoint_size if need is None else need, error,
                               self._then(disk=True))

    def _then(self, disk: bool) -> str:
        """What survives a failed write and how to go on."""
        try:
            done = saved_checkpoints(self.out)
        except OSError:
            done = []
        if not done:
            return ("The run stopped before its first checkpoint: "
                    f"{'free some space and ' if disk else ''}start it again.")
        fewer = " (or set train.keep_checkpoints=1)" if self.t.keep_checkpoints > 1 else ""
        room = f"free some space{fewer}, then " if disk else ""
        return (f"The run stopped; {done[-1].name} is its last complete checkpoint: "
                f"{room}go on with --resume latest.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _batch_size(batch) -> int:
    # every text batch has input_ids (QA batches have no labels); image batches are (images, labels)
    return int((batch["input_ids"] if isinstance(batch, Mapping) else batch[1]).shape[0])


@torch.no_grad()
def evaluate(model, loader, accelerator: Accelerator, objective) -> tuple[dict[str, Any], list[int]]:
    """The objective's metrics over the whole eval set, gathered from all processes."""
    model.eval()
    gathered: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(loader, desc="eval", unit="batch", leave=False,
                      disable=not accelerator.is_local_main_process):
        with accelerator.autocast():  # also for an EMA copy, which accelerate did not prepare
            values = accelerator.gather_for_metrics(objective.eval_batch(model, batch))
        for key, value in values.items():
            gathered.setdefault(key, []).append(value)  # kept on the device: no wait per batch
    model.train()
    # floats as float32: numpy has no bfloat16 for a value computed under bf16 autocast
    return objective.metrics({k: (lambda t: t.float() if t.is_floating_point() else t)(torch.cat(v))
                              .cpu().numpy() for k, v in gathered.items()})


def stop_time_warning(step: float, after: float, kill_after: float | None) -> str | None:
    """A warning when stopping (the step under way, ``step`` seconds, then at an epoch's end its
    evaluation and the checkpoint, ``after`` seconds) would outlast the ``kill_after`` seconds the
    launcher allows after passing a Ctrl-C or SIGTERM on; None when it fits, or when nothing
    kills this process."""
    if kill_after is None or step + after < 0.8 * kill_after:
        return None
    return (f"hfkit: warning: stopping takes up to about {step + after:.1f} s here (a step, "
            f"{step:.1f} s, then the evaluation and the checkpoint, {after:.1f} s), and accelerate "
            f"launch kills this process {kill_after:.0f} s after passing a Ctrl-C or SIGTERM on: "
            f"such a stop would keep the last complete checkpoint, not one of the step where it "
            f"stopped. To stop with a checkpoint there, signal the training process itself: "
            f"kill -INT {os.getpid()} (the launcher then ends with an error of its own; the "
            f"checkpoint is complete)")


def one_class_warning(predictions: list[Any], names=None) -> str | None:
    """A classifier that answers one class for everything has learnt nothing yet, though its
    accuracy (the share of that class) can look like learning: the line that says so, else None.
    ``names``: timm's label_names list or transformers' id2label dict."""
    if len(predictions) < 2 or not isinstance(predictions[0], int) or len(set(predictions)) > 1:
        return None
    try:
        name = f" ({names[predictions[0]]})" if names else ""
    except (IndexError, KeyError):
        name = ""
    return (f"Warning: all {len(predictions)} evaluation predictions are class {predictions[0]}{name}: "
            "the model does not tell the classes apart yet (more epochs or another train.lr may help).")


def format_metrics(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']:g}"]
    for key, value in record.items():
        if key not in ("epoch", "step") and isinstance(value, float):
            parts.append(f"{key} {value:.2e}" if key == "lr" else
                         f"({value:.1f} s)" if key == "epoch_seconds" else f"{key} {value:.4f}")
    return "  ".join(parts)


def write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Write files into a temporary folder, then move them into ``out`` as one set.

    The folder is marked complete before the first move, so a crash between two moves leaves a
    complete set that ``finish_interrupted_write`` (run when the folder is next locked) moves on:
    ``out`` then holds all the new files or all the old ones, never a model of one epoch with the
    predictions of another. An incomplete set is dropped.
    """
    tmp = out / WRITE_FOLDER
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mode = _file_mode()
    for item in tmp.iterdir():
        if item.is_file():  # safetensors writes its file 0600: results are for sharing, as others' are
            item.chmod(mode)
    (tmp / WRITE_COMPLETE).touch()
    finish_interrupted_write(out)


def finish_interrupted_write(out: Path) -> None:
    """Move a complete ``write_atomically`` set into ``out``; drop an incomplete one."""
    tmp = out / WRITE_FOLDER
    if not tmp.is_dir():
        return
    if (tmp / WRITE_COMPLETE).exists():
        for item in tmp.iterdir():
            if item.name != WRITE_COMPLETE:
                os.replace(item, out / item.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _file_mode() -> int:
    """The mode a plain ``open(..., "w")`` gives a new file here (0644 under the usual umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def find_checkpoint(out: Path, resume: str) -> Path:
    """``--resume latest`` or ``--resume PATH`` -> the checkpoint folder."""
    if resume != "latest":
        path = Path(resume).expanduser()
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume: '{resume}' is not an hfkit checkpoint folder "
                                    f"(no {STATE_FILE})")
        return path
    found = checkpoints(out)
    if not found:
        raise FileNotFoundError(f"--resume latest: no checkpoint in {out / CHECKPOINTS} (the run stopped "
                                "before its first one, or never started): run the command without --resume")
    return found[-1]


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in ``out``, oldest first; a complete ``.tmp-step-N`` (killed
    between writing its trainer state and the rename) is moved into place first."""
    root = out / CHECKPOINTS
    if process_state().is_main_process:
        for folder in sorted(root.glob(".tmp-step-*")):
            final = root / folder.name.removeprefix(".tmp-")
            if not final.exists() and (folder / STATE_FILE).is_file():
                os.replace(folder, final)
    process_state().wait_for_everyone()
    return saved_checkpoints(out)


def saved_checkpoints(out: Path) -> list[Path]:
    """The checkpoints renamed into place in ``out``, oldest first (their names hold the step
    zero-padded, so they sort by name); nothing is tidied, unlike :func:`checkpoints`."""
    return sorted((out / CHECKPOINTS).glob("step-*"))


def _check_world(accelerator: Accelerator) -> None:
    """Several launched processes that each think they are alone would overwrite each other; and
    ``accelerate launch --num_processes 2`` without ``--multi_gpu`` on CPUs quietly starts one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"{world} processes were launched but they do not form a group (no GPUs here?). "
            "For several processes on CPUs set ACCELERATE_USE_CPU=1 (or answer 'multi-CPU' in "
            "`accelerate config`); for one process use --num_processes 1.")
    asked = launcher_requested_processes()
    if asked is not None and asked > accelerator.num_processes:
        accelerator.print(
            f"Warning: accelerate launch was asked for {asked} processes but started "
            f"{accelerator.num_processes}: training runs in {accelerator.num_processes}. For several "
            "processes on CPUs add --multi_gpu and set ACCELERATE_USE_CPU=1 (README, Multi-GPU).")


def check_output_dir(out: Path, resume: str | None, recipe: Recipe | None = None) -> Path | None:
    """The checkpoint to resume from; refuses to mix a new run into an old run's checkpoints,
    and (given ``recipe``) to resume with settings that would make the resumed run inexact."""
    if resume:
        checkpoint = find_checkpoint(out, resume)
        if recipe is not None:
            check_resume_settings(checkpoint, recipe)
        return checkpoint
    if checkpoints(out):
        raise FileExistsError(
            f"{out} already holds checkpoints of an earlier run. Continue it with --resume latest, "
            "or choose another --output-dir (or delete the folder) to start afresh.")
    return None


def recipe_changes(checkpoint: Path, recipe: Recipe) -> dict[str, tuple[Any, Any]]:
    """Recipe fields that differ from the recipe the checkpoint was made with: key -> (then, now)."""
    saved = checkpoint / "recipe.yaml"
    if not saved.is_file():
        return {}
    import yaml

    then = flat_fields(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
    now = flat_fields(recipe.to_dict())
    return {k: (then.get(k), now.get(k)) for k in sorted(then.keys() | now.keys())
            if then.get(k) != now.get(k)}


def check_resume_settings(checkpoint: Path, recipe: Recipe) -> None:
    """Refuse a resume whose recipe changes what the checkpoint's past depends on (data, model,
    batch size, optimizer, seed, ...); print the changes that keep it exact (epochs, ...)."""
    changes = recipe_changes(checkpoint, recipe)
    safe = {k: v for k, v in changes.items()
            if k in RESUME_MAY_CHANGE or k.startswith(RESUME_MAY_CHANGE_SECTIONS)}
    unsafe = {k: v for k, v in changes.items() if k not in safe}
    if unsafe:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in unsafe.items())
        raise ValueError(
            f"--resume: {checkpoint} was made with other settings ({listed}). A resumed run must "
            f"continue with the settings it was trained with: drop those --set overrides, or resume "
            f"with the checkpoint's own recipe (--recipe {checkpoint / 'recipe.yaml'}), or start a new "
            "run with another "
            f"--output-dir. Only {', '.join(sorted(RESUME_MAY_CHANGE - {'name', 'description'}))} "
            "and hub.* may change.")
    for key, (then, now) in safe.items():
        note = ""
        if key == "train.epochs":
            note = (f": the run continues to epoch {now}, with the learning-rate schedule stretched "
                    f"to {now} epochs from here on" if now > then else
                    f": the run stops after epoch {now}")
        if key not in ("name", "description", "output_dir"):
            process_state().print(f"Resuming with {key} {then!r} -> {now!r}{note}")


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold a lock on ``out`` for the run's lifetime: a second run into the same folder is refused.

    ``flock`` dies with the process that holds it (also by ``kill -9``), so a crash never
    leaves a stale lock behind. Only the main process locks; the others follow it.
    """
    if out.exists() and not out.is_dir():  # before minutes of data loading, not after them
        raise FileExistsError(f"--output-dir {out} is a file: results go into a folder; "
                              "choose another --output-dir")
    if fcntl is None or not process_state().is_main_process:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise RuntimeError(
                f"{out} is in use by a run that is still going ({holder}). Two runs in one folder "
                "would mix their weights, metrics and checkpoints: wait for it to end (or stop it), "
                "or choose another --output-dir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {shlex.join(sys.argv)}".encode(), 0)
        finish_interrupted_write(out)  # a crash mid-write left a set half moved
        yield
    finally:
        os.close(fd)  # releases the lock
