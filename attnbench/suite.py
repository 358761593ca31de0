"""Suite files: load, validate everything before anything runs, expand the grid into Cases.

Why validate up front: a sweep can run for an hour; a typo found at case 57 wastes it. Every key,
type, range, mechanism, option and metric option is checked here, and the first problem becomes a
one-line ``UserError`` naming the file, the key and the reason (with a close match when there is one).

Grid: every list-valued key among ``device, dtype, mode, form, batch_size, dim, num_heads, resolutions,
tasks`` is swept (cartesian product) for every entry of ``mechanisms``. Mechanism options are not
swept (a list there is a value, e.g. ``pale_size: [7, 5]``); write one entry per configuration.

``include:`` adds further grids to the same run, each a partial suite that inherits every key it does
not set (its own pydantic model, ``IncludeBlock``, so its errors are pydantic's, located at
``include[i].<key>``). Why: one experiment often needs a second shape (Pathfinder trains at a coarser token grid,
with a larger backbone and its own same-cost mechanism options) while every row still lands in one
results table and one report. A block may set the grid keys, ``mechanisms`` and per-case metric
option blocks (merged key by key over the top level's); run-level settings (metrics, limits,
workers, timing, memory) stay at the top, so one run measures everything the same way.

``models:`` names whole backbones (``mechanisms.backbones``) as ``mechanisms:`` names layers; their
resolutions are in pixels and ``dim``, ``num_heads`` and ``tasks`` do not apply (``suite_models``).
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import UserError
from . import metrics as metric_registry
from .case import Case, freeze_options
from .suite_models import ModelEntry, model_cases, validate_models
from .suite_schema import GridKeys, IncludeBlock, Limits, MechanismSpec, SuiteModel, _as_list, _first_error, _models


@dataclass(frozen=True)
class MechanismEntry:
    """A validated mechanism configuration: registry name, label and (sorted, hashable) options."""

    name: str
    label: str
    options: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Grid:
    """One grid of a suite: its keys (the top level, or an ``include:`` block merged over it), its
    mechanism entries, and the metric options every case it produces is measured with."""

    keys: GridKeys
    entries: tuple[MechanismEntry, ...]
    metric_options: dict[str, Any]  # metric name -> validated Options instance (None without options)
    where: str = "the top level"
    block: IncludeBlock | None = None  # the include block as written (None for the top level)
    models: tuple[ModelEntry, ...] = ()

    def cases(self, devices: list[str] | None, seed: int) -> list[Case]:
        m = self.keys
        devs = devices if devices is not None else _dedupe(_as_list(m.device))
        sizes = [tuple(r) if isinstance(r, list) else (r, r) for r in _as_list(m.resolutions)]
        grid = itertools.product(
            devs, _as_list(m.dtype), _as_list(m.mode), _as_list(m.form), _as_list(m.batch_size), _as_list(m.dim),
            _as_list(m.num_heads), _as_list(m.tasks), sizes,
        )
        return _dedupe([
            Case(mechanism=e.name, label=e.label, options=e.options, height=h, width=w, batch_size=batch, dim=dim,
                 num_heads=heads, dtype=dtype, device=device, mode=mode, task=task, seed=seed,
                 form=None if form == "auto" else form, metric_options=self.metric_options)
            for device, dtype, mode, form, batch, dim, heads, task, (h, w) in grid for e in self.entries
        ] + model_cases(self.models, m, devs, seed, self.metric_options))


@dataclass
class Suite:
    """A loaded, validated suite: the typed model and its grids (the top level first, then one per
    ``include:`` block). Run-level settings are the top level's; each case carries the metric
    options of the grid it came from (``Case.metric_options``), so nothing is re-derived later."""

    model: SuiteModel
    grids: list[Grid]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def metrics(self) -> list[str]:
        return list(self.model.metrics)

    @property
    def entries(self) -> tuple[MechanismEntry, ...]:
        return self.grids[0].entries

    @property
    def metric_options(self) -> dict[str, Any]:
        """The top level's metric options (run-level blocks such as ``timing:`` are the same in every grid)."""
        return self.grids[0].metric_options

    def options_for(self, metric: str) -> Any:
        return self.metric_options[metric]

    def metric_options_for(self, case: Case) -> dict[str, Any]:
        """The metric options of the grid (top level or ``include:`` block) that produced ``case``."""
        return case.metric_options if case.metric_options is not None else self.metric_options

    @property
    def threads(self) -> int:
        """Intra-op threads of the run: what a metric fixes (``timing.threads``), else 1."""
        fixed = [metric_registry.get(m).threads(opts) for m, opts in self.metric_options.items()]
        return next((int(t) for t in fixed if t), 1)

    def as_dict(self) -> dict[str, Any]:
        """The suite as loaded, with every default filled in (what ``suite.yaml`` of a run holds)."""
        option_keys = {m.options_key for m in metric_registry.all_metrics() if m.options_key}
        d = self.model.model_dump(mode="json", exclude={"mechanisms", "include", *option_keys})
        d["mechanisms"] = [{"name": e.name, "label": e.label, **_jsonable(dict(e.options))} for e in self.entries]
        for metric, opts in self.metric_options.items():
            key = metric_registry.get(metric).options_key
            if key and opts is not None:
                d[key] = opts.model_dump(mode="json")
        if d.get("executor") is None:  # runs without an executor block keep their suite.yaml unchanged
            d.pop("executor", None)
        d["include"] = [g.block.model_dump(mode="json", exclude_unset=True) for g in self.grids[1:] if g.block is not None]
        return d

    def expand(self, devices: list[str] | None = None) -> list[Case]:
        """The cartesian product of all swept keys, for every mechanism entry of every grid, as Cases.

        ``devices`` replaces the suite's device list (already resolved: ``auto`` becomes the best
        device here, duplicates removed); the runner passes the result of ``devices.resolve_devices``.
        """
        return _dedupe([c for g in self.grids for c in g.cases(devices, self.model.seed)])


