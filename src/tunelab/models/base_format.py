"""The built-in chat format for a base model with no chat template of its own: its family's (models/families.py).

    family_template(tokenizer) = family_of(<tokenizer folder>/config.json).template   e.g. gemma3 -> "gemma"
                                 None when the folder has no config.json or the architecture is not listed

The tokenizer is the key because that is what `data.template: auto` is resolved against
(data/templates.build_template); a tokenizer loaded from a model folder (an alias's converted cache,
a local checkpoint) names that folder in `name_or_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import TunelabError


def family_template(tokenizer) -> str | None:
    """The family's built-in template name for the model the tokenizer was loaded with, or None."""
    cfg_path = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "config.json"
    if not cfg_path.is_file():
        return None
    from tunelab.models.families import family_of

    try:
        return family_of(json.loads(cfg_path.read_text(encoding="utf-8"))).template
    except (TunelabError, ValueError):
        return None
