"""The only place plugins are loaded: built-ins from DEFAULT_PLUGINS, then the `loopkit` entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from loopkit_core import __version__, hookspecs
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
    "loopkit_plugins.user_signals",
    "loopkit_plugins.user_signals_verifier",
)
# A plugin's error text is cut here: it is stored in packets and verifications, and shown in API answers.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class PluginError:
    """One plugin's failure: the single error shape of hook calls and plugin loading."""

    plugin: str
    hook: str | None  # None: the plugin failed to load
    error: str  # "Type: message", at most MAX_ERROR_CHARS characters

    @classmethod
    def of(cls, plugin: str, hook: str | None, exc: BaseException) -> PluginError:
        """The failure an exception describes, as "Type: message"."""
        return cls(plugin, hook, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])

    def as_json(self, name_key: str = "plugin", **extra: str) -> dict[str, str]:
        """The failure as the API shows it: `{name_key: plugin, **extra, "error": error}`.

        The key naming the plugin is part of each answer's contract: `diagnoser` in a packet's
        `diagnoser_errors`, `verifier` in `verifier_errors`, `plugin` in `load_errors`.
        """
        return {name_key: self.plugin, **extra, "error": self.error}


@dataclass
class HookCalls:
    """What `Plugins.call_each` did: the plugins called, their non-None answers, and their failures."""

    called: list[str] = field(default_factory=list)
    answers: list[tuple[str, Any]] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)


@dataclass
class Plugins:
    """A plugin manager of one LoopKit instance, plus what failed to load."""

    manager: pluggy.PluginManager
    builtin: frozenset[str]
    load_errors: list[dict[str, str]] = field(default_factory=list)
    # Plugin name -> (distribution name, version) it was installed from; absent for one registered in code.
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)
    _renderers: dict[str, Renderer] | None = None

    @property
    def hook(self) -> Any:
        """The hook caller (`plugins.hook.diagnose(...)`)."""
        return self.manager.hook

    def implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, hookimpl) for one hook, in call order (later-registered and tryfirst first)."""
        caller = getattr(self.manager.hook, hook_name)
        return [(self.manager.get_name(impl.plugin), impl) for impl in reversed(caller.get_hookimpls())]

    def call_each(
        self,
        hook_name: str,
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        only: Collection[str] | None = None,
        check: Callable[[Any], Any] | None = None,
        first_answer: bool = False,
    ) -> HookCalls:
        """Call each plugin's implementation of a hook, one at a time; a plugin that fails is recorded, never fatal.

        pluggy would stop the whole call at the first exception, so the implementations are called here
        in pluggy's order, each with the arguments of `kwargs` it asks for (a function there makes fresh
        arguments for each plugin, so one plugin cannot change what the next one gets). `only` limits the
        call to those plugin names. `check(answer)` returns the answer to keep, or raises: that counts as
        the plugin's failure. None answers are dropped; with `first_answer` the call stops at the first
        other answer (for firstresult hooks).
        """
        calls = HookCalls()
        for name, impl in self.implementations(hook_name):
            if only is not None and name not in only:
                continue
            calls.called.append(name)
            started = time.perf_counter()
            arguments = kwargs() if callable(kwargs) else kwargs
            try:
                answer = impl.function(**{k: arguments[k] for k in impl.argnames})
                if check is not None:
                    answer = check(answer)
            except Exception as exc:
                log.exception("plugin %s failed in %s", name, hook_name)
                calls.errors.append(PluginError.of(name, hook_name, exc))
                continue
            log.debug("plugin %s answered %s in %.3f s", name, hook_name, time.perf_counter() - started)
            if answer is None:
                continue
            calls.answers.append((name, answer))
            if first_answer:
                break
        return calls

    def renderers(self) -> dict[str, Renderer]:
        """Every registered handoff format by name; for a name registered twice, the first plugin called wins.

        Collected once per plugin manager (the hook is a start-up registration).
        """
        if self._renderers is not None:
            return self._renderers
        found: dict[str, Renderer] = {}
        # A broken renderer plugin loses its formats, nothing else.
        calls = self.call_each("register_handoff_renderers", {}, check=lambda answer: list(answer or []))
        self.load_errors.extend(error.as_json() for error in calls.errors)
        for _name, registered in calls.answers:
            for renderer in registered:
                if isinstance(renderer, Renderer):
                    found.setdefault(renderer.name, renderer)
        self._renderers = found
        return found

    def register(self, plugin: object, name: str) -> None:
        """Register one more plugin object (a module, say) under `name`, as a test does with an uninstalled one.

        Misspelt hooks raise (pluggy's check_pending), and the handoff formats are collected again.
        """
        self.manager.register(plugin, name=name)
        try:
            self.manager.check_pending()
        except Exception:
            self.manager.unregister(name=name)
            raise
        self._renderers = None

    def describe(self) -> list[dict[str, Any]]:
        """What is loaded: each plugin's name, module, distribution and version, whether built in, and its hooks."""
        out = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
            out.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", type(plugin).__name__),
                    "distribution": self.origins.get(name, (None, None))[0],
                    "version": self.origins.get(name, (None, None))[1],
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
    plugins.origins.update({name: ("loopkit", __version__) for name in builtin})
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if manager.is_blocked(name):
            continue
        if manager.has_plugin(name):  # a built-in or an earlier entry point holds the name: say so, never shadow
            taken = PluginError(name, None, f"the name {name!r} is taken by another plugin")
            plugins.load_errors.append(taken.as_json())
            continue
        try:
            manager.register(entry_point.load(), name=name)
            manager.check_pending()
            if entry_point.dist is not None:
                plugins.origins[name] = (entry_point.dist.name, entry_point.dist.version)
        except Exception as exc:  # a broken third-party plugin is reported, never fatal
            if manager.has_plugin(name):
                manager.unregister(name=name)
            log.exception("could not load plugin %s", name)
            plugins.load_errors.append(PluginError.of(name, None, exc).as_json())
    return plugins
