"""The command line's own checks: arguments out of range, and inputs predict cannot read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import PIL.Image
import pytest
from conftest import make_image

from hfkit.cli import main


@pytest.mark.parametrize("argv,message", [
    (["predict", "--model", "m", "--top-k", "0", "a.jpg"], "--top-k: must be >= 1, got 0"),
    (["generate", "--model", "m", "--prompt", "p", "--temperature", "-1"], "--temperature: must be >= 0"),
    (["generate", "--model", "m", "--prompt", "p", "--top-p", "5"], "--top-p: must be in (0, 1], got 5"),
    (["generate", "--model", "m", "--prompt", "p", "--top-p", "0"], "--top-p: must be in (0, 1], got 0"),
    (["generate", "--model", "m", "--prompt", "p", "--max-new-tokens", "0"], "--max-new-tokens: must be"),
    (["generate", "--model", "m", "--prompt", "p", "--top-k", "x"], "--top-k: expected a number, got 'x'"),
    (["qa", "--model", "m", "--question", "q", "--context", "c", "--top-k", "-2"], "--top-k: must be >= 1"),
    (["finetune", "--recipe", "hymenoptera", "--max-steps", "0"], "--max-steps: must be >= 1"),
    (["serve", "m", "--max-inputs", "0"], "--max-inputs: must be a whole number >= 1, got '0'"),
    (["serve", "m", "--max-batch", "-3"], "--max-batch: must be a whole number >= 1, got '-3'"),
])
def test_out_of_range_arguments_are_refused_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("setting,message", [
    ("train.optimizer=adamm", "train.optimizer: timm has no optimizer 'adamm' (did you mean 'adam'?)"),
    ("data.auto_augment=randaug", "data.auto_augment: 'randaug' is not a timm augmentation policy;"),
    ("data.auto_augment=foo", "data.auto_augment: 'foo' is not a timm augmentation policy (Unknown AA"),
    ("model.name=resnet19", "model.name: timm has no model 'resnet19' (nearest: resnet18"),
    ("model.name=resnet18.tv_in1kk", "model.name: timm has no weights 'tv_in1kk' for resnet18; its tags: a1"),
    ("model.name=./no-such-model", "model.name: no folder './no-such-model' (looked in "),
    # offline (the tests' HF_HUB_OFFLINE) and not in the cache
    ("model.name=hf-hub:nobody/none", "model.name: 'hf-hub:nobody/none' is neither a folder here"),
    ("model.name=hf-hub:nobody/none@v1", "model.name: 'hf-hub:nobody/none@v1' is neither a folder here"),
])
def test_names_only_a_library_knows_are_judged_before_the_data_loads(setting, message, tmp_path, capsys):
    # the data folder does not exist: the name is judged first, not minutes of loading later
    argv = ["finetune", "--recipe", "hymenoptera", "--set", f"data.path={tmp_path / 'none'}",
            "--set", "data.in_memory=false", "--set", setting, "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_a_hub_model_cached_under_a_tag_is_found_offline_by_that_tag_only(tmp_path, monkeypatch):
    # the Hub cache's own layout: refs/<tag> holds the commit whose snapshot has the files
    import huggingface_hub.constants

    from hfkit.offline import check_model_source

    repo = tmp_path / "models--someone--tagged"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_source("hf-hub:someone/tagged@v1", "model.name")  # no error: it loads from there
    check_model_source(f"hf-hub:someone/tagged@{'0' * 40}", "model.name")
    with pytest.raises(RuntimeError, match="'hf-hub:someone/tagged' is neither a folder here"):
        check_model_source("hf-hub:someone/tagged", "model.name")  # main was never fetched


def test_a_model_name_beside_a_weights_path_is_not_judged(tmp_path, capsys):
    # model.pretrained names what loads: the name's repo need not be here (the README's offline set-up)
    argv = ["finetune", "--recipe", "hymenoptera", "--set", f"data.path={tmp_path / 'none'}",
            "--set", "model.name=hf-hub:nobody/none", "--set", f"model.pretrained={tmp_path}",
            "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.name" not in err and "none" in err, err


def test_data_of_another_kind_or_the_folder_above_it_says_so(tiny_bert_dir, tmp_path, capsys):
    from conftest import make_image, write_image_folder

    images = write_image_folder(tmp_path / "data" / "ants-bees", {"train": 2, "val": 1})
    deeper = tmp_path / "data" / "other" / "train" / "a" / "images"  # another layout beside it
    deeper.mkdir(parents=True)
    for i in range(2):
        make_image((9, 9, 9), seed=i).save(deeper / f"{i}.jpg")
    texts = tmp_path / "data" / "reviews.csv"
    texts.write_text("text,label\na fine film,pos\na dull film,neg\n")

    def refusal(recipe: str, data: Path, *settings: str) -> str:
        argv = ["finetune", "--recipe", recipe, "--set", f"data.path={data}",
                "--set", "model.pretrained=false", *[arg for s in settings for arg in ("--set", s)],
                "--output-dir", str(tmp_path / "run")]
        assert main(argv) == 2
        return capsys.readouterr().err

    err = refusal("hymenoptera", texts)
    assert (f"data.path '{texts}' holds texts (columns: text, label), not the images that "
            "image-classification recipes train on (a column of image paths? name it with "
            "data.image_column). Recipes for texts: gpt2, imdb") in err
    err = refusal("imdb", images, f"model.name={tiny_bert_dir}")
    assert "holds images (columns: image, label), not the texts that text-classification recipes" in err
    assert "Recipes for images: cifar10, hymenoptera, tiny-imagenet" in err
    err = refusal("cmrc2018", texts, f"model.name={tiny_bert_dir}")
    assert "holds texts (columns: text, label), not the questions and contexts that question-answering" in err
    # the folder above the data set: images, no classes
    err = refusal("hymenoptera", tmp_path / "data")
    assert f"data.path '{tmp_path / 'data'}' gives images but no classes" in err
    assert "It holds ants-bees, other: is the data set one of them? Give that folder." in err
    # a data set whose splits hold loose images: no hint about the folders inside
    loose = tmp_path / "loose"
    for split in ("train", "val"):
        (loose / split).mkdir(parents=True)
        make_image((1, 2, 3)).save(loose / split / "a.jpg")
    err = refusal("hymenoptera", loose)
    assert f"{loose / 'train'} holds images but no class folders: put each class's images" in err
    # one class folder of images, no splits: a class, not a data set to step into
    one = tmp_path / "one" / "ants"
    one.mkdir(parents=True)
    make_image((1, 2, 3)).save(one / "a.jpg")
    err = refusal("hymenoptera", one.parent)
    assert "It holds one class folder, 'ants': training a classifier needs a folder per class" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ctrl_c_before_training_is_a_line_and_code_130(monkeypatch, capsys):
    import hfkit.finetune

    def loading_data(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hfkit.finetune, "finetune", loading_data)
    assert main(["finetune", "--recipe", "hymenoptera"]) == 130
    assert capsys.readouterr().err == "hfkit finetune: interrupted\n"


def test_a_folder_without_a_model_says_what_it_is_and_what_to_do(tmp_path, capsys):
    step = tmp_path / "run" / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    run = tmp_path / "run"
    assert main(["show", str(run)]) == 2
    assert ("its run saved checkpoints but no model yet (it stopped before its first evaluation); go on "
            f"with `hfkit finetune --recipe {run / 'recipe.yaml'} --output-dir {run} --resume latest`"
            ) in capsys.readouterr().err
    assert main(["show", str(step)]) == 2
    assert f"it is a training checkpoint; pass its run folder, {run}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    from conftest import tiny_image_overrides, write_image_folder

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("predict")
    data = write_image_folder(root / "images", {"train": 4, "val": 2})
    out = root / "run"
    finetune(load_recipe("hymenoptera", tiny_image_overrides(data) + ["train.epochs=1"], output_dir=str(out)))
    return out


def test_predict_goes_on_after_an_unreadable_file_and_a_bomb(image_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)  # a 100x100 image is then a "bomb"
    bomb, empty, good = tmp_path / "bomb.png", tmp_path / "empty.jpg", tmp_path / "good.jpg"
    PIL.Image.new("RGB", (100, 100)).save(bomb)
    half, strip = tmp_path / "half.png", tmp_path / "strip.png"  # Pillow only warns for half's 3600
    PIL.Image.new("RGB", (60, 60)).save(half)
    PIL.Image.new("RGB", (1, 51)).save(strip)
    empty.write_bytes(b"")
    make_image((230, 200, 40)).save(good)
    inputs = [str(bomb), str(half), str(strip), str(empty), str(good)]
    assert main(["predict", "--model", str(image_model), "--top-k", "2", *inputs]) == 0
    captured = capsys.readouterr()
    assert f"{bomb}: cannot read image (DecompressionBombError" in captured.err
    assert f"{half}: cannot read image (DecompressionBombError" in captured.err
    assert f"{strip}: cannot read image (ValueError: 1x51 pixels: longer than 50:1" in captured.err
    assert f"{empty}: cannot read image" in captured.err
    assert captured.out.splitlines()[0] == str(good) and len(captured.out.splitlines()) == 3


def test_predict_fails_when_no_input_could_be_read(image_model, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert main(["predict", "--model", str(image_model), str(text)]) == 1
    assert "none of the 1 inputs could be read as an image" in capsys.readouterr().err


def test_version_and_bare_hfkit_print_and_exit_0(capsys):
    from hfkit import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"hfkit {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hfkit") and "finetune" in out and "show" in out


def test_show_tells_what_a_result_folder_is(image_model, capsys):
    assert main(["show", str(image_model)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{image_model}: image-classification (timm resnet18), 2 classes: ants, bees")
    assert "trained: recipe hymenoptera, model resnet18" in out and "1 epoch (best: epoch 1)" in out
    assert re.search(r"\nmetrics: eval_loss [\d.]+, eval_accuracy [\d.]+", out)
    assert "model.safetensors (" in out and f"  hfkit predict --model {image_model} image.jpg" in out
    assert f"  hfkit evaluate --model {image_model} --data NEW_DATA" in out


def test_a_missing_local_folder_is_called_a_folder_not_a_hub_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for argv in (["predict", "--model", "runs/nope", "a.jpg"], ["show", "runs/nope"],
                 ["qa", "--model", "runs/nope", "--question", "q", "--context", "c"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"'runs/nope' (looked in {tmp_path})" in err and "hfkit download" not in err, err


def test_push_dry_run_needs_no_folder_argument(image_model, capsys):
    assert main(["push", str(image_model), "--repo-id", "alice/ants", "--dry-run"]) == 0
    preview = image_model / "push-preview"
    assert (preview / "README.md").is_file() and (preview / "model.safetensors").is_file()
    assert "push-preview/ holds exactly what" in capsys.readouterr().out


def test_every_command_has_help_for_every_option_and_examples():
    import argparse

    from hfkit.cli import EXAMPLES, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(EXAMPLES)
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, f"hfkit {name} {'/'.join(action.option_strings) or action.dest}"
        text = parser.format_help()
        assert "examples:\n" in text and all(line in text for line in EXAMPLES[name])
        # each example parses (nothing runs: parse_args only)
        for line in EXAMPLES[name]:
            import shlex

            words = shlex.split(line)
            words = words[len(words) - words[::-1].index("&&"):] if "&&" in words else words
            words = words[:words.index(">")] if ">" in words else words  # hfkit's part of the line
            assert build_parser().parse_args(words[1:]).command == name


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers on Tab after ``words`` (the last one is being typed), with ``script`` loaded."""
    import subprocess

    line = " ".join(words)
    quoted = " ".join(f"'{w}'" for w in words)
    # compopt works only inside a real completion: record what the script asks of it instead
    probe = (f"source '{script}'; compopt() {{ echo \"compopt $*\" > compopt.log; }}; COMP_WORDS=({quoted}); "
             f"COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; COMP_POINT={len(line)}; COMPREPLY=(); "
             f"_shtab_hfkit; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=script.parent,
                          check=True)
    log = script.parent / "compopt.log"
    paths = log.exists() and "compopt -o filenames" in log.read_text()  # bash: "/" after folders, no space
    log.unlink(missing_ok=True)
    return sorted(filter(None, done.stdout.splitlines())) + (["(paths)"] if paths else [])


