"""Name -> attention-module registry.

Why a registry: the harness, the tests and third parties must all see the same list of mechanisms,
and `describe()` must read options from the constructors themselves so `attnbench list` can never
drift from the code. ``register`` is also where the mechanism contract is enforced: the harness
calls ``pattern``, ``flops``, ``linear_macs``, ``dense_form``, ``unavailable_reason``, ``deploy``,
``layer_options`` and ``attention_memory_bytes`` on every mechanism and never tests a name, so a
class that lacks one is refused here, at import, rather than failing mid-sweep. Third-party packages register through the ``attnbench.mechanisms`` entry-point
group (each entry point names a module to import, or a class decorated with ``@register``); they are
loaded lazily, the first time the registry is queried.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TypeVar

import torch.nn as nn

ENTRY_POINT_GROUP = "attnbench.mechanisms"

_REGISTRY: dict[str, type[nn.Module]] = {}
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}

T = TypeVar("T", bound=type)

# Arguments every mechanism takes that are not "options" of the mechanism.
_COMMON_ARGS = ("self", "dim", "num_heads", "device", "dtype")


# What the harness calls on a mechanism (see AttentionBase for each one's meaning).
CONTRACT_METHODS = ("pattern", "flops", "linear_macs", "dense_form", "unavailable_reason", "configured_unavailable_reason", "deploy",
                    "layer_options", "attention_memory_bytes")


def contract_problems(cls: Any) -> list[str]:
    """What keeps ``cls`` from being a mechanism: empty for AttentionBase subclasses and for
    ``nn.Module`` classes that implement the whole contract and declare ``backends``."""
    from .base import AttentionBase

    if isinstance(cls, type) and issubclass(cls, AttentionBase):
        return []
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return [f"{cls!r} is not an nn.Module class"]
    missing = [m for m in CONTRACT_METHODS if not callable(getattr(cls, m, None))]
    backends = getattr(cls, "backends", None)
    if not (isinstance(backends, tuple) and backends and all(isinstance(b, str) for b in backends)):
        missing.append("backends (a tuple of backend names)")
    return [f"missing {', '.join(missing)}"] if missing else []


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a mechanism buildable by ``name``.

    A duplicate name is an error (not a warning as in timm): two modules answering to one name would
    make every table ambiguous. A class that does not meet the contract is refused with what it lacks.
    """

    def wrap(cls: T) -> T:
        problems = contract_problems(cls)
        if problems:
            raise TypeError(
                f"cannot register {name!r}: {getattr(cls, '__qualname__', cls)} is not a mechanism ({'; '.join(problems)}); "
                "subclass mechanisms.AttentionBase, which provides the whole contract"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"mechanism name {name!r} is already registered by {_REGISTRY[name].__module__}."
                f"{_REGISTRY[name].__qualname__}; choose another name"
            )
        _REGISTRY[name] = cls
        cls.mechanism_name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def unregister(name: str) -> None:
    """Remove a mechanism (tests use this to clean up test-only mechanisms)."""
    _REGISTRY.pop(name, None)


def load_plugins(group: str, register_one: Callable[[str, Any], None], errors: dict[str, str]) -> None:
    """Import every entry point of ``group`` and hand ``(name, object)`` to ``register_one``. A plugin
    that fails to import or to register is recorded in ``errors`` (and named when asked for), never
    raised: a broken plugin must not break the built-ins. The metric registry uses it too."""
    for ep in metadata.entry_points(group=group):
        try:
            register_one(ep.name, ep.load())
        except Exception as exc:  # noqa: BLE001 - any plugin failure becomes a message
            errors[ep.name] = f"{type(exc).__name__}: {exc}"


def _register_plugin(name: str, obj: Any) -> None:
    if isinstance(obj, type) and obj not in _REGISTRY.values():  # a module registers on import instead
        register(name)(obj)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    load_plugins(ENTRY_POINT_GROUP, _register_plugin, _entry_point_errors)


def _ensure_builtins() -> None:
    # Importing the package registers the built-in mechanisms.
    import mechanisms  # noqa: F401

    _load_entry_points()


def available() -> list[str]:
    """Sorted names of every registered mechanism."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ``ValueError`` with the valid names otherwise."""
    _ensure_builtins()
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        broken = ""
        if name in _entry_point_errors:
            broken = f" (its plugin failed to load: {_entry_point_errors[name]})"
        raise ValueError(f"unknown mechanism {name!r}{broken}; choose one of {names}.{hint}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class OptionInfo:
    """One constructor option of a mechanism, as read from its signature and docstring."""

    name: str
    default: Any
    annotation: str
    doc: str


def _option_docs(cls: type) -> dict[str, str]:
    """Parse 'name: text' lines under 'Args:' in the class docstring (Google style)."""
    docs: dict[str, str] = {}
    text = inspect.getdoc(cls) or ""
    in_args = False
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Options:"):
            in_args = True
            continue
        if in_args:
            if not stripped:
                current = None
                continue
            if not line.startswith(" ") and stripped.endswith(":"):
                in_args = False
                continue
            head, sep, rest = stripped.partition(":")
            if sep and head.isidentifier() and line.startswith("    ") and not line.startswith("        "):
                current = head
                docs[current] = rest.strip()
            elif current:
                docs[current] += " " + stripped
    return docs


def options(name: str) -> dict[str, OptionInfo]:
    """Constructor options of a mechanism (everything but dim, num_heads, device, dtype)."""
    cls = get(name)
    docs = _option_docs(cls)
    out: dict[str, OptionInfo] = {}
    # A constructor that forwards **kwargs to its base also accepts the base's options.
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name in _COMMON_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in out:
                continue
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
            out[p.name] = OptionInfo(p.name, p.default, ann, docs.get(p.name, "") or _option_docs(klass).get(p.name, ""))
        if not any(p.kind == p.VAR_KEYWORD for p in params) or klass is nn.Module:
            break
    return out


def describe(name: str) -> dict[str, Any]:
    """Summary of a mechanism for humans and for `attnbench list`."""
    cls = get(name)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return {
        "name": name,
        "summary": doc,
        "backends": list(cls.backends),
        "options": {k: {"default": v.default, "type": v.annotation, "doc": v.doc} for k, v in options(name).items()},
    }


def build(name: str, dim: int, num_heads: int, **opts: Any) -> nn.Module:
    """Construct mechanism ``name``. Unknown options are rejected with the valid ones listed.

    timm silently swallows misspelled kwargs (``windw_size=8``); here they are an error.
    """
    cls = get(name)
    valid = options(name)
    unknown = [k for k in opts if k not in valid]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(valid), n=1)
            if close:
                hints.append(f"{k!r} -> {close[0]!r}?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ValueError(
            f"mechanism {name!r} has no option {', '.join(map(repr, unknown))}{hint}; valid options: {sorted(valid)}"
        )
    return cls(dim, num_heads, **opts)
