"""The suite file as typed data: the pydantic models of its keys and the phrasing of their errors.

Why a module of its own: what a suite may say (keys, types, ranges, defaults) is read by the loader,
the docs tests and ``attnbench list``; how a grid is validated against the registries and expanded
into cases is ``suite.py``'s job. The metric option blocks (``timing:``, ``accuracy:``...) are fields
added per metric registry by :func:`_models`, so pydantic alone rejects unknown keys.
"""
from __future__ import annotations

import difflib
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from . import metrics as metric_registry
from .suite_models import ModelSpec

DEFAULT_METRICS = ["flops", "params", "memory", "time"]
# Seeds are offset (seed * 1000 + i, seed + 1) before torch.manual_seed, which takes < 2**64.
MAX_SEED = 2**32 - 1

DtypeName = Literal["float64", "float32", "bfloat16", "float16"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
ModeName = Literal["forward", "train"]
FormName = Literal["auto", "deploy", "train"]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Limits(BaseModel):
    """Per-case limits: predicted or real excess becomes an ``oom``/``timeout`` row, never a crash."""

    model_config = ConfigDict(extra="forbid")
    max_memory_gb: float = Field(16.0, gt=0, allow_inf_nan=False,
                                 description="skip (oom) cases predicted above this; on CPU also a hard cap")
    timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False,
                             description="kill a case's worker after this many seconds (timeout)")


