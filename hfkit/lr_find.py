"""The learning-rate range test (Smith, 2017; fastai's ``lr_find``) on a recipe's own pieces.

The task's builder makes the model, training loader and objective exactly as ``hfkit finetune``
would, ``make_optimizer`` the optimizer (so layer_lr_decay's ratios hold) and the recipe's strategy
picks what trains in the first epoch. What is left is the minimal step loop of the test: one
optimizer step per batch (no gradient accumulation) with the lr rising exponentially, the loss
smoothed, a stop when it diverges, and the model and optimizer put back exactly as they were.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from hfkit import plots, tasks
from hfkit.devices import process_state, training_precision
from hfkit.models import set_trainable
from hfkit.objectives import Objective
from hfkit.recipes import Recipe
from hfkit.training import make_optimizer

PLOT = "lr_find.png"
SMOOTHING = 0.98  # fastai's: an exponential moving average over the last ~50 steps
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times the best so far
SKIP_START = 0.1  # share of the first points left out of the suggestion: the average is still settling


@dataclass
class RangeTest:
    """The lrs tried, their raw and smoothed losses, and where the test stopped."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False

    def suggestion(self) -> float:
        """The lr of the steepest descent of the smoothed loss (per decade of lr), before its minimum.

        Steepest descent rather than fastai's valley: it is the plain, well-known rule (Smith's), and
        at the steepest point the loss still falls fast, so the lr sits safely below the minimum,
        where training begins to be unstable. Only points before the minimum count (past it the
        curve rises towards the divergence), and the slope is taken over a tenth of the points, not
        between neighbours, whose difference is mostly the batches' noise.
        """
        if len(self.lrs) < 3:
            raise ValueError("the range test stopped after fewer than 3 steps: start from a lower --start")
        loss, log_lr = np.asarray(self.smoothed), np.log10(self.lrs)
        lowest, first = int(loss.argmin()), max(1, int(len(loss) * SKIP_START))
        span = max(1, len(loss) // 10)
        if lowest - span <= first:  # the loss rose almost at once: a tenth of the best lr is the safe pick
            return self.lrs[lowest] / 10
        starts = np.arange(first, lowest - span + 1)
        slope = (loss[starts + span] - loss[starts]) / (log_lr[starts + span] - log_lr[starts])
        return self.lrs[int(starts[slope.argmin()]) + span // 2]  # the middle of the steepest span


def range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader, objective: Objective,
               accelerator: Accelerator, start: float = 1e-7, end: float = 10.0, steps: int = 100,
               max_grad_norm: float | None = None) -> RangeTest:
    """Train one batch per step at lrs from ``start`` to ``end`` (exponentially); stop when the
    smoothed loss diverges. The weights, buffers, optimizer state and trainable flags are restored
    afterwards, bit for bit. Each group's lr is the ramp's times its ``lr_scale`` (layer_lr_decay)."""
    if not 0 < start < end or steps < 2:
        raise ValueError(f"lr-find needs 0 < --start < --end and --steps >= 2, got {start}, {end}, {steps}")
    saved = ({k: v.detach().clone() for k, v in model.state_dict().items()},
             copy.deepcopy(optimizer.state_dict()), [p.requires_grad for p in model.parameters()])
    result, average = RangeTest(), 0.0
    model.train()
    # 100 steps of a ResNet-18 at 224 px take minutes on a CPU: a bar with the lr and loss so far
    bar = tqdm(total=steps, desc="lr-find", unit="step", dynamic_ncols=True,
               disable=not accelerator.is_local_main_process)
    try:
        for i, batch in zip(range(steps), _forever(loader)):
            lr = start * (end / start) ** (i / (steps - 1))
            loss = _step(model, optimizer, objective, accelerator, batch, lr, max_grad_norm)
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (i + 1))  # without the bias towards the first 0
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smoothed)
            bar.update()
            bar.set_postfix(lr=f"{lr:.1e}", loss=f"{smoothed:.4f}", refresh=False)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * min(result.smoothed):
                result.diverged = True
                break
    finally:
        bar.close()
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        for p, trainable in zip(model.parameters(), saved[2]):
            p.requires_grad_(trainable)
        optimizer.zero_grad(set_to_none=True)
    return result


def _step(model, optimizer, objective: Objective, accelerator: Accelerator, batch, lr: float,
          max_grad_norm: float | None) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    loss, _ = objective.train_loss(model, batch)
    accelerator.backward(loss)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _forever(loader) -> Iterator:
    """The loader's batches, epoch after epoch (a short data set still gives every step a batch)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def lr_find(recipe: Recipe, start: float = 1e-7, end: float = 10.0, steps: int = 100
            ) -> tuple[RangeTest, Path]:
    """The range test on ``recipe``'s model, data, objective and optimizer (one process); writes
    the plot ``lr_find.png`` into the recipe's output folder. Returns the test and the plot's path."""
    set_seed(recipe.train.seed)
    run = tasks.get(recipe.task).load("builder")(recipe)
    t = recipe.train
    precision, changed = training_precision(t.mixed_precision, process_state().device.type)
    if changed:
        process_state().print(changed)
    accelerator = Accelerator(mixed_precision=precision)
    model = run.model
    if recipe.task == "image-classification" and recipe.model.channels_last:  # as fit trains it
        model = model.to(memory_format=torch.channels_last)
    # before freezing, as in fit: every parameter is in it
    optimizer = make_optimizer(model, t, accelerator.device.type)
    set_trainable(model, t.strategy, 0, t.unfreeze_after_epochs, t.unfreeze_every_epochs)
    model, optimizer, loader = accelerator.prepare(model, optimizer, run.train_loader)
    # a prepared model runs under the recipe's autocast by itself, as in fit
    result = range_test(model, optimizer, loader, run.objective, accelerator, start, end, steps,
                        t.max_grad_norm)
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots.plot_lr_find(result.lrs, result.losses, result.smoothed, result.suggestion(), out / PLOT)
    return result, out / PLOT
