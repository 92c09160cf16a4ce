"""Loads plugins from the `kdstudio` entry-point group (built-ins included) and indexes what they register.

A plugin that fails to import or raises inside a hook is reported in `errors` and skipped; the rest load.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from kdstudio import hookspecs
from kdstudio.errors import PluginNotFound
from kdstudio.interfaces import KINDS, Component

GROUP = "kdstudio"
# Modules to load as plugins besides the entry points, comma-separated (like PYTEST_PLUGINS): a plugin under
# development, or a test suite's own, without installing a distribution for it.
ENV = "KDSTUDIO_PLUGINS"
HOOKS = {
    "selector": "register_selectors",
    "teacher": "register_teachers",
    "student": "register_students",
    "exporter": "register_exporters",
    "review_backend": "register_review_backends",
    "dataset": "register_datasets",
    "engine": "register_engines",
    "doubt": "register_doubts",
    "free_labels": "register_free_labels",
    "encoder": "register_encoders",
}


@dataclass(frozen=True)
class Registered:
    kind: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str


@dataclass(frozen=True)
class LoadError:
    plugin: str
    distribution: str
    error: str
    detail: str


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    distributions: dict[str, str] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    by_kind: dict[str, dict[str, Registered]] = field(default_factory=dict)

    @classmethod
    def load(cls, extra: Iterable[tuple[str, object]] = ()) -> Plugins:
        """Load every entry point of the group, the modules named in $KDSTUDIO_PLUGINS, and `extra` (name, plugin
        object) pairs."""
        manager = pluggy.PluginManager(GROUP)
        manager.add_hookspecs(hookspecs)
        plugins = cls(manager)
        # kdstudio's own plugins load first, so that a name another distribution takes again is that one's error.
        for ep in sorted(entry_points(group=GROUP), key=lambda ep: (ep.dist is None or ep.dist.name != "kdstudio")):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"
            name = f"{ep.dist.name if ep.dist else 'unknown'}:{ep.name}"
            if manager.has_plugin(name):
                continue  # the same distribution seen twice on sys.path
            try:
                manager.register(ep.load(), name=name)
            except Exception as exc:
                plugins._fail(name, dist, exc)
                continue
            plugins.distributions[name] = dist
        for module in filter(None, (m.strip() for m in os.environ.get(ENV, "").split(","))):
            name = f"{ENV}:{module}"
            try:
                manager.register(importlib.import_module(module), name=name)
            except Exception as exc:
                plugins._fail(name, f"${ENV}", exc)
                continue
            plugins.distributions[name] = f"${ENV}"
        for name, obj in extra:
            manager.register(obj, name=name)
            plugins.distributions[name] = "(registered in-process)"
        plugins._collect()
        return plugins

    def _fail(self, plugin: str, dist: str, exc: BaseException) -> None:
        self.errors.append(LoadError(plugin, dist, f"{type(exc).__name__}: {exc}", traceback.format_exc()))

    def _collect(self) -> None:
        failed: set[str] = set()
        for kind, hook_name in HOOKS.items():
            found: dict[str, Registered] = {}
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                plugin = impl.plugin_name
                if plugin in failed:
                    continue
                dist = self.distributions.get(plugin, "unknown")
                batch: list[type] = []
                try:
                    impl.function(**{arg: batch.append for arg in impl.argnames})
                    for obj in batch:
                        self._check(kind, obj, found, dist)
                except Exception as exc:
                    self._fail(plugin, dist, exc)
                    failed.add(plugin)
                    continue
                for obj in batch:
                    found[obj.name] = Registered(kind, obj.name, obj, plugin, dist)
            self.by_kind[kind] = found
        # A plugin that failed in one hook is dropped from every kind, not half-loaded.
        for kind, found in self.by_kind.items():
            self.by_kind[kind] = {n: r for n, r in found.items() if r.plugin not in failed}

    @staticmethod
    def _check(kind: str, obj: object, found: dict[str, Registered], dist: str) -> None:
        base = KINDS[kind]
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"{HOOKS[kind]} registered {obj!r}, which is not a {base.__name__}")
        if not getattr(obj, "name", None):
            raise TypeError(f"{obj.__qualname__} has no `name`")
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            raise TypeError(f"{obj.__qualname__} does not implement {missing}")
        taken = found.get(obj.name)
        if taken is not None:
            # Silently replacing a built-in (or another plugin) would change what a run does without a word.
            raise TypeError(f"{dist} registers the {kind.replace('_', ' ')} {obj.name!r}, which {taken.distribution} "
                            f"({taken.plugin}) already registers: rename one of them")

    def registered(self, kind: str) -> dict[str, Registered]:
        return self.by_kind.get(kind, {})

    def get(self, kind: str, name: str) -> Registered:
        found = self.registered(kind)
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise PluginNotFound(f"no {kind.replace('_', ' ')} named {name!r} (registered: {known})",
                                 "see `kdstudio plugins`")
        return found[name]


@functools.cache
def get_plugins() -> Plugins:
    return Plugins.load()