def test_bash_completion_offers_commands_options_recipes_and_folders(tmp_path, capsys):
    """The script `hfkit completion bash` prints, loaded into a real bash, completes what hfkit takes."""
    import argparse
    import shutil

    from hfkit.cli import build_parser
    from hfkit.recipes import list_recipes

    if not shutil.which("bash"):
        pytest.skip("no bash")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "hfkit.bash"
    script.write_text(capsys.readouterr().out)
    (tmp_path / "runs" / "ants").mkdir(parents=True)
    (tmp_path / "mine.yaml").write_text("task: image-classification\n")
    (tmp_path / "notes.txt").write_text("")

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert _complete(script, ["hfkit", ""]) == sorted(sub.choices)
    assert _complete(script, ["hfkit", "fi"]) == ["finetune"]
    assert _complete(script, ["hfkit", "finetune", "--re"]) == ["--recipe", "--resume"]
    # recipe names from the registry, YAML files (not other files) and folders
    assert _complete(script, ["hfkit", "finetune", "--recipe", ""]) == sorted([*list_recipes(), "mine.yaml",
                                                                              "runs"]) + ["(paths)"]
    assert _complete(script, ["hfkit", "recipes", "--show", "cif"]) == ["cifar10", "(paths)"]
    assert _complete(script, ["hfkit", "lr-find", "--recipe", "hy"]) == ["hymenoptera", "(paths)"]
    assert _complete(script, ["hfkit", "predict", "--model", "ru"]) == ["runs", "(paths)"]  # folders
    assert _complete(script, ["hfkit", "finetune", "--resume", "ru"]) == ["runs", "(paths)"]
    assert _complete(script, ["hfkit", "predict", "--top"]) == ["--top-k"]
    assert _complete(script, ["hfkit", "export", "runs/ants", "--quantize", ""]) == ["int8"]


