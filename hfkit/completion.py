"""``hfkit completion bash|zsh|tcsh``: a shell completion script for every hfkit command and option.

shtab writes the script from hfkit's own argparse parser, so it lists exactly the commands and
options ``hfkit --help`` does, and Tab costs no Python start-up (argcomplete would import hfkit on
every key press). Which arguments complete as folders, files or recipe names is decided here, by
the argument's name, so that the commands' modules need not know about shells.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")
DIRECTORY_ARGUMENTS = {"run_dir", "model", "output_dir", "out", "to", "examples", "resume", "dry_run"}
FILE_ARGUMENTS = {"inputs", "context_file", "data", "eval_data", "apply"}
RECIPE_ARGUMENTS = {"recipe", "show"}  # --recipe NAME|FILE, hfkit recipes --show NAME|FILE
# shtab lets bash treat the words as paths (a "/" after a folder, no space) only for functions whose
# names say files or folders (_file, _dir, ...)
RECIPE_FUNCTION = "_hfkit_recipe_files"


def _recipe_preamble() -> dict[str, str]:
    """Shell functions completing ``--recipe``: the registered names (known when the script is
    written), then YAML files and the folders that may hold them."""
    from hfkit.recipes import list_recipes

    names = " ".join(list_recipes())
    return {
        "bash": f'{RECIPE_FUNCTION}() {{\n  compgen -W "{names}" -- "$1"\n'
                '  compgen -f -X "!*.y*ml" -- "$1"\n  compgen -d -- "$1"\n}\n',
        "zsh": f"{RECIPE_FUNCTION}() {{\n  _alternative 'recipes:recipe:({names})' "
               "'files:YAML file:_files -g \"*.y(a|)ml\"'\n}\n",
    }


def _mark_arguments(parser: argparse.ArgumentParser) -> None:
    """Set shtab's ``complete`` on each argument of ``parser`` and its subcommands, by its name."""
    import shtab

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _mark_arguments(sub)
        elif action.dest in RECIPE_ARGUMENTS:
            action.complete = {"bash": RECIPE_FUNCTION, "zsh": RECIPE_FUNCTION, "tcsh": "f"}
        elif action.dest in DIRECTORY_ARGUMENTS:
            action.complete = shtab.DIRECTORY
        elif action.dest in FILE_ARGUMENTS:
            action.complete = shtab.FILE


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` (hfkit's) for ``shell``."""
    import shtab

    _mark_arguments(parser)
    return shtab.complete(parser, shell=shell, preamble=_recipe_preamble())


def add_completion_parser(subparsers, root: argparse.ArgumentParser) -> None:
    """Add ``hfkit completion SHELL``; ``root`` is the parser whose commands it completes."""
    p = subparsers.add_parser(
        "completion", help="print a shell completion script (bash, zsh or tcsh)",
        description="Print a script that completes hfkit's commands, options, recipe names and paths "
                    "on Tab. bash: save it as ~/.local/share/bash-completion/completions/hfkit (make the "
                    "folder first; the next shell reads it), or put eval \"$(hfkit completion bash)\" in "
                    "~/.bashrc; zsh: save it as _hfkit in a folder of $fpath (e.g. ~/.zfunc, with "
                    "fpath+=~/.zfunc before compinit in ~/.zshrc); tcsh: save it to a file and source that "
                    "file from ~/.tcshrc. Write it again after upgrading hfkit.")
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")

    def completion_command(args: argparse.Namespace) -> int:
        print(completion_script(root, args.shell))
        return 0
    p.set_defaults(func=completion_command)
