"""hfkit sentiment (Gradio). Run `MODEL=runs/imdb python spaces/sentiment/app.py`,
then open http://127.0.0.1:7860.

MODEL is a text classifier (`*ForSequenceClassification`): a folder or a Hub id.
The page is built by hfkit.demo, which calls hfkit's inference functions.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    try:
        from hfkit.demo import run_app  # installed, or the hfkit/ folder next to this file (a Space)
    except ImportError:  # a repository checkout that is not installed: use the hfkit/ beside spaces/
        sys.path.insert(0, str(HERE.parents[1]))
        from hfkit.demo import run_app
    return run_app("sentiment")


if __name__ == "__main__":
    sys.exit(main())
