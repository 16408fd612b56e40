"""Fine-tune a recipe: ``accelerate launch scripts/finetune.py --recipe hymenoptera``."""

import sys

from hfkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
