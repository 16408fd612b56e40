"""Recipes: YAML files, ``--set`` overrides, type checks and error messages that name the key."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from hfkit.recipes import (
    DataArgs,
    EvalArgs,
    HubArgs,
    ModelArgs,
    Recipe,
    RecipeError,
    TrainArgs,
    field_docs,
    list_recipes,
    load_recipe,
    recipe_path,
    save_recipe,
)

SECTIONS = {"model": ModelArgs, "data": DataArgs, "train": TrainArgs, "eval": EvalArgs, "hub": HubArgs}


def _matches_type(value, typ) -> bool:
    """Whether ``value`` is a valid instance of the (simple) annotation ``typ``."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        return value in typing.get_args(typ)
    if origin is not None:  # a union such as ``int | None``
        return any(_matches_type(value, arm) for arm in typing.get_args(typ))
    if typ is type(None):
        return value is None
    if typ is float:
        return isinstance(value, float)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_registry_is_not_empty():
    recipes = list_recipes()
    assert recipes, "recipes/ holds no YAML file"
    for name, path in recipes.items():
        assert path.suffix == ".yaml" and path.stem == name and path.is_file()


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipe_loads_with_typed_fields(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    assert recipe.name == name
    assert recipe.output_dir == str(Path("runs") / name)
    assert recipe_path(name) == list_recipes()[name]
    for section, cls in SECTIONS.items():
        args = getattr(recipe, section)
        assert isinstance(args, cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name)
            assert _matches_type(value, hints[f.name]), f"{section}.{f.name}={value!r} is not {hints[f.name]}"


# ---------------------------------------------------------------------------------------------
# Overrides


def test_set_overrides_are_typed():
    recipe = load_recipe(None, [
        "train.lr=3e-4",  # YAML 1.1 reads this as the string '3e-4'
        "train.epochs=5",
        "model.pretrained=false",
        "data.max_train_samples=null",
        "data.val_fraction=0.25",
        "train.max_grad_norm=null",
    ])
    assert recipe.train.lr == 3e-4 and type(recipe.train.lr) is float
    assert recipe.train.epochs == 5 and type(recipe.train.epochs) is int
    assert recipe.model.pretrained is False
    assert recipe.data.max_train_samples is None
    assert recipe.data.val_fraction == 0.25
    assert recipe.train.max_grad_norm is None


def test_set_text_fields_keep_what_was_typed():
    # YAML 1.1 reads these as 493, 5400 (sexagesimal), 31, True and a date
    recipe = load_recipe("hymenoptera", [
        "data.path=0755", "output_dir=runs/0755", "hub.revision=1:30", "hub.repo_id=0x1F",
        "model.name=on", "hub.commit_message=2024-01-01", "train.epochs=0x10"])
    assert (recipe.data.path, recipe.output_dir, recipe.hub.revision) == ("0755", "runs/0755", "1:30")
    assert (recipe.hub.repo_id, recipe.model.name, recipe.hub.commit_message) == ("0x1F", "on", "2024-01-01")
    assert recipe.train.epochs == 16  # a number field still reads YAML's numbers
    assert load_recipe("hymenoptera", ["hub.revision=null"]).hub.revision is None


@pytest.mark.parametrize("metric, hint", [("acc", "did you mean 'accuracy'?"),
                                          ("per_class_accuracy", "accuracy"), ("perplexity", "")])
def test_an_eval_metric_the_task_does_not_compute_is_refused_at_load(metric, hint):
    # before training, not after it: the run's folder would then hold checkpoints of the typo
    with pytest.raises(RecipeError, match="eval.metric: image-classification recipes compute no") as e:
        load_recipe("hymenoptera", [f"eval.metric={metric}"])
    assert hint in str(e.value) and "choose one of loss, accuracy, f1" in str(e.value)
    assert load_recipe("gpt2", ["eval.metric=loss"]).eval.metric == "loss"


def test_yaml_exponent_string_becomes_float(tmp_path):
    path = _write(tmp_path / "exp.yaml", "train:\n  lr: 1e-3\n  weight_decay: 5e-5\n")
    recipe = load_recipe(str(path))
    assert type(recipe.train.lr) is float and recipe.train.lr == 1e-3
    assert type(recipe.train.weight_decay) is float and recipe.train.weight_decay == 5e-5


def test_pretrained_accepts_a_path():
    recipe = load_recipe(None, ["model.pretrained=./w.safetensors"])
    assert recipe.model.pretrained == "./w.safetensors"
    assert isinstance(recipe.model.pretrained, str)
    assert load_recipe(None, ["model.pretrained=true"]).model.pretrained is True


def test_precedence_defaults_yaml_cli_extra(tmp_path):
    path = _write(tmp_path / "prec.yaml", "train:\n  lr: 0.01\n  epochs: 3\ndata:\n  path: a/b\n")
    recipe = load_recipe(str(path), ["train.epochs=7"])
    assert recipe.train.batch_size == TrainArgs().batch_size  # default
    assert recipe.train.lr == 0.01  # YAML beats default
    assert recipe.train.epochs == 7  # CLI beats YAML
    assert recipe.data.path == "a/b"
    assert recipe.name == "prec"  # from the file name
    assert recipe.output_dir == str(Path("runs") / "prec")

    # extra keywords come last, and None means "not given"
    recipe = load_recipe(str(path), ["output_dir=cli"], output_dir=str(tmp_path / "x"))
    assert recipe.output_dir == str(tmp_path / "x")
    recipe = load_recipe(str(path), ["output_dir=cli"], output_dir=None)
    assert recipe.output_dir == "cli"
    recipe = load_recipe(str(path), **{"train.epochs": 9})
    assert recipe.train.epochs == 9


def test_default_output_dir_follows_name():
    assert load_recipe(None).output_dir == str(Path("runs") / "custom")
    assert load_recipe(None, ["name=ants"]).output_dir == str(Path("runs") / "ants")
    assert load_recipe(None, ["name=ants", "output_dir=elsewhere"]).output_dir == "elsewhere"


def test_defaults_match_dataclasses():
    assert load_recipe(None) == Recipe()


# ---------------------------------------------------------------------------------------------
# Errors name the key


def _raises(overrides: list[str], *fragments: str, recipe: str | None = None) -> str:
    with pytest.raises(RecipeError, match=re.escape(fragments[0])) as info:
        load_recipe(recipe, overrides)
    message = str(info.value)
    for fragment in fragments[1:]:
        assert fragment in message, message
    return message


def test_unknown_key_suggests_the_right_one():
    _raises(["train.lrr=0.1"], "train.lrr", "did you mean 'train.lr'")


def test_unknown_section():
    _raises(["trian.lr=0.1"], "'trian'", "did you mean 'train'")
    _raises(["bogus.x=1"], "'bogus'")


def test_section_given_as_value():
    _raises(["train=5"], "'train' must be a section")


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.epochs=true", "train.epochs"),
    ("train.lr=fast", "train.lr"),
    ("model.channels_last=maybe", "model.channels_last"),
])
def test_wrong_type(override, key):
    _raises([override], f"{key}: expected")