# ----------------------------------------------------------------------------------- loading
def _dedupe(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=list))


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key set twice in one mapping (PyYAML silently keeps the last one,
    so ``dim: 64`` ... ``dim: 128`` would run 128 without a word). Merge keys (``<<``) still work."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first set at line {first.line + 1}); keep one",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


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
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
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

    model_cls, block_cls = _models()
    for required in ("name", "mechanisms"):
        if required not in data and not (required == "mechanisms" and "models" in data):
            raise fail(required, "missing (every suite needs 'name' and 'mechanisms' or 'models')")
    try:
        model = model_cls.model_validate(data)
    except ValidationError as exc:
        key, reason = _first_error(exc, {"limits": list(Limits.model_fields), "": list(model_cls.model_fields)})
        raise fail(key, reason) from None
    _check_form(model, fail)
    raw_blocks = {m.options_key: getattr(model, m.options_key) for m in metric_registry.all_metrics() if m.options_key}
    entries = _validate_mechanisms(model, fail)
    top = Grid(keys=model, entries=entries,
               metric_options=_validate_metric_options(model.metrics, raw_blocks, fail),
               models=validate_models(model, model.metrics, {e.label for e in entries}, fail))
    _validate_exclusive(model, fail)
    grids = [top]
    seen = {c.key(): top.where for c in top.cases(None, model.seed)}
    for i, raw in enumerate(model.include):
        grid = _validate_include(i, raw, top, raw_blocks, block_cls, source)
        for case in grid.cases(None, model.seed):
            if case.key() in seen:
                raise fail(grid.where, f"case {case.describe()} is already in {seen[case.key()]}; a case can belong "
                                       "to one grid only (change the block's resolutions, tasks or dim)")
            seen[case.key()] = grid.where
        grids.append(grid)
    return Suite(model=model, grids=grids, path=path)


