"""The ``hfkit`` command: finetune, lr-find, recipes, predict, generate, qa, evaluate, download, push, export,
serve, demo, completion."""

from __future__ import annotations

import argparse
import gc
import importlib.abc
import json
import os
import sys
from pathlib import Path

from hfkit.completion import add_completion_parser
from hfkit.offline import go_offline_if_unreachable


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: a ``kind`` within [low, high] (``low_open``: low itself excluded)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if (low is not None and (value < low or (low_open and value == low))) or (
                high is not None and value > high):
            bound = f"{'>' if low_open else '>='} {low:g}" if high is None else (
                f"in {'(' if low_open else '['}{low:g}, {high:g}]")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


POSITIVE = _number(int, 1)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True,
                        help="a registered recipe name (see `hfkit recipes`) or a YAML file; "
                             "`hfkit recipes --show NAME` prints its fields and what each means")
    parser.add_argument("--output-dir", help="where results and checkpoints go (default runs/<recipe>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="latest|PATH",
                        help="continue from the latest checkpoint in the output folder, or from PATH")
    parser.add_argument("--max-steps", type=POSITIVE,
                        help="stop after N optimizer steps in all (a checkpoint is saved; "
                             "--resume continues); the schedule still spans train.epochs")


def finetune_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()  # before datasets/timm are imported
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides, output_dir=args.output_dir)
    results = finetune(recipe, resume=args.resume, max_steps=args.max_steps)
    return 130 if results.get("interrupted") else 0  # 130: the shell's code for Ctrl-C


def lr_find_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.lr_find import lr_find
    from hfkit.recipes import load_recipe, save_recipe

    recipe = load_recipe(args.recipe, args.overrides, output_dir=args.output_dir)
    result, plot = lr_find(recipe, start=args.start, end=args.end, steps=args.steps)
    lr = result.suggestion()
    stopped = f"diverged at lr {result.lrs[-1]:.1e}" if result.diverged else "did not diverge"
    print(f"Tried {len(result.lrs)} lrs from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e} ({stopped}); "
          f"suggested lr {lr:.2e} (steepest descent of the smoothed loss); plot: {plot}")
    if args.apply:
        recipe.train.lr = float(f"{lr:.2e}")
        save_recipe(recipe, args.apply)
        print(f"Wrote {args.apply} with train.lr={recipe.train.lr:g}: hfkit finetune --recipe {args.apply}")
    return 0