@pytest.mark.parametrize("override, key, choices", [
    ("train.mixed_precision=fp8", "train.mixed_precision", ["no", "bf16", "fp16"]),
    ("train.strategy=foo", "train.strategy", ["full", "linear-probe", "freeze-then-unfreeze"]),
    ("train.schedule=step", "train.schedule", ["cosine", "linear", "constant"]),
])
def test_bad_choice_lists_choices(override, key, choices):
    _raises([override], f"{key}: expected one of", *choices)


def test_literal_choices_are_accepted():
    recipe = load_recipe(None, ["train.mixed_precision=fp16", "train.strategy=linear-probe"])
    assert recipe.train.mixed_precision == "fp16"
    assert recipe.train.strategy == "linear-probe"


def test_mixed_precision_no(tmp_path):
    # YAML 1.1 reads a bare `no` as false; the Literal choice "no" must still be accepted
    assert load_recipe(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    path = _write(tmp_path / "cpu.yaml", "train:\n  mixed_precision: no\n")
    assert load_recipe(str(path)).train.mixed_precision == "no"
    _raises(["train.mixed_precision=true"], "train.mixed_precision: expected one of")


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("train.lr=0", "train.lr"),
    ("train.warmup_ratio=1", "train.warmup_ratio"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("data.hflip=2", "data.hflip"),
    ("eval.num_preview_images=-1", "eval.num_preview_images"),
])
def test_out_of_range(override, key):
    _raises([override], key)


def test_set_without_equals():
    _raises(["train.lr"], "KEY=VALUE", "train.lr")
    _raises(["=3"], "KEY=VALUE")


def test_hub_push_needs_repo_id():
    _raises(["hub.push=true"], "hub.repo_id", "hub.push")
    recipe = load_recipe(None, ["hub.push=true", "hub.repo_id=alice/model"])
    assert recipe.hub.push is True and recipe.hub.repo_id == "alice/model"


def test_unknown_recipe_name_suggests_a_known_one():
    name = sorted(list_recipes())[0]
    typo = name[:-1]
    with pytest.raises(RecipeError, match=re.escape(f"unknown recipe '{typo}'")) as info:
        load_recipe(typo)
    assert f"Did you mean '{name}'?" in str(info.value)


def test_unknown_recipe_lists_registry(tmp_path, monkeypatch):
    _write(tmp_path / "cifar10.yaml", "train:\n  epochs: 2\n")
    monkeypatch.setenv("HFKIT_RECIPES_DIR", str(tmp_path))
    assert list(list_recipes()) == ["cifar10"]
    assert load_recipe("cifar10").train.epochs == 2
    with pytest.raises(RecipeError, match="unknown recipe 'cifar100'") as info:
        load_recipe("cifar100")
    assert "Did you mean 'cifar10'?" in str(info.value)


