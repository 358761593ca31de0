"""Suite files: load, validate everything before anything runs, expand the grid into Cases.

Why validate up front: a sweep can run for an hour; a typo found at case 57 wastes it. Every key,
type, range, mechanism, option and metric option is checked here, and the first problem becomes a
one-line ``UserError`` naming the file, the key and the reason (with a close match when there is one).

Grid: every list-valued key among ``device, dtype, mode, form, batch_size, dim, num_heads, resolutions,
tasks`` is swept (cartesian product) for every entry of ``mechanisms``. Mechanism options are not
swept (a list there is a value, e.g. ``pale_size: [7, 5]``); write one entry per configuration.

``include:`` adds further grids to the same run, each a partial suite that inherits every key it does
not set. Why: one experiment often needs a second shape (Pathfinder trains at a coarser token grid,
with a larger backbone and its own same-cost mechanism options) while every row still lands in one
results table and one report. A block may set the grid keys, ``mechanisms`` and per-case metric
option blocks (merged key by key over the top level's); run-level settings (metrics, limits,
workers, timing, memory) stay at the top, so one run measures everything the same way.
"""
from __future__ import annotations

import difflib
import importlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import UserError
from .case import DTYPES, Case
from .metrics import METRIC_MODULES

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
MODE_CHOICES = ("forward", "train")
DEFAULT_METRICS = ["flops", "params", "memory", "time"]

