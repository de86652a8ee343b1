"""The registries: every kind of thing a run chooses by name (editors, judges, protocols, dataset formats, sanity
baselines) is looked up here, and every place that lists the choices reads them from here: the config's checks,
the command line's choices and help, did-you-mean, the README's tables.

A `Registry` maps a name to a class. Three ways in:

- a built-in entry: one line in the tables below, `"name": "module:Class"`. It is a string until the name is
  looked up, so importing bench_lib imports no backend (and no model library);
- a plug-in: an entry point of an installed distribution, in the group `edit_bench.<kind>s`
  (`edit_bench.editors`, `edit_bench.judges`, `edit_bench.protocols`, `edit_bench.formats`,
  `edit_bench.baselines`), `name = "module:Class"`: found when the registry's names are first listed or looked
  up, loaded when its name is used. A plug-in may not take a built-in's name;
- `register(name, cls)` or its decorator (`bench_lib.backends.register_editor`, ...), where the class is defined:
  the built-in classes do this too, so a class is registered under its name however its module was imported.

A name is taken once: registering another class under a taken name raises (the same class again is fine). Each
registered class must subclass the registry's base (named here as a string as well; a base may check more in a
`check_registration` classmethod) and gets its name as `cls.name`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Optional

from .config import ConfigError, suggest

GROUP_PREFIX = "edit_bench."


def load_object(spec: str) -> Any:
    """The object a `"module:qualified.name"` string names (importing its module)."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"expected 'module:object', got {spec!r}")
    obj: Any = importlib.import_module(module_name.strip())
    for part in qualname.strip().split("."):
        obj = getattr(obj, part)
    return obj


def spec_of(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


class Registry:
    """Name -> class, for one kind of thing (see the module docstring)."""

    def __init__(self, kind: str, *, base: str, builtins: Optional[dict[str, str]] = None,
                 group: Optional[str] = None):
        self.kind = kind  # "editor", "judge", ...: how messages name an entry
        self.base = base  # "module:Class" every entry subclasses
        self.group = group if group is not None else f"{GROUP_PREFIX}{kind}s"
        self._entries: dict[str, Any] = dict(builtins or {})  # name -> class, or "module:Class" not loaded yet
        self._builtins = set(self._entries)
        self._origin: dict[str, str] = {}  # plug-in name -> the distribution that provides it
        self._plugins_found = False

    # --- registering -------------------------------------------------------------------------------------

    def register(self, name: str, obj: Any) -> Any:
        """Register `obj` under `name` (returns it). Raises ValueError when another object has the name, TypeError
        when `obj` is not a subclass of the registry's base (or its base's `check_registration` says no)."""
        existing = self._entries.get(name)
        if existing is obj:
            return obj
        if existing is not None and not (isinstance(existing, str) and existing == spec_of(obj)):
            raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._describe(name)}); "
                             f"{spec_of(obj)} can't take its name")
        return self._add(name, obj)

    def _add(self, name: str, obj: Any) -> Any:
        base = load_object(self.base)
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            raise TypeError(f"{getattr(obj, '__name__', obj)!r} must subclass {base.__name__} to be registered as "
                            f"a {self.kind}")
        check = getattr(obj, "check_registration", None)
        if callable(check):
            check()
        obj.name = name
        self._entries[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[Any], Any]:
        """`@REGISTRY.decorator("name")` on a class registers it under `name`."""
        return lambda obj: self.register(name, obj)

    def pop(self, name: str) -> Any:
        """Remove an entry (a test's own double, when the test is done)."""
        self._builtins.discard(name)
        self._origin.pop(name, None)
        return self._entries.pop(name)

    # --- looking up --------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name: the built-in ones in their table's order, then the plug-ins', then those registered since."""
        self._find_plugins()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._find_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Any:
        """The class registered as `name` (loading its module on first use). An unknown name is a `ConfigError`
        that suggests the closest known name and lists them all."""
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {name!r}{suggest(str(name), self._entries)}; "
                              f"known: {list(self._entries)}.")
        entry = self._entries[name]
        if isinstance(entry, str):
            where = self._origin.get(name)
            try:
                obj = load_object(entry)
            except (ImportError, AttributeError, ValueError) as err:
                if where is None:
                    raise
                raise ConfigError(f"the {self.kind} plug-in {name!r} ({entry}, from {where}) can't be loaded: "
                                  f"{type(err).__name__}: {err}") from err
            if self._entries.get(name) is not obj:  # its module did not register it itself (a plug-in need not)
                self._add(name, obj)
            entry = obj
        return entry

    def items(self) -> list[tuple[str, Any]]:
        """(name, class) of every entry, each loaded."""
        return [(name, self.get(name)) for name in self.names()]

    def description(self, name: str) -> str:
        """One line on what the entry is: its class's `description`, else the first line of its docstring."""
        obj = self.get(name)
        text = vars(obj).get("description") or inspect.cleandoc(obj.__doc__ or "")
        return " ".join(text.split("\n\n")[0].split())

    def is_builtin(self, name: str) -> bool:
        return name in self._builtins

    def _describe(self, name: str) -> str:
        entry = self._entries[name]
        spec = entry if isinstance(entry, str) else spec_of(entry)
        if name in self._builtins:
            return f"the built-in {spec}"
        return f"{spec}, from {self._origin[name]}" if name in self._origin else spec

    # --- plug-ins ----------------------------------------------------------------------------------------

    def _find_plugins(self) -> None:
        """Read the entry points of the registry's group, once (their modules load only when a name is used)."""
        if self._plugins_found:
            return
        self._plugins_found = True
        for point in sorted(entry_points(group=self.group), key=lambda p: p.name):
            where = f"the distribution {point.dist.name!r}" if point.dist is not None else "an entry point"
            where += f" (entry point group {self.group})"
            existing = self._entries.get(point.name)
            if existing is not None:
                if point.name in self._origin and existing == point.value:
                    continue  # the same plug-in seen twice on the path
                self._plugins_found = False  # read again (and refused again) at the next look-up
                raise ConfigError(f"the {self.kind} plug-in {point.name!r} ({point.value}, from {where}) has the name "
                                  f"of {self._describe(point.name)}: rename one of them.")
            self._entries[point.name] = point.value
            self._origin[point.name] = where


