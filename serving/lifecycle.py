"""Which model versions the gateway serves, and changing that while it serves.

Start-up, rescans of the repository (every `poll_seconds`, on SIGHUP) and the admin service all
change versions through here, one change at a time (a lock). A version is served only once it
has been read, verified (files, manifest, catalog hash), given backend sessions and warmed up;
an incomplete or invalid one is skipped with a warning and never replaces a serving version.
At most `versions_served` versions of a model stay loaded: once a newer one is in, the oldest
beyond that count is unloaded after the requests queued on it have finished.
"""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from logitrec import repository as layout
from logitrec.errors import InputError
from serving.errors import ModelNotFound, PreconditionFailed
from serving.registry import ModelVersion

if TYPE_CHECKING:
    from serving.engine import Engine

log = logging.getLogger("logitrec.gateway")


@dataclass(frozen=True)
class LoadOutcome:
    model: ModelVersion
    already_loaded: bool
    unloaded: list[int]  # older versions retired to keep at most versions_served


@dataclass(frozen=True)
class ModelState:
    name: str
    default_model: bool
    loaded: list[ModelVersion]  # oldest first
    available: list[int]  # complete in the repository, not loaded


@dataclass(frozen=True)
class _Skipped:
    files: tuple  # _files_of the version when it failed
    problem: str


def _files_of(repository: Path, name: str, version: int) -> tuple:
    """Size and modification time of every file loading a version reads (None: missing). A
    skipped version fails the same way until one of them changes."""
    scorer = layout.scorer_dir(repository, name, version)
    paths = [scorer / file for file in (layout.MANIFEST, layout.CATALOG, layout.FAISS_INDEX)]
    paths += [layout.model_file(repository, name, kind, version) for kind in layout.KINDS]
    stats = []
    for path in paths:
        try:
            stat = path.stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)


def _scan(repository: Path) -> dict[str, list[int]]:
    """Every model with a scorer version in place -> those versions (complete or not)."""
    names = {p.name.removesuffix("_scorer") for p in Path(repository).glob("*_scorer")}
    return {name: layout.scorer_versions(repository, name) for name in sorted(names)}