class ExecutorBlock(BaseModel):
    """``executor:``: where the cases run (``attnbench/cluster``); the same keys on the command line win."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "submitit"] = Field("local", description="local worker processes, or submitit jobs")
    cluster: Literal["slurm", "local", "debug"] = Field("slurm", description="submitit cluster")
    shards: int = Field(1, ge=1, description="jobs of the job array")
    partition: Optional[str] = Field(None, description="Slurm partition")
    gpus_per_job: Optional[int] = Field(None, ge=0, description="GPUs per job; default 1 for cuda cases, else 0")
    max_parallel: Optional[int] = Field(None, ge=1, description="jobs of the array running at once")
    job_timeout_min: float = Field(120.0, gt=0, description="wall-clock limit of one job, minutes")


class MechanismSpec(BaseModel):
    """One entry of ``mechanisms:``: a name or ``{name, label?, **options}``."""

    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GridKeys(BaseModel):
    """The keys a grid sweeps (and ``mechanisms``): set at the top level, and in ``include:`` blocks."""

    model_config = ConfigDict(extra="forbid", strict=True)
    device: Union[DeviceName, list[DeviceName]] = "auto"
    dtype: Union[DtypeName, list[DtypeName]] = "float32"
    mode: Union[ModeName, list[ModeName]] = "forward"
    # auto: the deploy form in forward mode, the training form in train mode (attnbench.results_schema.default_form)
    form: Union[FormName, list[FormName]] = "auto"
    batch_size: Union[int, list[int]] = 1
    dim: Union[int, list[int]] = 64
    num_heads: Union[int, list[int]] = 2
    resolutions: Union[int, list[Union[int, list[int]]]] = Field(default_factory=lambda: [56])
    tasks: Union[str, None, list[Union[str, None]]] = Field(default_factory=lambda: [None])
    mechanisms: list[Union[str, MechanismSpec]] = Field(default_factory=list)
    models: list[Union[str, ModelSpec]] = Field(default_factory=list)

    @field_validator("batch_size", "dim", "num_heads")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        for x in _as_list(v):
            if x < 1:
                raise ValueError(f"must be >= 1, got {x}")
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        return v

    @field_validator("device", "dtype", "mode", "form", "tasks")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: Any) -> Any:
        """Task names must exist here and now, not when the first accuracy case starts training."""
        names = [t for t in _as_list(v) if t is not None]
        if names:
            from .accuracy import tasks as task_registry

            known = task_registry.available()
            for t in names:
                if t not in known:
                    close = difflib.get_close_matches(t, known, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"unknown task {t!r}{hint} (choose from {sorted(known)}; see `attnbench tasks list`)")
        return v

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, v: Any) -> Any:
        items = _as_list(v)
        if not items:
            raise ValueError("must list at least one resolution")
        for r in items:
            pair = r if isinstance(r, list) else [r, r]
            if len(pair) != 2:
                raise ValueError(f"{r} is not a size: use an int (square) or [H, W]")
            if any(x < 1 for x in pair):
                raise ValueError(f"{r} is not a valid size: H and W must be >= 1")
        return v

    @field_validator("mechanisms")
    @classmethod
    def _mechanisms(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("must list at least one mechanism (see `attnbench list`)")
        return v


class IncludeBlock(GridKeys):
    """One ``include:`` entry: grid keys, ``mechanisms`` and the per-case metric option blocks, each
    optional (unset keys are inherited from the top level; ``model_fields_set`` says which are set).
    The metric option fields are added per registry by :func:`include_block_model`."""

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise ValueError("an empty block adds nothing; set at least one of " + ", ".join(cls.model_fields))
        return data


class SuiteModel(GridKeys):
    """The suite file, as typed data. Defaults here are the documented defaults of every key; the
    metric option blocks (``timing:``, ``accuracy:``...) are fields added per registry by
    :func:`suite_model`, so pydantic alone rejects unknown keys."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    limits: Limits = Field(default_factory=Limits)
    workers: int = 1
    cases_per_worker: int = 1
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds torch and the task generators (0 <= seed < 2**32)")
    mechanisms: list[Union[str, MechanismSpec]] = Field(default_factory=list)
    include: list[Any] = Field(default_factory=list)
    executor: Optional[ExecutorBlock] = None

    @field_validator("workers", "cases_per_worker")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        known = metric_registry.names()
        if not v:
            raise ValueError(f"must list at least one metric, from {sorted(known)}")
        for m in v:
            if m not in known:
                close = difflib.get_close_matches(m, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown metric {m!r}{hint} (choose from {sorted(known)})")
        if len(set(v)) != len(v):
            raise ValueError("lists a metric twice")
        return v


OptionBlock = Union[dict[str, Any], None]
_MODELS: dict[tuple[str, ...], tuple[type[SuiteModel], type[IncludeBlock]]] = {}


def _models() -> tuple[type[SuiteModel], type[IncludeBlock]]:
    """SuiteModel and IncludeBlock with one optional mapping field per metric option block (the
    registry may grow at run time: a plugin or test metric brings its own block)."""
    metrics = [m for m in metric_registry.all_metrics() if m.options_key]
    key = tuple(f"{m.options_key}:{m.run_level}" for m in metrics)
    if key not in _MODELS:
        top = {m.options_key: (OptionBlock, None) for m in metrics}
        block = {m.options_key: (OptionBlock, None) for m in metrics if not m.run_level}
        _MODELS[key] = (create_model("SuiteModel", __base__=SuiteModel, **top),
                        create_model("IncludeBlock", __base__=IncludeBlock, **block))
    return _MODELS[key]


def _loc(loc: tuple[Any, ...]) -> str:
    """Pydantic error location as a readable key path (``mechanisms[2].name``, ``limits.timeout_s``),
    without pydantic's union-branch tags (``int``, ``list[int]``, ``literal[...]``, ``MechanismSpec``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "MechanismSpec" or any(c in str(part) for c in "[]()") or str(part) in ("str", "int", "float", "none", "bool"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


def _first_error(exc: ValidationError, fields: dict[str, Any] | None = None) -> tuple[str, str]:
    """(key, reason) of the most useful pydantic error, phrased for a user.

    Union-typed keys (``dim: 64`` or ``dim: [64, 128]``) make pydantic report one error per union
    branch; ours and range errors are preferred, then the most specific (deepest) literal error.
    ``fields`` maps a (sub)model name to its field names, for "did you mean" hints on unknown keys.
    """
    errors = exc.errors(include_url=False)
    preferred = ("value_error", "greater_than", "missing", "extra_forbidden", "string_pattern_mismatch")
    best = next((e for e in errors if e["type"] in preferred), None)
    if best is None:
        literals = [e for e in errors if e["type"] == "literal_error"]
        best = max(literals, key=lambda e: len(e["loc"])) if literals else errors[0]
    key = _loc(tuple(best["loc"]))
    msg = best["msg"].removeprefix("Value error, ")
    if best["type"] == "literal_error":
        msg = f"{best['input']!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    elif best["type"].endswith("_type") or best["type"] == "int_from_float":
        msg = f"{msg[0].lower()}{msg[1:]}, got {best['input']!r} ({type(best['input']).__name__})"
    elif best["type"] == "string_pattern_mismatch":
        msg = f"{best['input']!r} must be a plain name (letters, digits, '_', '-', '.'); it names the results folder"
    elif best["type"] == "extra_forbidden":
        names = (fields or {}).get(str(best["loc"][0]) if len(best["loc"]) > 1 else "", [])
        close = difflib.get_close_matches(str(best["loc"][-1]), list(names), n=1)
        msg = "unknown key" + (f"; did you mean '{close[0]}'?" if close else (f"; valid keys: {', '.join(names)}" if names else ""))
    elif best["type"] == "greater_than":
        msg = f"must be > {best['ctx']['gt']}, got {best['input']!r}"
    elif best["type"] in ("less_than_equal", "greater_than_equal"):
        bound = best["ctx"].get("le", best["ctx"].get("ge"))
        msg = f"must be {'<=' if best['type'] == 'less_than_equal' else '>='} {bound}, got {best['input']!r}"
    elif best["type"] == "finite_number":
        msg = f"must be a finite number, got {best['input']!r}"
    elif best["type"] == "missing":
        msg = "missing"
    return key, msg