# The built-in entries: adding an editor, judge, protocol or format is its module plus one line here.

EDITORS = Registry("editor", base="bench_lib.backends:Editor", builtins={
    "diffusers": "bench_lib.editors.diffusers_pipeline:DiffusersEditor",
    "precomputed": "bench_lib.editors.precomputed:PrecomputedEditor",
    "identity": "bench_lib.editors.baselines:IdentityEditor",
    "blank": "bench_lib.editors.baselines:BlankEditor",
})
JUDGES = Registry("judge", base="bench_lib.backends:Judge", builtins={
    "qwen_vl": "bench_lib.judges.qwen_vl:QwenVLJudge",
    "openai": "bench_lib.judges.openai_api:OpenAIJudge",
})
PROTOCOLS = Registry("protocol", base="bench_lib.protocols.base:Protocol", builtins={
    "default": "bench_lib.protocols.default:DefaultProtocol",
    "viescore": "bench_lib.protocols.viescore:VIEScoreProtocol",
    "risebench": "bench_lib.protocols.risebench:RISEBenchProtocol",
    "kris": "bench_lib.protocols.kris:KRISProtocol",
    "re_edit": "bench_lib.protocols.re_edit:REEditProtocol",
})
FORMATS = Registry("format", base="bench_lib.formats.base:Format", builtins={
    "manifest": "bench_lib.formats.manifest:Manifest",
    "datasets": "bench_lib.formats.dataset:Datasets",
    "re_edit": "bench_lib.formats.re_edit:REEdit",
    "risebench": "bench_lib.formats.risebench:RISEBench",
    "kris": "bench_lib.formats.kris:KRIS",
    "gedit": "bench_lib.formats.gedit:GEdit",
})
# Sanity baselines: editors that need no model, judged beside the run's editor (`baselines`). Each is an editor
# too (`--editor identity`).
BASELINES = Registry("baseline", base="bench_lib.backends:Editor", builtins={
    "identity": "bench_lib.editors.baselines:IdentityEditor",
    "blank": "bench_lib.editors.baselines:BlankEditor",
})

REGISTRIES = {registry.kind: registry for registry in (EDITORS, JUDGES, PROTOCOLS, FORMATS, BASELINES)}
