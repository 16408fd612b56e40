"""What the libraries print during hfkit's commands: what a user needs to know, on one line.

transformers draws a "Loading weights" bar on every load and a "Writing model shards" bar on every
save (both take a blink for the models hfkit trains), and warns with a coloured table, raw ANSI
codes in a log file, when a checkpoint lacks the new task head, which is what fine-tuning expects.
``quiet_libraries()`` drops the two bars (transformers' tqdm hook; the Hub's download bars stay)
and turns the table into one line naming the new and the unused weights. accelerate warns at every
checkpoint of a model with tied weights (GPT-2's ``lm_head`` is its token embedding) that it
"removed shared tensor" and that this "should be OK": it is, the tie comes back when the checkpoint
loads into the model (exact resume of a causal LM is tested), so that line goes too.
"""

from __future__ import annotations

import logging
import re
import sys

QUIET_BARS = ("Loading weights", "Writing model shards")
ANSI = re.compile(r"\x1b?\[[0-9;]*m")
REPORT_ROW = re.compile(r"^(\S+)\s+\|\s+(MISSING|UNEXPECTED|MISMATCH)\b")


_quiet = False  # set by the command line; a notebook using hfkit's functions keeps the libraries' output


def quiet_libraries() -> None:
    """Quiet the libraries in this process: now if transformers is loaded, else at the first model
    load after it is (``hfkit.offline.loading_weights`` calls ``apply_if_quiet``), so that commands
    which load no transformers model do not pay for importing it."""
    global _quiet
    _quiet = True
    shared = logging.getLogger("accelerate.utils.other")  # accelerate's checkpoint code (save_state)
    if not any(isinstance(f, _TiedWeightsNotice) for f in shared.filters):
        shared.addFilter(_TiedWeightsNotice())
    if "transformers" in sys.modules:
        apply_if_quiet()


def apply_if_quiet() -> None:
    # an image model loads without transformers: nothing of it to quiet, and no import to pay for
    # (a text model's loader has imported it by then, for its Auto class)
    if not _quiet or "transformers" not in sys.modules:
        return
    from transformers.utils import logging as hf_logging

    if hasattr(hf_logging, "set_tqdm_hook"):  # transformers 5
        hf_logging.set_tqdm_hook(_hide_quick_bars)
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _OneLineLoadReport) for f in logger.filters):
        logger.addFilter(_OneLineLoadReport())


def _hide_quick_bars(factory, args, kwargs):
    if kwargs.get("desc") in QUIET_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


class _TiedWeightsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()  # after accelerate's "[RANK 0] "


class _OneLineLoadReport(logging.Filter):
    """transformers' LOAD REPORT table -> "new weights (...): a, b; unused from the checkpoint: c"."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "LOAD REPORT" not in text:
            return True
        rows: dict[str, list[str]] = {}
        for line in ANSI.sub("", text).splitlines():
            if found := REPORT_ROW.match(line.strip()):
                rows.setdefault(found[2], []).append(found[1])
        if not rows:  # something else (a conversion error): the table as it is
            return True
        model = ANSI.sub("", text).split(" LOAD REPORT", 1)[0].strip()
        parts = []
        if rows.get("MISSING") or rows.get("MISMATCH"):
            new = sorted(rows.get("MISSING", []) + rows.get("MISMATCH", []))  # the table's order is a set's
            parts.append(f"new weights, trained from scratch: {', '.join(new)}")
        if rows.get("UNEXPECTED"):
            parts.append(f"not used from the checkpoint: {', '.join(sorted(rows['UNEXPECTED']))}")
        record.msg, record.args = f"{model}: {'; '.join(parts)}", ()
        return True
