"""Every config key, the command line and the assembled config: the core sections (bench_lib.config) and the
section of every registered editor and judge backend (bench_lib.registry), a YAML recipe plus `--key value`
overrides -> a validated `BenchmarkConfig`.

A key whose values are a registry's names (`option(choices=...)`) is checked against that registry here, and its
`--help` lists them, each with its one-line description (the `{choices}` in its help text): nothing lists the
backends, protocols or formats by hand. Nothing here imports a model library: `--help` and every config error
come back at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from .config import (
    CORE_SECTIONS,
    DEFAULT_RECIPE,
    BenchmarkConfig,
    ConfigError,
    convert,
    load_recipe,
    suggest,
)
from .registry import EDITORS, JUDGES, REGISTRIES, Registry

# --- every key, and where it belongs ------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    name: str
    section: str  # "data", "editor", ..., or "editor:<backend>" / "judge:<backend>" for a backend's own key
    field: dataclasses.Field
    type: Any


def backend_sections() -> dict[str, type]:
    """"editor:<name>" / "judge:<name>" -> the backend's config dataclass, for every registered backend."""
    return {f"{registry.kind}:{name}": cls.Config for registry in (EDITORS, JUDGES)
            for name, cls in sorted(registry.items()) if dataclasses.fields(cls.Config)}


def all_keys() -> dict[str, list[Key]]:
    """Every config key -> where it is defined (a key may belong to several backends of one role)."""
    out: dict[str, list[Key]] = {}
    for section, cls in {**CORE_SECTIONS, **backend_sections()}.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, []).append(Key(f.name, section, f, hints[f.name]))
    for name, keys in out.items():
        if len(keys) > 1 and (len({k.section.split(":")[0] for k in keys}) > 1
                              or any(":" not in k.section for k in keys)):
            raise AssertionError(f"config key {name!r} is defined by {[k.section for k in keys]}")
    return out


def config_fields() -> dict[str, Key]:
    """Every config key -> its first definition (the README documents each once)."""
    return {name: keys[0] for name, keys in all_keys().items()}


# --- keys that name registered things -----------------------------------------------------------------


def registry_of(f: dataclasses.Field) -> Optional[Registry]:
    """The registry whose names a key takes (`option(choices=...)`), or None."""
    kind = f.metadata.get("choices")
    return REGISTRIES[kind] if kind else None


def choices_of(f: dataclasses.Field) -> list[str]:
    """Every value a key that names registered things takes (its `also` values first), or []."""
    registry = registry_of(f)
    return [*f.metadata["also"], *registry.names()] if registry else []


def help_text(f: dataclasses.Field) -> str:
    """A key's help, its registry's names (each with its description) in place of `{choices}`."""
    registry = registry_of(f)
    if registry is None:
        return f.metadata["help"]
    listed = ", ".join(f"{name} ({registry.description(name).rstrip('.')})" for name in registry.names())
    return f.metadata["help"].replace("{choices}", listed)


def check_choice(key: str, f: dataclasses.Field, value: Any) -> None:
    """A ConfigError when a key that names registered things names one that is not (did-you-mean, the names)."""
    registry = registry_of(f)
    if registry is None or not isinstance(value, str):
        return
    also = f.metadata["also"]
    names = [n.strip() for n in value.split(",") if n.strip()] if f.metadata["several"] else [value]
    for name in names:
        if name not in also and name not in registry:
            known = [*also, *registry.names()]
            raise ConfigError(f"`{key}`: unknown {registry.kind} {name!r}{suggest(name, known)}; known: {known}.")


# --- command line -------------------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2 itself; keep one error path
        unknown = re.search(r"unrecognized arguments: (.+)", message)
        if unknown:
            flags = [word for word in unknown.group(1).split() if word.startswith("--")]
            known = [s for action in self._actions for s in action.option_strings]
            hint = suggest(flags[0].split("=")[0], known) if flags else ""
            raise ConfigError(f"unknown option {flags[0] if flags else unknown.group(1)}{hint}. "
                              "`--help` lists every option.")
        raise ConfigError(message)


def _metavar(tp: Any, f: dataclasses.Field) -> str:
    name, path = f.name, f.metadata.get("path")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(typing.get_args(tp)) + "}"
    named = choices_of(f)
    if named:
        return "{" + ",".join(named) + "}" + ("[,...]" if f.metadata["several"] else "")
    if tp is bool:
        return "{true,false}"
    if tp is dict:
        return "K=V,...|JSON"
    if tp is int:
        return "N"
    if tp is float:
        return "X"
    if tp is Any:
        return "FOLDER|NAME=PATH,..."
    if path is not None:
        return "PATH_OR_ID" if path == "local" else "PATH"
    return "REV" if name.endswith("_revision") else "TEXT"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return repr(value) if isinstance(value, str) and (not value or value != value.strip()) else str(value)


