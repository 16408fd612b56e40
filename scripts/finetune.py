"""Fine-tune a recipe: ``accelerate launch scripts/finetune.py --recipe hymenoptera``."""

import sys

from hfkit.cli import run

if __name__ == "__main__":
    run(["finetune", *sys.argv[1:]])