DtypeName = Literal["float64", "float32", "bfloat16", "float16"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
ModeName = Literal["forward", "train"]
FormName = Literal["auto", "deploy", "train"]
PositiveInt = int  # checked by validators below; pydantic's strict ints reject bools for us


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Limits(BaseModel):
    """Per-case limits: predicted or real excess becomes an ``oom``/``timeout`` row, never a crash."""

    model_config = ConfigDict(extra="forbid")
    max_memory_gb: float = Field(16.0, gt=0, description="skip (oom) cases predicted above this; on CPU also a hard cap")
    timeout_s: float = Field(600.0, gt=0, description="kill a case's worker after this many seconds (timeout)")


class MechanismSpec(BaseModel):
    """One entry of ``mechanisms:``: a name or ``{name, label?, **options}``."""

    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SuiteModel(BaseModel):
    """The suite file, as typed data. Defaults here are the documented defaults of every key."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    device: Union[DeviceName, list[DeviceName]] = "auto"
    dtype: Union[DtypeName, list[DtypeName]] = "float32"
    mode: Union[ModeName, list[ModeName]] = "forward"
    # auto: the deploy form in forward mode, the training form in train mode (attnbench.case.default_form)
    form: Union[FormName, list[FormName]] = "auto"
    batch_size: Union[int, list[int]] = 1
    dim: Union[int, list[int]] = 64
    num_heads: Union[int, list[int]] = 2
    resolutions: Union[int, list[Union[int, list[int]]]] = Field(default_factory=lambda: [56])
    tasks: Union[str, None, list[Union[str, None]]] = Field(default_factory=lambda: [None])
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    limits: Limits = Field(default_factory=Limits)
    workers: int = 1
    cases_per_worker: int = 1
    seed: int = 0
    mechanisms: list[Union[str, MechanismSpec]]
    include: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("batch_size", "dim", "num_heads")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        for x in _as_list(v):
            if x < 1:
                raise ValueError(f"must be >= 1, got {x}")
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        return v

    @field_validator("workers", "cases_per_worker")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("device", "dtype", "mode", "form", "tasks")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
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

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"must list at least one metric, from {sorted(METRIC_MODULES)}")
        for m in v:
            if m not in METRIC_MODULES:
                close = difflib.get_close_matches(m, list(METRIC_MODULES), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown metric {m!r}{hint} (choose from {sorted(METRIC_MODULES)})")
        if len(set(v)) != len(v):
            raise ValueError("lists a metric twice")
        return v


@dataclass(frozen=True)
class MechanismEntry:
    """A validated mechanism configuration: registry name, label and (sorted, hashable) options."""

    name: str
    label: str
    options: tuple[tuple[str, Any], ...]


@dataclass
class Suite:
    """A loaded, validated suite: the typed model, its metric options, and where it came from.

    ``parts`` holds one Suite per ``include:`` block (its keys merged over the top level); the top
    level itself is the first grid. Run-level settings are always read from the top level.
    """

    model: SuiteModel
    entries: list[MechanismEntry]
    metric_options: dict[str, Any]  # metric name -> validated Options instance
    path: Path | None = None
    parts: list["Suite"] = field(default_factory=list)
    _grid_of: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)  # device -> {case key: options}

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def metrics(self) -> list[str]:
        return list(self.model.metrics)

    def options_for(self, metric: str) -> Any:
        return self.metric_options[metric]

    def metric_options_for(self, case: Case) -> dict[str, Any]:
        """The metric options of the grid (top level or ``include:`` block) that produced ``case``."""
        if case.device not in self._grid_of:  # grids never overlap (checked on load), so the map is exact
            self._grid_of[case.device] = {c.key(): part.metric_options for part in [self, *self.parts]
                                          for c in part._expand_own([case.device])}
        return self._grid_of[case.device].get(case.key(), self.metric_options)

    def as_dict(self) -> dict[str, Any]:
        """The suite as loaded, with every default filled in (what ``suite.yaml`` of a run holds)."""
        d = self.model.model_dump(mode="json", exclude={"mechanisms"})
        d["mechanisms"] = [{"name": e.name, "label": e.label, **_jsonable(dict(e.options))} for e in self.entries]
        for metric, opts in self.metric_options.items():
            key = getattr(importlib.import_module(METRIC_MODULES[metric]), "OPTIONS_KEY", None)
            if key and opts is not None:
                d[key] = opts.model_dump(mode="json")
        return d

    def expand(self, devices: list[str] | None = None) -> list[Case]:
        """The cartesian product of all swept keys, for every mechanism entry, as Cases.

        ``devices`` replaces the suite's device list (already resolved: ``auto`` becomes the best
        device here, duplicates removed); the runner passes the result of ``devices.resolve_devices``.
        """
        cases = self._expand_own(devices)
        for part in self.parts:
            cases.extend(part._expand_own(devices))
        return _dedupe(cases)

    def _expand_own(self, devices: list[str] | None = None) -> list[Case]:
        m = self.model
        devs = devices if devices is not None else _dedupe(_as_list(m.device))
        sizes = [tuple(r) if isinstance(r, list) else (r, r) for r in _as_list(m.resolutions)]
        cases: list[Case] = []
        grid = itertools.product(
            devs, _as_list(m.dtype), _as_list(m.mode), _as_list(m.form), _as_list(m.batch_size), _as_list(m.dim),
            _as_list(m.num_heads), _as_list(m.tasks), sizes,
        )
        for device, dtype, mode, form, batch, dim, heads, task, (h, w) in grid:
            for e in self.entries:
                cases.append(Case(
                    mechanism=e.name, label=e.label, options=e.options, height=h, width=w, batch_size=batch,
                    dim=dim, num_heads=heads, dtype=dtype, device=device, mode=mode, task=task, seed=m.seed,
                    form=None if form == "auto" else form,
                ))
        return _dedupe(cases)


# ----------------------------------------------------------------------------------- loading
def _dedupe(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=list))


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _metric_option_keys() -> dict[str, str]:
    """Suite key -> metric name, for every metric module that imports and has an options block."""
    keys: dict[str, str] = {}
    for metric, path in METRIC_MODULES.items():
        try:
            mod = importlib.import_module(path)
        except ImportError:
            continue
        key = getattr(mod, "OPTIONS_KEY", None)
        if key:
            keys[key] = metric
    return keys


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
    elif best["type"] == "missing":
        msg = "missing"
    return key, msg


def read_suite_file(path: Path | str) -> dict[str, Any]:
    """Parse a suite file into a mapping; every failure is a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such suite file (see suites/ for examples)")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass a suite .yaml file")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{path}: not a YAML suite (expected a .yaml or .yml file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a YAML suite (not UTF-8 text)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a suite must be a YAML mapping of keys (name:, mechanisms:, ...), "
                        f"got {type(data).__name__}")
    return data


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite file."""
    path = Path(path)
    return validate_suite(read_suite_file(path), source=str(path), path=path)


def validate_suite(data: dict[str, Any], source: str = "<suite>", path: Path | None = None) -> Suite:
    """Validate a suite mapping; the first problem is a UserError ``'<source>: key <k>: <reason>'``."""

    def fail(key: str, reason: str) -> UserError:
        return UserError(f"{source}: key '{key}': {reason}")

    data = dict(data)
    option_keys = _metric_option_keys()
    known = set(SuiteModel.model_fields) | set(option_keys)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(known))}"
            raise fail(str(key), f"unknown key{hint}")
    blocks = {k: data.pop(k) for k in list(data) if k in option_keys}
    for required in ("name", "mechanisms"):
        if required not in data:
            raise fail(required, "missing (every suite needs 'name' and 'mechanisms')")
    try:
        model = SuiteModel.model_validate(data)
    except ValidationError as exc:
        key, reason = _first_error(exc, {"limits": list(Limits.model_fields), "": list(SuiteModel.model_fields)})
        raise fail(key, reason) from None

    if "deploy" in _as_list(model.form) and "train" in _as_list(model.mode):
        raise fail("form", "'deploy' is the inference form and mode 'train' measures the training form; "
                           "use form: auto (deploy for forward, train for train) or a separate include block")
    metric_options = _validate_metric_options(model, blocks, option_keys, fail)
    entries = _validate_mechanisms(model, fail)
    _validate_exclusive(model, fail)
    suite = Suite(model=model, entries=entries, metric_options=metric_options, path=path)
    suite.parts = _validate_includes(suite, data, blocks, option_keys, source)
    return suite


GRID_KEYS = ("device", "dtype", "mode", "form", "batch_size", "dim", "num_heads", "resolutions", "tasks")
RUN_LEVEL_OPTION_KEYS = ("timing", "memory")  # one run measures every case the same way


def _validate_includes(top: Suite, data: dict[str, Any], blocks: dict[str, Any], option_keys: dict[str, str],
                       source: str) -> list[Suite]:
    """Each ``include:`` block as a Suite of its own: the top level's keys with the block's merged in.

    A block is validated exactly like a whole suite (so a bad option names ``include[i].<key>``), and
    no two grids may produce the same case: a case must have one set of metric options.
    """
    allowed = (*GRID_KEYS, "mechanisms", *(k for k in option_keys if k not in RUN_LEVEL_OPTION_KEYS))
    parts: list[Suite] = []
    seen = {c.key(): "the top level" for c in top.expand()}
    for i, block in enumerate(top.model.include):
        where = f"include[{i}]"
        if not block:
            raise UserError(f"{source}: key '{where}': an empty block adds nothing; set at least one of {', '.join(allowed)}")
        for key in block:
            if key not in allowed:
                run_level = key in SuiteModel.model_fields or key in RUN_LEVEL_OPTION_KEYS
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = (" is a run-level setting; set it once at the top level" if run_level
                        else " is not a suite key" + (f"; did you mean '{close[0]}'?" if close else ""))
                raise UserError(f"{source}: key '{where}.{key}': '{key}'{hint} "
                                f"(an include block may set: {', '.join(allowed)})")
        merged = {k: v for k, v in data.items() if k != "include"}
        merged.update(blocks)
        for key, value in block.items():
            if key in option_keys and isinstance(value, dict) and isinstance(blocks.get(key), dict):
                merged[key] = {**blocks[key], **value}
            else:
                merged[key] = value
        try:
            part = validate_suite(merged, source=source, path=top.path)
        except UserError as exc:
            raise UserError(str(exc).replace(f"{source}: key '", f"{source}: key '{where}.", 1)) from None
        for case in part.expand():
            if case.key() in seen:
                raise UserError(f"{source}: key '{where}': case {case.describe()} is already in {seen[case.key()]}; "
                                "a case can belong to one grid only (change the block's resolutions, tasks or dim)")
            seen[case.key()] = where
        parts.append(part)
    return parts


def _validate_metric_options(model: SuiteModel, blocks: dict[str, Any], option_keys: dict[str, str], fail) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in model.metrics:
        try:
            importlib.import_module(METRIC_MODULES[metric])
        except ImportError as exc:
            raise fail("metrics", f"metric {metric!r} is not available in this install ({exc})") from None
    for key, metric in option_keys.items():
        block = blocks.get(key, {})
        if block is None:
            block = {}
        if not isinstance(block, dict):
            raise fail(key, f"must be a mapping of {metric} options, got {type(block).__name__}")
        options_cls = importlib.import_module(METRIC_MODULES[metric]).Options
        try:
            opts = options_cls.model_validate(block)
        except ValidationError as exc:
            sub, reason = _first_error(exc, {"": list(options_cls.model_fields)})
            raise fail(f"{key}.{sub}", reason) from None
        if metric in model.metrics:
            out[metric] = opts
    for metric in model.metrics:  # metrics without an options block
        if metric not in out:
            options_cls = getattr(importlib.import_module(METRIC_MODULES[metric]), "Options", None)
            out[metric] = options_cls() if options_cls is not None else None
    return out


def default_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``swin`` for defaults, else ``swin(window_size=8, shift=4)`` with only the non-default options."""
    changed = [f"{k}={_fmt_value(v)}" for k, v in options.items() if k not in defaults or defaults[k] != v]
    return f"{name}({', '.join(changed)})" if changed else name


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return str(v)


