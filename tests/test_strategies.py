"""Transfer-learning strategies: layer-wise lr decay, gradual unfreezing, the lr range test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from conftest import tiny_image_overrides
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import hfkit.training
from hfkit import cli
from hfkit.finetune import finetune
from hfkit.lr_find import range_test
from hfkit.models import layer_map, set_trainable
from hfkit.recipes import RecipeError, TrainArgs, load_recipe
from hfkit.training import find_checkpoint, make_optimizer


def _lrs_by_param(model, optimizer) -> dict[str, float]:
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {name: lr[id(p)] for name, p in model.named_parameters()}


def test_layer_decay_gives_timm_groups_decayed_lrs_that_the_schedule_keeps():
    model = timm.create_model("resnet18", num_classes=2)
    optimizer = make_optimizer(model, TrainArgs(lr=0.1, layer_lr_decay=0.5, weight_decay=0.01))
    lrs = _lrs_by_param(model, optimizer)
    assert lrs["fc.weight"] == 0.1 and lrs["layer4.1.conv2.weight"] == 0.05
    assert lrs["layer4.0.conv1.weight"] == 0.025 and lrs["conv1.weight"] == pytest.approx(0.1 * 0.5 ** 9)
    assert len(set(lrs.values())) == 10  # timm's groups: stem, 8 blocks, head
    assert all(g["weight_decay"] == 0 for g in optimizer.param_groups if g["params"][0].ndim == 1)
    # LambdaLR multiplies each group's initial lr by one factor: warmup and cosine keep the ratios
    initial = [g["lr"] for g in optimizer.param_groups]
    scheduler = hfkit.training.make_scheduler(optimizer, "cosine", warmup_steps=2, total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    now = scheduler.get_last_lr()
    assert 0 < now[-1] < initial[-1]
    assert [a / now[-1] for a in now] == pytest.approx([b / initial[-1] for b in initial])


def test_layer_decay_gives_bert_layers_decayed_lrs_and_the_head_the_full_lr(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    optimizer = make_optimizer(model, TrainArgs(lr=1e-3, optimizer="adamw", layer_lr_decay=0.5))
    lrs = _lrs_by_param(model, optimizer)
    assert lrs["classifier.weight"] == lrs["bert.pooler.dense.weight"] == 1e-3
    assert lrs["bert.encoder.layer.1.output.dense.weight"] == 5e-4
    assert lrs["bert.encoder.layer.0.attention.self.query.weight"] == 2.5e-4
    assert lrs["bert.embeddings.word_embeddings.weight"] == 1.25e-4
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert hfkit.training.describe_lr_groups(model, optimizer).startswith(
        "Layer-wise lr decay: 4 groups, top down: bert.pooler+classifier 1.0e-03, "
        "bert.encoder.layer.1 5.0e-04")


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_a_frozen_parameter_in_the_optimizer_is_neither_updated_nor_decayed(name):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    optimizer = make_optimizer(model, TrainArgs(optimizer=name, lr=0.1, weight_decay=0.5))
    model[0].requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        model(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    after = list(model.parameters())
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])


def test_gradual_unfreeze_adds_one_group_from_the_top_every_n_epochs():
    model = timm.create_model("resnet18", num_classes=2)
    groups = layer_map(model)
    counts = []
    for epoch in range(22):
        set_trainable(model, "gradual-unfreeze", epoch, 1, unfreeze_every=2)
        counts.append(sum(p.requires_grad for p in model.parameters()))
        trainable = {groups[n] for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == set(range(max(0, 9 - epoch // 2), 10))
    assert counts[0] == counts[1] == 2  # fc weight and bias
    assert counts[2] > counts[1] and counts[19] == counts[21] == len(list(model.parameters()))


def _run(overrides, out: Path, **kwargs):
    return finetune(load_recipe("hymenoptera", overrides, output_dir=str(out)), **kwargs)


def test_gradual_unfreeze_follows_its_schedule_and_resumes_exactly(image_folder, tmp_path, monkeypatch):
    """6 steps per epoch, 3 epochs: stopped in epoch 2 and resumed, the weights equal an
    uninterrupted run's bit for bit, and each epoch trained one more group."""
    counts: list[int] = []  # trainable parameters, per epoch trained
    epochs: list[int] = []

    def recording(model, strategy, epoch, *args):
        set_trainable(model, strategy, epoch, *args)
        if epochs and epochs[-1] == epoch:  # the loop set the first epoch's early, for its estimates
            return
        epochs.append(epoch)
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
    monkeypatch.setattr(hfkit.training, "set_trainable", recording)
    overrides = tiny_image_overrides(image_folder) + [
        "train.strategy=gradual-unfreeze", "train.epochs=3", "train.layer_lr_decay=0.7",
        "train.optimizer=adamw", "train.keep_checkpoints=5"]
    full = _run(overrides, tmp_path / "full")
    assert epochs == [0, 1, 2]
    assert counts[0] == 512 * 2 + 2 and counts[0] < counts[1] < counts[2]
    full_counts, counts[:], epochs[:] = list(counts), [], []
    assert _run(overrides, tmp_path / "split", max_steps=8)["global_step"] == 8
    epochs[:] = []  # a new process: its estimate sets epoch 2's trainable set, then epoch 2 does
    resumed = _run(overrides, tmp_path / "split", resume="latest")
    assert counts == full_counts[:2] + full_counts[1:]  # epoch 2 again on resume, then epoch 3
    assert resumed["global_step"] == full["global_step"] == 18
    a, b = (load_file(find_checkpoint(tmp_path / run, "latest") / "model.safetensors")
            for run in ("full", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Regression:
    """Mean squared error of a linear model: with unit-variance inputs, plain SGD is stable below
    lr 1 (the loss's curvature is 2) and diverges above it."""

    def train_loss(self, model, batch):
        x, y = batch
        loss = (model(x).squeeze(-1) - y).square().mean()
        return loss, loss.detach()[None]


def test_range_test_restores_everything_and_suggests_an_lr_below_the_divergence():
    from accelerate import Accelerator

    torch.manual_seed(0)
    w = torch.randn(8)
    batches = [(x, x @ w) for x in torch.randn(20, 32, 8)]
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    _Regression().train_loss(model, batches[0])[0].backward()
    optimizer.step()  # momentum buffers exist: the optimizer has state to restore
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    result = range_test(model, optimizer, batches, _Regression(), Accelerator(cpu=True), 1e-5, 100.0, 100)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(m, optimizer.state[p]["momentum_buffer"])
               for m, p in zip(momentum, model.parameters()))
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert result.diverged and 1.0 < result.lrs[-1] < 100.0
    lr = result.suggestion()
    assert 1e-3 < lr < 1.0 and lr not in (result.lrs[0], result.lrs[-1])


def test_lr_find_command_writes_the_plot_and_the_recipe_copy(image_folder, tmp_path, capsys):
    overrides = [arg for o in tiny_image_overrides(image_folder) for arg in ("--set", o)]
    copy = tmp_path / "tuned.yaml"
    code = cli.main(["lr-find", "--recipe", "hymenoptera", *overrides, "--output-dir", str(tmp_path / "run"),
                     "--start", "1e-5", "--end", "100", "--steps", "40", "--apply", str(copy)])
    assert code == 0
    printed, bar = capsys.readouterr()
    assert (tmp_path / "run" / "lr_find.png").stat().st_size > 1000
    tried = int(re.search(r"Tried (\d+) lrs", printed).group(1))
    assert "lr-find: " in bar and f"| {tried}/40 [" in bar  # the progress bar, at the last step tried
    assert re.search(r"loss=(\d+\.\d{4}|nan|inf), lr=\d\.\de[+-]\d+", bar)  # a diverged loss too
    lr = float(re.search(r"suggested lr (\S+)", printed).group(1))
    last = float(re.search(r"to (\S+) \(", printed).group(1))
    assert 1e-5 < lr < last <= 100
    assert load_recipe(str(copy)).train.lr == lr


def test_new_fields_are_checked_and_read_only_where_they_act():
    recipe = load_recipe("hymenoptera", ["train.strategy=gradual-unfreeze", "train.unfreeze_every_epochs=2",
                                         "train.layer_lr_decay=0.8"])
    assert recipe.train.unfreeze_every_epochs == 2
    assert load_recipe("gpt2", ["train.layer_lr_decay=0.9"]).train.layer_lr_decay == 0.9
    with pytest.raises(RecipeError, match="train.unfreeze_every_epochs: not read by a causal-lm"):
        load_recipe("gpt2", ["train.unfreeze_every_epochs=2"])
    with pytest.raises(RecipeError, match=r"layer_lr_decay must be in \(0, 1\]"):
        load_recipe("imdb", ["train.layer_lr_decay=1.5"])
    with pytest.raises(RecipeError, match="did you mean 'train.layer_lr_decay'"):
        load_recipe("imdb", ["train.layer_lr_decy=0.5"])
    with pytest.raises(RecipeError, match="gradual-unfreeze"):
        load_recipe("imdb", ["train.strategy=gradual"])
