"""Metrics as local ``evaluate`` modules, so they load without the Hub (offline too).

Each metric is a folder ``<name>/<name>.py`` beside this file holding one ``evaluate.Metric``
subclass. ``evaluate.load`` is given the script's path, copies the script into its modules cache
(``HF_MODULES_CACHE``) and imports it from there; nothing is downloaded, so ``HF_HUB_OFFLINE=1``
and ``HF_EVALUATE_OFFLINE=1`` make no difference.

>>> accuracy = load_metric("accuracy")
>>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
{'accuracy': 0.75}
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import evaluate

__all__ = ["available_metrics", "load_metric", "metric_script"]

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metrics shipped with hfkit, sorted."""
    return sorted(p.name for p in METRICS_DIR.iterdir()
                  if p.is_dir() and (p / f"{p.name}.py").is_file())


def metric_script(name: str) -> Path:
    """Path of the script of metric ``name``; ValueError listing the known names otherwise."""
    names = available_metrics()
    if name not in names:
        hint = difflib.get_close_matches(name, names, n=1)
        did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ValueError(f"unknown metric '{name}'.{did_you_mean} Available metrics: {', '.join(names)}")
    return METRICS_DIR / name / f"{name}.py"


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load one of hfkit's metrics (see :func:`available_metrics`) as an ``evaluate`` module.

    ``kwargs`` go to ``evaluate.load`` (``keep_in_memory``, ``experiment_id``, ``process_id``,
    ``num_process``, ...).
    """
    return evaluate.load(str(metric_script(name)), **kwargs)
