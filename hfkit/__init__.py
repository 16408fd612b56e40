"""hfkit: fine-tune timm and transformers models with Accelerate, from recipes."""

__version__ = "0.1.0"
