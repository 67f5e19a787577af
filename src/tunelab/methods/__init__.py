"""Training methods: one object per method (lora, qlora, full, freeze, qat, bitnet).

    method_of(cfg_or_name) -> Method    the method's object (methods/registry.py)
    resolve(cfg) -> RunConfig           its `auto`s settled, the input unchanged

The contract every method keeps is `methods/base.py`'s docstring; docs/design.md, "Methods: one object
per method", says why it is built this way and which files adding a method touches.
"""

from tunelab.methods.base import Base, Merge, MemoryTerms, Method, Saved, Served
from tunelab.methods.registry import METHODS, method_names, method_of, resolve

__all__ = ["Base", "METHODS", "Merge", "MemoryTerms", "Method", "Saved", "Served", "method_names", "method_of",
           "resolve"]