def test_recipe_from_yaml_path(tmp_path):
    path = _write(tmp_path / "mine.yaml", "model:\n  name: resnet50\ntrain:\n  epochs: 4\n")
    recipe = load_recipe(str(path))
    assert recipe.name == "mine"
    assert recipe.model.name == "resnet50"
    assert recipe.train.epochs == 4
    # an explicit name in the file wins over the file name
    path = _write(tmp_path / "other.yaml", "name: explicit\n")
    assert load_recipe(str(path)).name == "explicit"


def test_missing_yaml_path_is_an_unknown_recipe(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe"):
        load_recipe(str(tmp_path / "nope.yaml"))


def test_yaml_not_a_mapping(tmp_path):
    path = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(str(path))


def test_bad_key_inside_yaml_file(tmp_path):
    path = _write(tmp_path / "typo.yaml", "train:\n  epoch: 3\n")
    with pytest.raises(RecipeError, match=re.escape("unknown key 'train.epoch'")) as info:
        load_recipe(str(path))
    assert "did you mean 'train.epochs'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Saving and docs


def test_save_then_load_round_trips(tmp_path):
    recipe = load_recipe(None, [
        "name=round", "train.lr=3e-4", "train.weight_decay=1e-5", "train.epochs=3",
        "model.pretrained=./w.safetensors", "data.path=some/data", "data.max_train_samples=100",
        "train.strategy=freeze-then-unfreeze", "eval.metric=loss", "hub.push=true",
        "hub.repo_id=alice/round", "train.max_grad_norm=null",
    ])
    path = tmp_path / "resolved.yaml"
    save_recipe(recipe, path)
    loaded = load_recipe(str(path))
    assert loaded == recipe
    assert loaded.eval.greater_is_better is False
    assert loaded.model.pretrained == "./w.safetensors"


def test_save_round_trips_defaults(tmp_path):
    recipe = Recipe()
    save_recipe(recipe, tmp_path / "d.yaml")
    assert load_recipe(str(tmp_path / "d.yaml")) == recipe


@pytest.mark.parametrize("cls", [ModelArgs, DataArgs, TrainArgs, EvalArgs, HubArgs])
def test_field_docs_cover_every_field(cls):
    docs = field_docs(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert sorted(docs) == sorted(names)
    assert all(docs[n].strip() for n in names)


def test_readme_field_table_is_current():
    """README.md's recipe field table is what scripts/recipe_fields.py generates from the docstrings."""
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "scripts/recipe_fields.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.yaml", "train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: not valid YAML at line 3, column 9: .*expected ','"):
        load_recipe(str(path))


def test_cli_prints_a_yaml_error_in_one_line(tmp_path, capsys):
    from hfkit.cli import main

    path = _write(tmp_path / "bad.yaml", "model: {name: resnet18\n")
    assert main(["finetune", "--recipe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML at line 2" in err and "Traceback" not in err and len(err.splitlines()) <= 2


@pytest.mark.parametrize("recipe,override,task", [
    ("hymenoptera", "data.config=plain_text", "image-classification"),
    ("imdb", "train.mixup=0.2", "text-classification"),
    ("imdb", "data.image_size=64", "text-classification"),
    ("cmrc2018", "train.label_smoothing=0.1", "question-answering"),
    ("gpt2", "data.max_length=128", "causal-lm"),
    ("gpt2", "eval.num_preview_images=4", "causal-lm"),
])
def test_a_field_the_task_does_not_read_is_an_error(recipe, override, task):
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=rf"{re.escape(key)}: not read by a {task} recipe"):
        load_recipe(recipe, [override])


def test_a_saved_recipe_with_every_field_loads_back(tmp_path):
    """recipe.yaml holds every field, unread ones at their defaults: that is no error."""
    from hfkit.recipes import save_recipe

    for name in list_recipes():
        recipe = load_recipe(name)
        save_recipe(recipe, tmp_path / f"{name}.yaml")
        assert load_recipe(str(tmp_path / f"{name}.yaml")) == recipe


def test_recipes_show_lists_what_the_task_reads_with_docs(capsys):
    from hfkit.cli import main

    assert main(["recipes", "--show", "cifar10", "--set", "train.lr=0.3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cifar10 (image-classification)")
    assert "  train.lr = 0.3\n      Peak learning rate." in out
    assert "train.mixup = " in out and "data.random_erasing = 1.0" in out
    assert "data.block_size" not in out and "eval.qa_scorer" not in out  # other tasks' fields


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(RecipeError, match="unknown task 'token-classification'; one of image-classification"):
        load_recipe(None, ["task=token-classification"])