def recipes_command(args: argparse.Namespace) -> int:
    from hfkit.recipes import describe, list_recipes, load_recipe

    if args.show:
        print(describe(load_recipe(args.show, args.overrides)))
        return 0

    rows = [("name", "task", "model", "description")]
    for name in list_recipes():
        r = load_recipe(name)
        rows.append((name, r.task, r.model.name, r.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


def show_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.results import describe_result

    print(describe_result(args.run_dir))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.results import read_result

    found = read_result(args.model)
    task = found.task
    if not task.command.startswith("predict"):  # a QA or language model would get a random head
        raise ValueError(f"'{args.model}' is a {task.name} model, which hfkit predict does not serve: "
                         f"use hfkit {task.command.format(args.model)}")
    if task.family == "transformers":  # inputs are texts
        classifier = found.predictor()(args.model)  # PyTorch, or onnxruntime for an export folder
        for text, ranked in zip(args.inputs, classifier.predict(args.inputs, top_k=args.top_k)):
            print(text)
            _print_ranked(ranked)
        return 0
    from hfkit.data.transforms import UNREADABLE

    classifier = found.predictor()(args.model)
    unreadable = 0
    for path in args.inputs:  # one bad file does not stop the others
        try:
            (ranked,) = classifier.predict([path], top_k=args.top_k)
        except UNREADABLE as e:
            print(f"{path}: cannot read image ({type(e).__name__}: {e})", file=sys.stderr)
            unreadable += 1
            continue
        print(path)
        _print_ranked(ranked)
    if unreadable == len(args.inputs):
        print(f"hfkit predict: error: none of the {unreadable} inputs could be read as an image",
              file=sys.stderr)
        return 1
    return 0


def _print_ranked(ranked: list[tuple[str, float]]) -> None:
    for label, score in ranked:
        print(f"  {score:7.2%}  {label}")


def generate_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.inference import generate

    generate(args.model, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
             top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
             seed=args.seed, stream=True)
    return 0


def _qa_settings(args: argparse.Namespace) -> None:
    """Unset window/answer options: what training used (a QA result folder), else the defaults."""
    from hfkit.results import QA_DEFAULTS, read_result

    given = {k: getattr(args, k) for k in QA_DEFAULTS}
    try:
        settings = read_result(args.model).qa_settings(**given)
    except (FileNotFoundError, ValueError, RuntimeError):  # no folder yet: answering says what is wrong
        settings = {k: v or QA_DEFAULTS[k] for k, v in given.items()}
    vars(args).update(settings)


def qa_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.inference import answer

    _qa_settings(args)

    context = args.context
    if args.context_file:
        context = Path(args.context_file).read_text(encoding="utf-8")
    if context is None:
        raise ValueError("give the text to search with --context or --context-file")
    result = answer(args.question, context, model=args.model, top_k=args.top_k,
                    max_answer_length=args.max_answer_length, doc_stride=args.doc_stride,
                    max_length=args.max_length, handle_impossible=args.handle_impossible,
                    precision=args.precision)
    print(json.dumps(result, ensure_ascii=False))
    return 0


# evaluate's options that one task's scorer takes, with their defaults; another task's are refused
EVALUATE_OPTIONS = {"question-answering": {"max_answer_length": None, "doc_stride": None, "max_length": None,
                                           "scorer": "auto", "precision": "fp32"},
                    "image-classification": {"precision": "fp32"},
                    "text-classification": {"precision": "fp32"}, "causal-lm": {"block_size": None}}


def evaluate_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.results import read_result

    task = read_result(args.model).task
    if not task.evaluator:
        raise ValueError(f"'{args.model}' is a {task.name} model, which hfkit evaluate does not score; "
                         "its run's eval_results.json holds what training measured")
    own = EVALUATE_OPTIONS.get(task.name, {})
    given = [f"--{k.replace('_', '-')}" for options in EVALUATE_OPTIONS.values()
             for k, default in options.items() if k not in own and getattr(args, k) != default]
    if given:
        raise ValueError(f"{', '.join(dict.fromkeys(given))}: not an option for {task.name} models "
                         f"('{args.model}' is one)")
    if task.name == "question-answering":
        _qa_settings(args)
    common = {"split": args.split, "output_dir": args.output_dir, "max_samples": args.max_samples,
              "batch_size": args.batch_size} | {k: getattr(args, k) for k in own}
    results = task.load("evaluator")(args.model, args.data, **common)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def download_command(args: argparse.Namespace) -> int:
    from hfkit.hub import download

    folder = download(args.repo_id, args.to or f"./models/{args.repo_id.split('/')[-1]}",
                      repo_type=args.repo_type, revision=args.revision, include=args.include or None)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and ".cache" not in p.parts)
    print(f"Downloaded {args.repo_id} to {folder}/ ({len(files)} files: {', '.join(files)})")
    what = "--set data.path=" if args.repo_type == "dataset" else "--model "
    print(f"Use it offline with HF_HUB_OFFLINE=1 and {what}{folder}")
    return 0


def push_command(args: argparse.Namespace) -> int:
    from hfkit.hub import SPACE_PREVIEW, push
    from hfkit.space import check_space_options, push_space

    # --dry-run alone (""): the preview goes beside the results
    dry_run = str(Path(args.run_dir) / "push-preview") if args.dry_run == "" else args.dry_run
    if args.space:  # before the model goes up
        check_space_options(args.space, args.repo_id, revision=args.revision, create_pr=args.create_pr)
    where = push(args.run_dir, args.repo_id, private=args.private, revision=args.revision,
                 create_pr=args.create_pr, commit_message=args.commit_message, dry_run=dry_run,
                 license=args.license)
    if dry_run:
        print(f"Dry run: {where}/ holds exactly what `hfkit push` would upload to {args.repo_id} "
              "(README.md is the model card); nothing was sent.")
    else:
        print(f"Pushed {args.run_dir} to {args.repo_id}: {where}")
    if args.space:
        space = push_space(args.run_dir, args.repo_id, args.space, private=args.private,
                           dry_run=Path(dry_run) / SPACE_PREVIEW if dry_run else None)
        if dry_run:
            print(f"Dry run: {space}/ is the Space folder for {args.space}; nothing was sent.")
        else:
            private = " (a private model: give the Space a read token as its HF_TOKEN secret)"
            print(f"Pushed the Space {args.space}: {space}" + (private if args.private else ""))
    return 0


def export_command(args: argparse.Namespace) -> int:
    go_offline_if_unreachable()
    from hfkit.export import export

    report = export(args.run_dir, out_dir=args.out, quantize=args.quantize, eval_data=args.eval_data,
                    max_eval_samples=args.max_eval_samples,
                    progress=lambda m: print(f"hfkit export: {m}", file=sys.stderr, flush=True))
    print(report.table())
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from hfkit.models import merge_adapter

    out = merge_adapter(args.run_dir, args.out)
    print(f"Merged the LoRA adapter of {args.run_dir} into its base model -> {out}/ (a plain model folder)")
    return 0


def add_merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA result folder's adapter into its base model: a plain "
                       "model folder")
    p.add_argument("run_dir", help="result folder of a train.strategy=lora run, e.g. runs/imdb-lora")
    p.add_argument("--out", required=True, help="new folder for the merged model")
    p.set_defaults(func=merge_command)


