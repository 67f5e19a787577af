"""Every training method, one line each: `method_of(cfg_or_name)` is how the rest of tunelab gets one.

Adding a method: a new module in methods/ with its `Method` subclass, plus one line in `METHODS` (and its
name in config.py's `MethodConfig.name` Literal, which is what a config may say).
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.methods.base import Method
from tunelab.methods.bitnet import BitNet
from tunelab.methods.freeze import Freeze
from tunelab.methods.full import Full
from tunelab.methods.lora import Lora
from tunelab.methods.qat import Qat
from tunelab.methods.qlora import QLora

METHODS: dict[str, Method] = {m.name: m for m in (
    Lora(),
    QLora(),
    Full(),
    Freeze(),
    Qat(),
    BitNet(),
)}


def method_names() -> tuple[str, ...]:
    """The registered method names, in registry order."""
    return tuple(METHODS)


def method_of(what) -> Method:
    """The method of a name, a `RunConfig` / `MethodConfig`, a config dict (config.yaml read back) or its
    method section; a `Method` is returned as is. TunelabError for a name no method has."""
    if isinstance(what, Method):
        return what
    if isinstance(what, dict):
        what = what.get("method", what)
        name = what.get("name", "lora") if isinstance(what, dict) else what
    else:
        name = getattr(getattr(what, "method", what), "name", what)
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise TunelabError(f"unknown method '{name}'", where="method.name",
                           hint=f"one of: {', '.join(METHODS)}") from None


def resolve(cfg):
    """`cfg` with its method's `auto`s settled (`Method.resolve`); `cfg` itself is left unchanged."""
    return method_of(cfg).resolve(cfg)
