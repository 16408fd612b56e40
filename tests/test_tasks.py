"""The task registry: every record is complete and everything that looks tasks up finds them."""

from __future__ import annotations

import pytest

from hfkit import tasks
from hfkit.recipes import list_recipes, load_recipe


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_each_task_names_code_that_exists(name):
    task = tasks.TASKS[name]
    assert callable(task.load("runner")) and callable(task.load("predictor"))
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