def add_lr_find_parser(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test on a recipe: plot and suggested train.lr")
    p.add_argument("--recipe", required=True, help="a registered recipe name or a YAML file, as for finetune")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set data.path=./data (repeatable)")
    p.add_argument("--output-dir", help="where lr_find.png goes (default runs/<recipe>)")
    p.add_argument("--start", type=_number(float, 0.0, low_open=True), default=1e-7,
                   help="lowest lr tried (default 1e-7)")
    p.add_argument("--end", type=_number(float, 0.0, low_open=True), default=10.0,
                   help="highest lr tried, unless the loss diverges first (default 10)")
    p.add_argument("--steps", type=_number(int, 2), default=100,
                   help="optimizer steps, one batch each, lrs spaced exponentially (default 100)")
    p.add_argument("--apply", metavar="FILE",
                   help="write the recipe, with train.lr set to the suggestion, to this YAML file")
    p.set_defaults(func=lr_find_command)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a result folder to ONNX, checked against PyTorch (+ int8)")
    p.add_argument("run_dir", help="result folder, e.g. runs/ants")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write model.int8.onnx and report its agreement, size and accuracy")
    p.add_argument("--out", help="export folder (default <run_dir>/onnx)")
    p.add_argument("--eval-data", metavar="PATH",
                   help="data to measure accuracy on (default with --quantize: the recipe's data, if here)")
    p.add_argument("--max-eval-samples", type=POSITIVE, default=200,
                   help="eval examples the accuracies use at most (default 200)")
    p.set_defaults(func=export_command)


def _add_qa_arguments(p: argparse.ArgumentParser) -> None:
    # defaults None: a result folder's recipe.yaml supplies what training used, else QA_DEFAULTS
    p.add_argument("--max-answer-length", type=POSITIVE, help="longest answer, in tokens (default 30)")
    p.add_argument("--doc-stride", type=POSITIVE,
                   help="tokens shared by neighbouring windows of a long context (default 128)")
    p.add_argument("--max-length", type=POSITIVE, help="tokens per window, question + context (default 384)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="bf16: faster on GPUs and on CPUs with AVX512-BF16")


# shown under each command's --help
EXAMPLES = {
    "finetune": ["hfkit finetune --recipe hymenoptera --set train.epochs=5 --output-dir runs/ants",
                 "hfkit finetune --recipe hymenoptera --output-dir runs/ants --resume latest",
                 "hfkit finetune --recipe imdb --set model.name=./models/bert --set data.path=./imdb"],
    "lr-find": ["hfkit lr-find --recipe hymenoptera --set data.path=./hymenoptera_data",
                "hfkit lr-find --recipe imdb --steps 50 --end 1e-2 --apply imdb-lr.yaml"],
    "recipes": ["hfkit recipes", "hfkit recipes --show cifar10 --set train.lr=0.2"],
    "show": ["hfkit show runs/ants"],
    "merge": ["hfkit merge runs/imdb-lora --out runs/imdb-merged"],
    "predict": ["hfkit predict --model runs/ants bee.jpg ant.jpg --top-k 2",
                'hfkit predict --model runs/imdb "A wonderful film."',
                "hfkit predict --model runs/ants/onnx bee.jpg  # an export folder: onnxruntime"],
    "generate": ['hfkit generate --model runs/gpt2 --prompt "Once upon a time" --temperature 0.8 --seed 0'],
    "qa": ['hfkit qa --model runs/cmrc2018 --question "谁是人工智能之父？" --context-file page.txt'],
    "evaluate": ["hfkit evaluate --model runs/ants --data ./more_ants_and_bees",
                 "hfkit evaluate --model runs/imdb --data ../shared/data/imdb --max-samples 2000",
                 "hfkit evaluate --model runs/cmrc2018 --data ../shared/data/cmrc2018/cmrc2018_dev.json",
                 "hfkit evaluate --model runs/gpt2 --data ./my_stories.txt"],
    "download": ["hfkit download uer/roberta-base-chinese-extractive-qa --to ./models/qa",
                 "hfkit download stanfordnlp/imdb --repo-type dataset --to ./data/imdb"],
    "push": ["hfkit push runs/ants --repo-id alice/resnet18-ants-bees --dry-run",
             "hfkit push runs/ants --repo-id alice/resnet18-ants-bees --private",
             "hfkit push runs/ants --repo-id alice/ants --space alice/ants-demo"],
    "serve": ["hfkit serve runs/ants --port 8000",
              "hfkit serve runs/ants/onnx --max-batch 64"],
    "demo": ["hfkit demo runs/ants", "hfkit demo runs/cmrc2018 --port 7861"],
    "completion": ["mkdir -p ~/.local/share/bash-completion/completions && "
                   "hfkit completion bash > ~/.local/share/bash-completion/completions/hfkit",
                   "mkdir -p ~/.zfunc && hfkit completion zsh > ~/.zfunc/_hfkit"],
    "export": ["hfkit export runs/ants --format onnx", "hfkit export runs/imdb --format onnx --quantize int8",
               "hfkit export runs/ants --quantize int8 --eval-data ./hymenoptera_data --out ./ants-onnx"],
}


def _with_examples(sub) -> None:
    """Each command's --help ends with examples (argparse keeps the epilog's lines as written)."""
    for name, parser in sub.choices.items():
        if name in EXAMPLES:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


def build_parser() -> argparse.ArgumentParser:
    from hfkit import __version__

    parser = argparse.ArgumentParser(prog="hfkit", description="Hugging Face transfer learning toolkit",
                                     epilog="Start with: hfkit recipes; then hfkit finetune --recipe NAME")
    parser.add_argument("--version", action="version", version=f"hfkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="train a recipe (same as scripts/finetune.py)")
    add_run_arguments(p)
    p.set_defaults(func=finetune_command)
    add_lr_find_parser(sub)
    add_merge_parser(sub)
    p = sub.add_parser("recipes", help="list the registered recipes, or show one's fields")
    p.add_argument("--show", metavar="NAME|FILE",
                   help="print the fields the recipe's task reads: value and meaning of each")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --show: the values after these overrides")
    p.set_defaults(func=recipes_command)
    p = sub.add_parser("show", help="what a result folder holds: task, training, metrics, files, commands")
    p.add_argument("run_dir", help="result folder (runs/ants) or Hub id")
    p.set_defaults(func=show_command)
    p = sub.add_parser("predict", help="classify images or texts with a result folder or Hub model")
    p.add_argument("--model", required=True,
                   help="result folder (runs/ants), export folder or its model.int8.onnx, or Hub id")
    p.add_argument("--top-k", type=POSITIVE, default=5, help="labels shown per input (default 5)")
    p.add_argument("inputs", nargs="+", help="image files (image model) or texts (text model)")
    p.set_defaults(func=predict_command)
    p = sub.add_parser("generate", help="continue a prompt with a causal LM, printed as it is made")
    p.add_argument("--model", required=True, help="result folder (runs/gpt2) or Hub id")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=50, help="tokens to add (default 50)")
    p.add_argument("--temperature", type=_number(float, 0.0), default=1.0, help="0: greedy decoding")
    p.add_argument("--top-k", type=POSITIVE, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=_number(float, 0.0, 1.0, low_open=True),
                   help="nucleus sampling: smallest set of tokens with this probability, in (0, 1]")
    p.add_argument("--repetition-penalty", type=_number(float, 0.0, low_open=True), default=1.0,
                   help="> 1 discourages repeating tokens (default 1: off)")
    p.add_argument("--seed", type=int, help="makes sampling repeatable")
    p.set_defaults(func=generate_command)
    p = sub.add_parser("qa", help="answer a question from a context with an extractive QA model")
    p.add_argument("--model", required=True, help="model folder (runs/cmrc2018, ./models/x) or Hub id")
    p.add_argument("--question", required=True, help="the question, in the context's language")
    p.add_argument("--context", help="the text that holds the answer")
    p.add_argument("--context-file", help="read the context from this UTF-8 text file")
    p.add_argument("--top-k", type=POSITIVE, default=1, help="number of answers, best first")
    p.add_argument("--handle-impossible", action="store_true",
                   help="allow an empty answer when the model says the context has none")
    _add_qa_arguments(p)
    p.set_defaults(func=qa_command)
    p = sub.add_parser("evaluate", help="score a classifier (accuracy, F1, confusion matrix), an extractive "
                                        "QA model (EM/F1) or a language model (perplexity) on data")
    p.add_argument("--model", required=True,
                   help="result folder, export folder or its model.int8.onnx, model folder or Hub id")
    p.add_argument("--data", required=True,
                   help="what data.path takes: an image folder, a data file, an archive, a Hub data set id; "
                        "SQuAD-style JSON for QA")
    p.add_argument("--split", help="split to score (default: validation/val/test, else the only one)")
    p.add_argument("--output-dir", help="where results and predictions go (default: <model>/eval-<data>, "
                        "eval-<data>-<split> with --split)")
    p.add_argument("--max-samples", type=POSITIVE,
                   help="score only N examples (QA: the first N questions; classifiers and language "
                        "models: a seeded random N, texts kept in order)")
    p.add_argument("--batch-size", type=POSITIVE,
                   help="inputs per forward pass (QA: windows, default 4 on CPU, 32 on GPU; classifiers: 32; "
                        "language models: blocks, 8)")
    p.add_argument("--block-size", type=POSITIVE,
                   help="language models: tokens per block (default: what the run trained with)")
    p.add_argument("--scorer", choices=["auto", "cmrc2018", "squad"], default="auto",
                   help="EM/F1 definition (auto: cmrc2018 for Chinese, else squad)")
    _add_qa_arguments(p)
    p.set_defaults(func=evaluate_command)
    p = sub.add_parser("download", help="fetch a Hub model or data set into a folder for offline use")
    p.add_argument("repo_id", help="e.g. uer/roberta-base-chinese-extractive-qa")
    p.add_argument("--to", help="target folder (default ./models/<name>)")
    p.add_argument("--repo-type", choices=["model", "dataset"], default="model",
                   help="what the repo holds (default model)")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="download only files matching GLOB (repeatable); default: what loading needs")
    p.set_defaults(func=download_command)
    p = sub.add_parser("push", help="upload a result folder with a model card to the Hub",
                       description="Upload a result folder to a Hub model repo: safetensors weights, "
                       "config, tokenizer or preprocessing files, recipe.yaml, all_results.json, the plots, "
                       "and a model card (README.md). The token comes from `hf auth login` or HF_TOKEN: "
                       "there is no --token option, so that it never lands in shell history, logs or cards.")
    p.add_argument("run_dir", help="result folder, e.g. runs/ants")
    p.add_argument("--repo-id", required=True,
                   help="target repo, e.g. alice/resnet18-ants-bees (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo (and a new --space) as private")
    p.add_argument("--revision", help="branch to push to (created from main if missing; default main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--commit-message", help="default: Upload <folder> with hfkit push")
    p.add_argument("--license", help="license id in the card (default: the recipe's hub.license, apache-2.0)")
    p.add_argument("--dry-run", metavar="DIR", nargs="?", const="",
                   help="write exactly what would be uploaded (with the card) into DIR (default "
                        "<run_dir>/push-preview; with --space, the Space into DIR/space); contact no server")
    p.add_argument("--space", metavar="OWNER/NAME",
                   help="then create or update this Gradio Space with the demo of the model's task "
                        "(hfkit inside it, its MODEL variable set to --repo-id)")
    p.set_defaults(func=push_command)
    from hfkit.demo import add_demo_parser  # light: gradio loads only when a demo starts
    from hfkit.serve import add_serve_parser  # light: fastapi loads only when a server starts

    add_serve_parser(sub)
    add_demo_parser(sub)
    add_export_parser(sub)
    add_completion_parser(sub, parser)
    _with_examples(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # `hfkit` alone: what it can do, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from hfkit.console import quiet_libraries

    quiet_libraries()
    _skip_evaluators()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, RuntimeError) as e:
        # user-facing problems (bad recipe, missing data, no weights): a message, not a traceback
        print(f"hfkit {args.command}: error: {e}", file=sys.stderr)
        _explain_launcher_traceback()
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (imports, data loading)
        print(f"hfkit {args.command}: interrupted", file=sys.stderr)
        return 130  # the shell's code for Ctrl-C


class _NoPipelinesForEvaluators(importlib.abc.MetaPathFinder):
    """Refuses ``transformers.pipelines`` to evaluate's Evaluator classes while they import."""

    def find_spec(self, name, path=None, target=None):
        evaluators = sys.modules.get("evaluate.evaluator")
        if name == "transformers.pipelines" and getattr(getattr(evaluators, "__spec__", None),
                                                       "_initializing", False):
            raise ImportError("transformers.pipelines is not needed by hfkit's metrics")
        return None  # any other import, and pipelines for anyone else, go on as usual


def _skip_evaluators() -> None:
    """``import evaluate`` imports transformers.pipelines for its Evaluator classes (about 1 s here,
    evaluate issue #674); hfkit's commands score with ``evaluate.Metric`` modules only. Refused it,
    evaluate takes transformers for absent in its evaluators alone. Commands only: a program that
    imports hfkit as a library keeps ``evaluate.evaluator`` as it is."""
    if not any(isinstance(f, _NoPipelinesForEvaluators) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPipelinesForEvaluators())


def _explain_launcher_traceback() -> None:
    """Under ``accelerate launch``, the launcher answers this process's exit code 2 with a traceback
    of its own, printed last, which reads as if the launcher had crashed: say so before it comes."""
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:  # devices.LAUNCHER_MARK, without importing torch
        return
    from hfkit.devices import launcher_reports_failures

    if launcher_reports_failures():
        print("hfkit: accelerate launch now adds a traceback of its own (CalledProcessError ... exit "
              "status 2); it only reports that this run stopped: the error is the line above. "
              "`accelerate launch -q ...` leaves it out.", file=sys.stderr)


def run(argv: list[str] | None = None) -> None:
    """``hfkit`` as a process (the console script, ``python -m hfkit.cli``, ``scripts/finetune.py``):
    :func:`main`, then exit with its code."""
    # importing torch, timm and transformers makes Python's garbage collector walk every object it
    # holds each time their number grows by a quarter: ~2 s of a run's start, finding next to
    # nothing. Young objects are collected 14x less often than Python's default (700) instead.
    gc.set_threshold(10_000, 10, 10)
    try:
        code = main(argv)
    finally:
        # the interpreter's last act is to collect the garbage of every module torch, timm and
        # transformers loaded: 3-4 s after the run's last line on a 2-core CPU, for memory the OS
        # frees anyway. Frozen objects are left alone; atexit handlers and flushes still run.
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
