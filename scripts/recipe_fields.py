"""Regenerate the README's recipe field table from the field docstrings in ``hfkit/recipes.py``.

    python scripts/recipe_fields.py            # rewrite the table in README.md
    python scripts/recipe_fields.py --check    # exit 1 if README.md's table is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hfkit.recipes import DataArgs, EvalArgs, HubArgs, ModelArgs, Recipe, TrainArgs, field_docs
from hfkit.tasks import COMMON_FIELDS, TASKS

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| key | default | read by | description |\n|---|---|---|---|\n"
SECTIONS = {"model": ModelArgs, "data": DataArgs, "train": TrainArgs, "eval": EvalArgs, "hub": HubArgs}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _cell(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return '`""`' if value == "" else f"`{value}`"


def _readers(key: str) -> str:
    """The tasks that read ``key`` (setting it on a recipe of another task is an error)."""
    if key in COMMON_FIELDS:
        return "all"
    return ", ".join(name for name, task in TASKS.items() if key in task.fields)


def _row(key: str, value, doc: str) -> str:
    return f"| `{key}` | {_cell(value)} | {_readers(key)} | {' '.join(doc.split()).replace('``', '`')} |"


def table_rows() -> list[str]:
    top = field_docs(Recipe)
    rows = [_row(f.name, _default(f), top.get(f.name, "")) for f in dataclasses.fields(Recipe)
            if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        rows += [_row(f"{section}.{f.name}", _default(f), docs[f.name]) for f in dataclasses.fields(cls)]
    return rows


def updated_readme(text: str) -> str:
    start = text.index(HEADER) + len(HEADER)
    end = text.index("\n\n", start)
    return text[:start] + "\n".join(table_rows()) + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    new = updated_readme(text)
    if args.check:
        if new != text:
            print("README.md's recipe field table is out of date: run python scripts/recipe_fields.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
