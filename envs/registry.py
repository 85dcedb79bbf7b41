"""One registry pattern for every pluggable piece (rewards, datasets, advantage estimators, ...).

A name is registered here (`@REWARDS.register("binary")`), or an installed package's entry point
in the registry's group (e.g. `[project.entry-points."selfcorrect.rewards"] concise =
"mypkg.rewards:concise"` makes `reward.name=concise` work), or a user plug-in given as
"package.module:attribute" or "path/to/file.py:attribute"; all resolve through `get`.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind, self.entry_point_group = kind, entry_point_group
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj
        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            return _load_plugin(self.kind, name)
        installed = self._entry_points()
        if name in installed:
            try:
                return installed[name].load()
            except Exception as exc:
                raise RegistryError(f"cannot load {self.kind} {name!r} from its entry point {installed[name].value!r} "
                                    f"(group {self.entry_point_group}): {type(exc).__name__}: {exc}") from exc
        close = difflib.get_close_matches(name, [*self._entries, *installed], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        group = f", an entry point of group {self.entry_point_group!r}" if self.entry_point_group else ""
        raise RegistryError(
            f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names() + sorted(installed))}; "
            f"or give a plug-in as 'package.module:name' or 'path/to/file.py:name'{group}."
        )

    def _entry_points(self) -> dict:
        if not self.entry_point_group:
            return {}
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}


def _load_plugin(kind: str, spec: str):
    module_part, _, attr = spec.rpartition(":")
    try:
        if module_part.endswith(".py"):
            path = Path(module_part).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            module_spec = importlib.util.spec_from_file_location(f"selfcorrect_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
        return getattr(module, attr)
    except Exception as exc:
        raise RegistryError(f"cannot load {kind} plug-in {spec!r}: {type(exc).__name__}: {exc}") from exc
