"""The task registry: every record is complete and everything that looks tasks up finds them."""

from __future__ import annotations

import json

import pytest

from hfkit import tasks
from hfkit.recipes import list_recipes, load_recipe


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_each_task_names_code_that_exists(name):
    task = tasks.TASKS[name]
    assert callable(task.load("builder")) and callable(task.load("predictor"))
    assert task.command.split()[0] in ("predict", "qa", "generate") and "{}" in task.command
    from hfkit.demo import BUILDERS

    assert task.demo in BUILDERS
    if task.family == "transformers":
        import transformers

        assert hasattr(transformers, task.auto_class) and task.architectures


def test_every_recipe_is_of_a_registered_task():
    assert {load_recipe(n).task for n in list_recipes()} <= set(tasks.TASKS)


@pytest.mark.parametrize("config,task", [
    ({"architecture": "resnet18", "num_classes": 2}, "image-classification"),
    ({"architectures": ["BertForSequenceClassification"]}, "text-classification"),
    ({"architectures": ["BertForQuestionAnswering"]}, "question-answering"),
    ({"architectures": ["GPT2LMHeadModel"]}, "causal-lm"),
    ({"architectures": ["LlamaForCausalLM"]}, "causal-lm"),
    ({"architectures": ["BertModel"]}, None),
])
def test_a_config_tells_its_task(config, task):
    found = tasks.for_config(config)
    assert (found.name if found else None) == task


# -- every task end to end, found through the registry alone ----------------------------------------

def _train(task: str, root, tiny_bert_dir, tiny_gpt2_dir):
    """A seconds-long run of the task's recipe on tiny data; returns the result folder."""
    import json

    from conftest import (
        REPETITIVE,
        tiny_image_overrides,
        write_chinese_qa_model,
        write_image_folder,
        write_toy_cmrc,
    )

    from hfkit.finetune import finetune

    if task == "image-classification":
        name, sets = "hymenoptera", tiny_image_overrides(write_image_folder(root / "img", {"train": 4,
                                                                                          "val": 2}))
    elif task == "text-classification":
        data = root / "reviews.jsonl"
        data.write_text("\n".join(json.dumps({"text": f"a {w} film", "label": i % 2})
                                  for i, w in enumerate(["dull", "great"] * 12)))
        name, sets = "imdb", [f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=32"]
    elif task == "causal-lm":
        (root / "corpus.txt").write_text((REPETITIVE + "\n") * 20)
        name, sets = "gpt2", [f"data.path={root / 'corpus.txt'}", "data.config=null",
                              f"model.name={tiny_gpt2_dir}", "data.block_size=32"]
    else:
        name, sets = "cmrc2018", [f"data.path={write_toy_cmrc(root / 'cmrc', train=16, dev=8)}",
                                  f"model.name={write_chinese_qa_model(root / 'qa-model', 'bin')}",
                                  "data.max_length=64", "data.doc_stride=16"]
    recipe = load_recipe(name, sets + ["train.epochs=1", "train.batch_size=4", "train.mixed_precision=no"],
                         output_dir=str(root / "run"))
    assert recipe.task == task
    finetune(recipe)
    return root / "run"


COMMAND_INPUTS = {"image.jpg": "IMAGE", "...": "艾伦·图灵是人工智能之父。"}


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_each_task_trains_and_is_served_by_what_the_registry_names(name, tmp_path, tiny_bert_dir,
                                                                   tiny_gpt2_dir, capsys):
    """Train, read the folder back, run the task's command on it, write its card, build its demo:
    every step finds its way from the registry and the folder alone."""
    import shlex

    from conftest import make_image

    from hfkit import demo
    from hfkit.cards import model_card
    from hfkit.cli import main
    from hfkit.results import read_result

    out = _train(name, tmp_path, tiny_bert_dir, tiny_gpt2_dir)
    found = read_result(str(out))
    (state,) = (out / "checkpoints").glob("step-*/trainer_state.json")
    evaluated = json.loads(state.read_text())["history"][-1]  # what the last evaluation computed
    numbers = {k.removeprefix("eval_") for k, v in evaluated.items() if k.startswith("eval_")
               and isinstance(v, (int, float))}  # not the per-class table
    assert numbers == set(tasks.TASKS[name].metrics)  # eval.metric's choices are what is computed
    assert found.task is tasks.TASKS[name] and found.family == tasks.TASKS[name].family
    make_image((230, 200, 40)).save(tmp_path / "image.jpg")
    argv = [str(tmp_path / "image.jpg") if a == "image.jpg" else COMMAND_INPUTS.get(a, a)
            for a in shlex.split(found.task.command.format(out))]
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()
    card = model_card(out, "alice/m")
    assert card.data.pipeline_tag == found.task.pipeline_tag
    assert demo.pick_demo(out) == found.task.demo
    blocks = demo.build_demo(str(out))
    blocks.close()
    if not found.task.command.startswith("predict"):  # predict refuses, naming the command to use
        assert main(["predict", "--model", str(out), "x"]) == 2
        assert f"use hfkit {found.task.command.split()[0]} --model {out}" in capsys.readouterr().err
