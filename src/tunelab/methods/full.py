"""full: every weight trains, as loaded (the `Method` defaults).

Saved as the whole model (model/), exported as is, served as its own base. Memory: wb (weights)
+ wb (grads) + adam + 4 (fp32 master, only when wb < 4) bytes per parameter (memory/estimator.py).
"""

from __future__ import annotations

from tunelab.methods.base import Method


class Full(Method):
    name = "full"
    label = "full fine-tune"
