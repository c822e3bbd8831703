"""The only place plugins are loaded: built-ins from DEFAULT_PLUGINS, then the `loopkit` entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from loopkit_core import hookspecs
from loopkit_core.model import Renderer

log = logging.getLogger("loopkit.plugins")

ENTRY_POINT_GROUP = "loopkit"
# Built-in plugins: ordinary modules with @hookimpl functions, exactly like a third party's.
DEFAULT_PLUGINS = (
    "loopkit_plugins.signature_clusterer",
    "loopkit_plugins.latency_outliers",
    "loopkit_plugins.rate_verifier",
    "loopkit_plugins.latency_verifier",
    "loopkit_plugins.handoff",
)


@dataclass
class Plugins:
    """A plugin manager of one LoopKit instance, plus what failed to load."""

    manager: pluggy.PluginManager
    builtin: frozenset[str]
    load_errors: list[dict[str, str]] = field(default_factory=list)
    _renderers: dict[str, Renderer] | None = None

    @property
    def hook(self) -> Any:
        """The hook caller (`plugins.hook.diagnose(...)`)."""
        return self.manager.hook

    def implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, hookimpl) for one hook, in call order (later-registered and tryfirst first)."""
        caller = getattr(self.manager.hook, hook_name)
        return [(self.manager.get_name(impl.plugin), impl) for impl in reversed(caller.get_hookimpls())]

    def renderers(self) -> dict[str, Renderer]:
        """Every registered handoff format by name; for a name registered twice, the first plugin called wins.

        Collected once per plugin manager (the hook is a start-up registration).
        """
        if self._renderers is not None:
            return self._renderers
        found: dict[str, Renderer] = {}
        for _name, impl in self.implementations("register_handoff_renderers"):
            try:
                registered = impl.function() or []
            except Exception as exc:  # a broken renderer plugin loses its formats, nothing else
                log.exception("register_handoff_renderers failed")
                self.load_errors.append({"plugin": _name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            for renderer in registered:
                if isinstance(renderer, Renderer):
                    found.setdefault(renderer.name, renderer)
        self._renderers = found
        return found

    def describe(self) -> list[dict[str, Any]]:
        """What is loaded: each plugin's name, module, whether it is built in, and the hooks it implements."""
        out = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
            out.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", type(plugin).__name__),
                    "builtin": name in self.builtin,
                    "hooks": hooks,
                }
            )
        return sorted(out, key=lambda p: (not p["builtin"], p["name"]))


def describe_loaded(plugins: Plugins) -> dict[str, Any]:
    """The plugins answer: what is loaded, its diagnosers, verifiers and formats, and what failed to load."""
    return {
        "ok": True,
        "plugins": plugins.describe(),
        "diagnosers": [name for name, _ in plugins.implementations("diagnose")],
        "verifiers": [name for name, _ in plugins.implementations("verify_issue")],
        "renderers": [
            {"name": r.name, "media_type": r.media_type, "description": r.description}
            for r in plugins.renderers().values()
        ],
        "load_errors": plugins.load_errors,
    }


def get_plugins(blocked: Iterable[str] = ()) -> Plugins:
    """A fresh plugin manager: built-ins, then installed entry points; blocked names are never loaded."""
    manager = pluggy.PluginManager("loopkit")
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    builtin = set()
    for module_name in DEFAULT_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if manager.is_blocked(name):
            continue
        manager.register(importlib.import_module(module_name), name=name)
        builtin.add(name)
    manager.check_pending()  # a misspelt hook in a built-in plugin is a bug: fail loudly
    plugins = Plugins(manager, frozenset(builtin))
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if manager.is_blocked(name):
            continue
        if manager.has_plugin(name):  # a built-in or an earlier entry point holds the name: say so, never shadow
            plugins.load_errors.append({"plugin": name, "error": f"the name {name!r} is taken by another plugin"})
            continue
        try:
            manager.register(entry_point.load(), name=name)
            manager.check_pending()
        except Exception as exc:  # a broken third-party plugin is reported, never fatal
            if manager.has_plugin(name):
                manager.unregister(name=name)
            log.exception("could not load plugin %s", name)
            plugins.load_errors.append({"plugin": name, "error": f"{type(exc).__name__}: {exc}"})
    return plugins