def _validate_include(i: int, raw: Any, top: Grid, raw_blocks: dict[str, Any], block_cls: type[IncludeBlock],
                      source: str) -> Grid:
    """``include[i]`` as a Grid: the block's keys over the top level's, its option blocks merged key by
    key over the top level's. Errors are located at ``include[i].<key>``."""
    where = f"include[{i}]"

    def fail(key: str, reason: str) -> UserError:
        return UserError(f"{source}: key '{where}{'.' + key if key else ''}': {reason}")

    allowed = list(block_cls.model_fields)
    try:
        block = block_cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][-1]) if err["loc"] else ""
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1 and (
                key in SuiteModel.model_fields or key in {m.options_key for m in metric_registry.all_metrics()}):
            raise fail(key, f"'{key}' is a run-level setting; set it once at the top level "
                            f"(an include block may set: {', '.join(allowed)})") from None
        key, reason = _first_error(exc, {"": allowed})
        raise fail("" if key == "<top>" else key, reason) from None
    grid_keys = {k: getattr(block, k) for k in block.model_fields_set if k in GridKeys.model_fields}
    keys = top.keys.model_copy(update=grid_keys)
    _check_form(keys, fail)
    blocks = dict(raw_blocks)
    for key in block.model_fields_set - set(GridKeys.model_fields):
        blocks[key] = {**(raw_blocks.get(key) or {}), **(getattr(block, key) or {})}
    metric_options = _validate_metric_options(top.keys.metrics, blocks, fail)
    entries = _validate_mechanisms(keys, fail)  # inherited entries too: they must build at this grid's sizes
    models = validate_models(keys, top.keys.metrics, {e.label for e in entries}, fail)
    return Grid(keys=keys, entries=entries, metric_options=metric_options, where=where, block=block, models=models)


def _check_form(keys: GridKeys, fail) -> None:
    """The deploy form is what inference serves; a training step always runs the training form."""
    if "deploy" in _as_list(keys.form) and "train" in _as_list(keys.mode):
        raise fail("form", "'deploy' is the inference form and mode 'train' measures the training form; "
                           "use form: auto (deploy for forward, train for train) or a separate include block")


def _validate_metric_options(metrics: list[str], blocks: dict[str, Any], fail) -> dict[str, Any]:
    """Validated options of every metric the suite lists ({name: Options or None}). Every option
    block present is validated, also one of a metric the suite does not list (a typo there is caught)."""
    out: dict[str, Any] = {}
    for name in metrics:
        try:
            metric_registry.get(name)
        except ImportError as exc:
            raise fail("metrics", f"metric {name!r} is not available in this install ({exc})") from None
    for metric in metric_registry.all_metrics():
        if not metric.options_key or metric.options is None:
            continue
        try:
            opts = metric.make_options(blocks.get(metric.options_key))
        except ValidationError as exc:
            sub, reason = _first_error(exc, {"": list(metric.options.model_fields)})
            raise fail(f"{metric.options_key}.{sub}", reason) from None
        for field_name, value in (opts.model_dump() if opts is not None else {}).items():
            if isinstance(value, float) and not math.isfinite(value):  # .inf passes gt=0 and then never ends
                raise fail(f"{metric.options_key}.{field_name}", f"must be a finite number, got {value!r}")
        if metric.name in metrics:
            out[metric.name] = opts
    for name in metrics:  # metrics without an options block
        out.setdefault(name, metric_registry.get(name).make_options())
    return {name: out[name] for name in metrics}


def default_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``swin`` for defaults, else ``swin(window_size=8, shift=4)`` with only the non-default options."""
    changed = [f"{k}={_fmt_value(v)}" for k, v in options.items() if k not in defaults or defaults[k] != v]
    return f"{name}({', '.join(changed)})" if changed else name


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return str(v)


def _validate_mechanisms(model: GridKeys, fail) -> tuple[MechanismEntry, ...]:
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
        entries.append(MechanismEntry(spec.name, label, freeze_options(opts)))
    return tuple(entries)


def _validate_exclusive(model: SuiteModel, fail) -> None:
    if model.workers == 1:
        return
    exclusive = [m for m in model.metrics if metric_registry.get(m).exclusive]
    if exclusive:
        raise fail("workers", f"must be 1 when measuring {', '.join(exclusive)} (they need the machine to themselves); "
                              "use workers > 1 only for suites without time/memory metrics")