EXIT_PROBE = """
import atexit, gc, sys
# registered first, so it runs after every other atexit handler: what the interpreter has left to do
atexit.register(lambda: print("frozen", gc.get_freeze_count(), "threshold", gc.get_threshold()[0]))
sys.argv[0] = {script!r}
{call}
"""


@pytest.mark.parametrize("name,call", [
    ("console script", "from hfkit.cli import run; run(sys.argv[1:])"),
    ("scripts/finetune.py", "import runpy; runpy.run_path(sys.argv[0], run_name='__main__')"),
])
def test_a_process_leaves_its_objects_to_the_os_and_collects_less_while_importing(name, call):
    """run() (the console script's entry, python -m hfkit.cli, scripts/finetune.py) freezes the
    objects before the interpreter's final collections (3-4 s after the last line otherwise), keeps
    the exit code, and raises the collector's threshold for the imports."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    repo = Path(__file__).resolve().parents[1]
    (console,) = entry_points(group="console_scripts", name="hfkit")  # as installed
    assert console.value == "hfkit.cli:run"
    script = str(repo / "scripts" / "finetune.py")
    for argv, code in ((["--help"], 0), (["--recipe", "no-such-recipe"], 2)):
        if name == "console script":
            argv = ["finetune", *argv]
        proc = subprocess.run([sys.executable, "-c", EXIT_PROBE.format(script=script, call=call), *argv],
                              capture_output=True, text=True, cwd=repo, timeout=120)
        assert proc.returncode == code, proc.stderr
        frozen, threshold = re.search(r"frozen (\d+) threshold (\d+)", proc.stdout).groups()
        assert int(frozen) > 10_000 and int(threshold) == 10_000


IMPORT_PROBE = ("import sys; from hfkit.cli import main; code = main(sys.argv[1:]); "
                "print('loaded:', *[m for m in ('datasets', 'timm', 'transformers') if m in sys.modules]); "
                "sys.exit(code)")


def test_a_prediction_imports_only_its_own_family_of_libraries(image_model, tiny_bert_dir, tmp_path):
    """timm (with torchvision) and transformers each take seconds to import on a small CPU, datasets
    (with pandas and pyarrow) over one: a text prediction loads no timm or datasets, an image
    prediction no transformers or datasets."""
    import subprocess
    import sys

    make_image((230, 200, 40)).save(tmp_path / "good.jpg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    loaded = {}
    for family, model, given in (("text", tiny_bert_dir, "A wonderful film."),
                                 ("image", image_model, str(tmp_path / "good.jpg"))):
        proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, "predict", "--model", str(model), given],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0 and "%" in proc.stdout, proc.stderr
        loaded[family] = set(re.search(r"^loaded:(.*)$", proc.stdout, re.M)[1].split())
    assert "transformers" in loaded["text"] and not {"timm", "datasets"} & loaded["text"]
    assert "timm" in loaded["image"] and not {"transformers", "datasets"} & loaded["image"]


def test_an_image_run_imports_no_transformers_pipelines_nor_peft(image_folder, tmp_path):
    """Start-up: evaluate's Evaluator classes would import transformers.pipelines (about 1 s) and
    transformers' schedules peft; an image run needs neither. A library user's evaluate is untouched."""
    import subprocess
    import sys

    from conftest import tiny_image_overrides

    argv = ["finetune", "--recipe", "hymenoptera", "--output-dir", str(tmp_path / "run"),
            *[a for o in tiny_image_overrides(image_folder) + ["train.epochs=1"] for a in ("--set", o)]]
    code = ("import sys; from hfkit.cli import main; "
            f"rc = main({argv!r}); "
            "print(rc, sorted(m for m in ('transformers.pipelines', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()  # the run's metrics were computed: it saved
    library = subprocess.run([sys.executable, "-c", "import sys, hfkit.metrics; "
                              "print(sys.modules['evaluate.evaluator'].TRANSFORMERS_AVAILABLE)"],
                             capture_output=True, text=True, timeout=300)
    assert library.stdout.strip() == "True", library.stderr