def build_arg_parser(values: Optional[dict[str, Any]] = None, recipe: Optional[str] = None, *,
                     describe: bool = True) -> argparse.ArgumentParser:
    """The command line: every key as `--key_name` and `--key-name`, grouped by section, with the value a run
    with this recipe uses (`values`: the recipe's) as the default shown. `describe`: help texts list each
    registered name with its description (that loads every protocol's and format's module: for `--help`)."""
    values = values or {}
    parser = _ArgumentParser(
        prog="run_benchmark.py",
        description="Edit every sample with an image-editing model, score each edit with a VLM judge, report.",
        epilog="Every key can also be set in the --config YAML recipe; the command line wins. Mappings take "
               "k=v,... or JSON, and on the command line update the recipe's mapping (k=null removes a key).",
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="RECIPE.yaml",
                        help="YAML recipe (default: configs/smoke.yaml, the offline smoke run with tiny models).")
    groups: dict[str, Any] = {}
    for name, keys in all_keys().items():
        key = keys[0]
        section = " / ".join(k.section for k in keys)
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(f"[{section}]"))
        f = key.field
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        used = values.get(name, default)
        where = "recipe" if name in values else "default"
        shown = f" ({where}: {_shown(used)})" if used not in (None,) and not (isinstance(used, str) and not used) \
            else ""
        flag = {"nargs": "?", "const": "true"} if key.type is bool else {}  # `--overwrite` alone means true
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        text = help_text(f) if describe else f.metadata["help"]
        group.add_argument(*spellings, dest=name, default=argparse.SUPPRESS, metavar=_metavar(key.type, f),
                           help=f"{text}{shown}".replace("%", "%%"), **flag)
    if recipe:
        parser.description += f" Defaults shown are those of {recipe}."
    return parser


def parse_config(argv: Optional[list[str]] = None) -> BenchmarkConfig:
    """Parse `--config recipe.yaml` plus `--key value` overrides into a validated `BenchmarkConfig`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", action="append")
    known, _ = first.parse_known_args(argv)
    if known.config and len(known.config) > 1:
        raise ConfigError(f"--config given {len(known.config)} times ({', '.join(known.config)}): a run takes one "
                          "recipe; override its keys with --key value.")
    known.config = known.config[0] if known.config else None
    recipe_path = Path(known.config) if known.config else DEFAULT_RECIPE
    if "-h" in argv or "--help" in argv:
        values = resolve_recipe_paths(load_recipe(recipe_path), recipe_path.parent) if recipe_path.is_file() else {}
        build_arg_parser(values, str(recipe_path)).print_help()
        raise SystemExit(0)
    cli = vars(build_arg_parser(describe=False).parse_args(argv))
    cli.pop("config", None)
    values = resolve_recipe_paths(load_recipe(recipe_path), recipe_path.parent)
    keys = all_keys()
    for key, value in cli.items():
        if keys[key][0].type is dict:
            # A mapping on the command line updates the recipe's mapping; `key=null` removes a key.
            recipe_mapping = values.get(key) if isinstance(values.get(key), dict) else {}
            merged = {**recipe_mapping, **convert(key, value, dict)}
            value = {k: v for k, v in merged.items() if v is not None}
        values[key] = value
    if known.config is None:
        real = [k for k in ("editor_model", "judge_model") if k in values
                and not str(values.get(k, "")).startswith("tiny:")]
        if real:
            # The smoke recipe's settings (2 steps, 64 px, fp32, no off-format check) would silently apply.
            raise ConfigError(f"{', '.join(real)} set without --config: the default recipe is the offline smoke "
                              "run for tiny models. Pass a recipe, e.g. --config configs/qwen_image_edit.yaml.")
    return config_from_dict(values, recipe=str(recipe_path))


def resolve_recipe_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """A recipe's relative paths are relative to the recipe's folder, wherever the run is started from (the
    command line's are relative to the working directory, as a shell user expects)."""
    keys = all_keys()
    out = dict(values)
    for name, value in values.items():
        if name == "sweep" and isinstance(value, list):  # each variant's own paths, by their keys' rules
            out[name] = [{**item, **resolve_recipe_paths({k: v for k, v in item.items() if k in keys}, base)}
                         if isinstance(item, dict) else item for item in value]
            continue
        if name == "sweep" and isinstance(value, str) and "=" in value:  # NAME=PATH,...: each adapter's path
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            out[name] = ",".join(f"{n}={_recipe_path(base, p) if p.strip() and p.strip() != 'none' else p}"
                                 for n, _, p in pairs)
            continue
        kind = keys[name][0].field.metadata.get("path") if name in keys else None
        if kind is None or not isinstance(value, str) or not value or Path(value).is_absolute() \
                or value.startswith("tiny:"):
            continue
        candidate = base / value
        if kind == "always" or candidate.exists():
            out[name] = str(candidate.resolve() if candidate.exists() else Path(os.path.abspath(candidate)))
    return out


def _recipe_path(base: Path, value: str) -> str:
    path = Path(value.strip()).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def config_from_dict(values: dict[str, Any], *, recipe: Optional[str] = None) -> BenchmarkConfig:
    """Validate a flat {key: value} mapping (recipe + overrides) into a `BenchmarkConfig`."""
    keys = all_keys()
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}{suggest(unknown[0], keys)}"
                          + (f" (and {unknown[1:]})" if len(unknown) > 1 else "") + ". `--help` lists every key.")
    per_section: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        for key in keys[name]:
            per_section.setdefault(key.section, {})[name] = convert(name, value, key.type)
            check_choice(name, key.field, per_section[key.section][name])
    try:
        core = {section: cls(**per_section.get(section, {})) for section, cls in CORE_SECTIONS.items()}
        backends = {}
        for registry, chosen in ((EDITORS, core["editor"].editor), (JUDGES, core["judge"].judge)):
            backends[registry.kind] = registry.get(chosen).Config(**per_section.get(f"{registry.kind}:{chosen}", {}))
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    used = {core["editor"].editor, core["judge"].judge}
    ignored = tuple(sorted(name for name in values
                           if all(":" in k.section and k.section.split(":")[1] not in used for k in keys[name])))
    return BenchmarkConfig(data=core["data"], editor=core["editor"], editor_backend=backends["editor"],
                           judge=core["judge"], judge_backend=backends["judge"], run=core["run"],
                           sweep=core["sweep"], tracking=core["tracking"], recipe=recipe, ignored=ignored)