def _validate_mechanisms(model: SuiteModel, fail) -> list[MechanismEntry]:
    import mechanisms

    entries: list[MechanismEntry] = []
    labels: dict[str, int] = {}
    for i, raw in enumerate(model.mechanisms):
        spec = MechanismSpec(name=raw) if isinstance(raw, str) else raw
        key = f"mechanisms[{i}]"
        try:
            valid = mechanisms.options(spec.name)
        except ValueError as exc:
            raise fail(f"{key}.name", str(exc)) from None
        opts = spec.options
        for opt in opts:
            if opt not in valid:
                close = difflib.get_close_matches(opt, list(valid), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise fail(f"{key}.{opt}", f"mechanism {spec.name!r} has no option {opt!r}{hint} "
                                           f"(valid: {', '.join(sorted(valid)) or 'none'})")
        backends = mechanisms.describe(spec.name)["backends"]
        if "backend" in opts and opts["backend"] not in backends:
            raise fail(f"{key}.backend", f"{opts['backend']!r} is not a backend of {spec.name!r}; choose from {backends}")
        # Build once per (dim, heads) and ask for the cost at every size: bad option values and sizes
        # a mechanism cannot take fail here, before anything runs.
        for dim, heads in itertools.product(_as_list(model.dim), _as_list(model.num_heads)):
            try:
                module = mechanisms.build(spec.name, dim, heads, **opts)
                for r in _as_list(model.resolutions):
                    h, w = (r if isinstance(r, list) else [r, r])
                    module.flops(h, w)
            except (ValueError, TypeError) as exc:
                raise fail(key, f"{spec.name} with dim={dim}, num_heads={heads}: {' '.join(str(exc).split())}") from None
        defaults = {k: v.default for k, v in valid.items()}
        label = spec.label or default_label(spec.name, opts, defaults)
        if label in labels:
            raise fail(f"{key}.label", f"label {label!r} is already used by mechanisms[{labels[label]}]; "
                                       "give each entry a distinct 'label'")
        labels[label] = i
        entries.append(MechanismEntry(spec.name, label, tuple(sorted((k, _hashable(v)) for k, v in opts.items()))))
    return entries


def _validate_exclusive(model: SuiteModel, fail) -> None:
    if model.workers == 1:
        return
    exclusive = [m for m in model.metrics if getattr(importlib.import_module(METRIC_MODULES[m]), "EXCLUSIVE", False)]
    if exclusive:
        raise fail("workers", f"must be 1 when measuring {', '.join(exclusive)} (they need the machine to themselves); "
                              "use workers > 1 only for suites without time/memory metrics")