class Lifecycle:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.registry = engine.registry
        self.repository = Path(engine.config.repository)
        self.keep = engine.config.versions_served
        self._lock = asyncio.Lock()
        self._skipped: dict[tuple[str, int], _Skipped] = {}
        # Unloaded through the admin service: rescans must not bring them straight back.
        self._held_back: set[tuple[str, int]] = set()

    # -- start-up and rescans -----------------------------------------------------------------
    async def start(self) -> None:
        """The newest `versions_served` valid versions of every model. Fails only when the
        default model has none."""
        async with self._lock:
            for name, versions in (await asyncio.to_thread(_scan, self.repository)).items():
                await self._load_new(name, versions, retry=True)
        default = self.registry.default_model
        if not self.registry.versions(default):
            why = "; ".join(
                s.problem for (name, _), s in sorted(self._skipped.items()) if name == default
            )
            raise InputError(
                f"{self.repository}: no valid version of the default model {default!r}"
                + (f" ({why})" if why else "")
            )

    async def rescan(self, trigger: str) -> None:
        """Load the versions that appeared above each model's newest loaded one. A poll leaves
        a skipped version alone until its files change; a SIGHUP tries (and warns) again."""
        async with self._lock:
            log.log(
                logging.DEBUG if trigger == "poll" else logging.INFO,
                "rescanning %s (%s)",
                self.repository,
                trigger,
            )
            for name, versions in (await asyncio.to_thread(_scan, self.repository)).items():
                try:
                    await self._load_new(name, versions, retry=trigger != "poll")
                except Exception:  # the backend failed, not the version: keep serving
                    log.exception("rescan: loading new versions of %s failed", name)

    async def _load_new(self, name: str, versions: list[int], *, retry: bool) -> None:
        """Load the newest valid versions above the newest loaded one, at most `keep`."""
        loaded = self.registry.versions(name)
        newest = loaded[-1] if loaded else 0
        added = 0
        for version in reversed(versions):
            if added == self.keep or version <= newest:
                return
            if (name, version) in self._held_back:
                continue
            files = await asyncio.to_thread(_files_of, self.repository, name, version)
            skipped = self._skipped.get((name, version))
            if not retry and skipped is not None and skipped.files == files:
                continue
            try:
                await self._load(name, version)
                added += 1
            except PreconditionFailed as problem:
                self._skipped[(name, version)] = _Skipped(files, str(problem))
                serving = ", ".join(map(str, self.registry.versions(name))) or "none"
                log.warning("skipped %s (serving %s versions: %s)", problem, name, serving)

    async def _load(self, name: str, version: int) -> list[int]:
        """Load one version, then retire the oldest beyond `keep`; returns the retired ones."""
        loaded = self.registry.versions(name)
        if len(loaded) >= self.keep and version < loaded[-self.keep]:
            newest = ", ".join(map(str, loaded[-self.keep :]))
            raise PreconditionFailed(
                f"version: {name} version {version} is older than the {self.keep} newest loaded "
                f"({newest}) and would be unloaded at once (--versions-served {self.keep}); "
                "unload a newer one first"
            )
        await self.engine.load(name, version)
        self._skipped.pop((name, version), None)
        retired = self.registry.versions(name)[: -self.keep]
        for old in retired:
            await self.engine.unload(name, old)
        return retired

    # -- the admin service --------------------------------------------------------------------
    async def load(self, name: str, version: int) -> LoadOutcome:
        """Load `version` of `name` (0: the newest complete one); errors name why not."""
        name = name or self.registry.default_model
        async with self._lock:
            version = await asyncio.to_thread(self._resolve, name, version)
            if version in self.registry.versions(name):
                return LoadOutcome(self.registry.get(name, version), True, [])
            self._held_back.discard((name, version))
            retired = await self._load(name, version)
            return LoadOutcome(self.registry.get(name, version), False, retired)

    def _resolve(self, name: str, version: int) -> int:
        """The repository's version to load: NOT_FOUND when there is none such."""
        existing = layout.existing_versions(self.repository, name)
        if not existing:
            raise ModelNotFound(f"model: no model {name[:64]!r} in {self.repository}")
        if version == 0:
            complete = layout.complete_versions(self.repository, name)
            if not complete:
                raise PreconditionFailed(f"model: {name} has no complete version to load")
            return complete[-1]
        if version not in existing:
            have = ", ".join(map(str, sorted(existing)))
            raise ModelNotFound(f"version: {name} has no version {version} (present: {have})")
        return version

    async def unload(self, name: str, version: int) -> list[int]:
        """Unload a loaded version (queued requests finish first); the versions left."""
        name = name or self.registry.default_model
        async with self._lock:
            loaded = self.registry.versions(name)
            if not loaded:
                raise ModelNotFound(f"model: {name[:64]!r} is not loaded")
            if version not in loaded:
                have = ", ".join(map(str, loaded))
                raise ModelNotFound(f"version: {name} version {version} is not loaded ({have})")
            if name == self.registry.default_model and loaded == [version]:
                raise PreconditionFailed(
                    f"version: {name} version {version} is the only loaded version of the "
                    "default model; load another version first"
                )
            self._held_back.add((name, version))
            await self.engine.unload(name, version)
            return self.registry.versions(name)

    async def states(self) -> list[ModelState]:
        """Every model loaded or complete in the repository, by name."""

        def complete() -> dict[str, list[int]]:
            names = layout.model_names(self.repository)
            return {name: layout.complete_versions(self.repository, name) for name in names}

        on_disk = await asyncio.to_thread(complete)
        states = []
        for name in sorted(set(on_disk) | set(self.registry.names())):
            loaded = self.registry.versions(name)
            states.append(
                ModelState(
                    name=name,
                    default_model=name == self.registry.default_model,
                    loaded=[self.registry.get(name, v) for v in loaded],
                    available=[v for v in on_disk.get(name, []) if v not in loaded],
                )
            )
        return states
