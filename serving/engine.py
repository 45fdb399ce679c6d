"""The batch shell around the pure pipeline: one micro-batcher per loaded model version.

A batch runs: encode (backend) -> candidates -> exact logits -> top-k. Candidates are a list
(allowed items, Score's items, or the FAISS top-C minus exclusions), scored by the backend's
scorer; or the whole catalog (small catalogs, --exact, a pruned list shorter than k), scored
here as block GEMMs over the head (pipeline.exact_rankings). Popularity fallbacks (no known
history) skip the model entirely.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logitrec.errors import InputError
from logitrec.mips import search
from logitrec.repository import model_names
from serving import pipeline
from serving.backends import Backend
from serving.backends.base import call_with_timeout
from serving.batcher import MicroBatcher
from serving.config import ServeConfig
from serving.errors import BackendUnavailable, ModelNotFound, PreconditionFailed
from serving.lifecycle import Lifecycle
from serving.metrics import GatewayMetrics
from serving.pipeline import Ranked
from serving.query import Query, prepare_query
from serving.registry import ModelVersion, Registry, load_version

log = logging.getLogger("logitrec.gateway")


@dataclass(frozen=True)
class Answer:
    ranked: Ranked
    timings: dict[str, float]


class Engine:
    def __init__(self, config: ServeConfig, backend: Backend, metrics: GatewayMetrics) -> None:
        self.config = config
        self.backend = backend
        self.metrics = metrics
        names = model_names(config.repository)
        if not names:
            raise InputError(f"{config.repository}: no exported model versions found")
        default = config.model or names[0]
        if config.model is None and len(names) > 1:
            log.warning("several models in %s; default is %s", config.repository, default)
        self.registry = Registry(default)
        self._batchers: dict[tuple[str, int], MicroBatcher] = {}
        self._retiring: set[tuple[str, int]] = set()  # being unloaded: their queues drain
        self._short_reported: set[tuple[str, int]] = set()  # versions whose index ran short
        self.lifecycle = Lifecycle(self)  # which versions are loaded, and changing that
        self.ready = False  # set once every version is loaded and warmed up
        self.backend_healthy = True  # the gateway's backend probe keeps this current

    async def load_all(self) -> None:
        """Load the newest valid versions of every model (as many as Triton's export config
        serves, so both backends see the same versions) and warm each up; invalid ones are
        skipped with a warning (serving.lifecycle)."""
        await self.lifecycle.start()
        self.ready = True

    async def load(self, name: str, version: int) -> ModelVersion:
        """Read and verify one version, create its backend sessions and warm it up; only then
        can requests reach it. PreconditionFailed names why an incomplete or invalid version
        cannot be served. Callers change versions one at a time (Lifecycle's lock)."""
        if (name, version) in self._batchers:
            return self.registry.get(name, version)
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(
                None,
                load_version,
                self.config.repository,
                name,
                version,
                self.config.search_breadth,
            )
            await self.backend.load(model)
        except InputError as error:
            problem = f"{name} version {version} cannot be served: {error}"
            raise PreconditionFailed(problem) from None
        batcher = MicroBatcher(
            lambda queries, waits, model=model: self._run_batch(model, queries, waits),
            max_batch_size=self.config.max_batch_size,
            max_wait_seconds=self.config.max_wait_ms / 1000,
            max_queue=self.config.max_queue,
            on_batch=self._on_batch,
            in_flight=self.config.batches_in_flight,
        )
        batcher.start()
        try:
            await self._warm_up(model, batcher)
        except Exception:
            await batcher.close()
            await self.backend.unload(model)
            raise
        self._batchers[(name, version)] = batcher
        self.registry.add(model)
        log.info("loaded %s version %d (%d items)", name, version, model.num_items)
        return model

    async def _warm_up(self, model: ModelVersion, batcher: MicroBatcher) -> None:
        """Real batches through encoder, index and scorer before traffic is let in: a cold one,
        then one through the batcher, whose time is admission control's first measurement."""
        query = prepare_query(model, [model.item_ids[0]], k=min(10, model.num_items))
        await self._run_batch(model, [query], [0.0])
        await batcher.submit(query)

    def _on_batch(self, size: int, depth: int) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.queue_depth.set(depth)

    async def submit(self, model: ModelVersion, query: Query) -> Answer:
        """Answer `query` on `model`'s batcher; with admission control, refused at once when
        it is not expected to finish within its deadline (or the default deadline)."""
        if not self.backend_healthy and not query.fallback:  # popularity needs no backend
            raise BackendUnavailable("backend unavailable")
        admit_by = None
        if self.config.admission:
            admit_by = query.deadline
            if admit_by is None:
                admit_by = time.monotonic() + self.config.default_deadline_seconds
        key = (model.name, model.version)
        batcher = self._batchers.get(key)
        if batcher is None or key in self._retiring:  # resolved just before its unload
            raise ModelNotFound(f"model_version: {model.name} version {model.version} was unloaded")
        return await batcher.submit(query, query.deadline, admit_by=admit_by)

    async def unload(self, name: str, version: int) -> None:
        """Stop serving one version: requests resolved from now on cannot reach it (NOT_FOUND),
        the ones queued on it finish, then its backend sessions go."""
        model = self.registry.remove(name, version)
        # A request resolved to this version a moment ago may not be queued yet (RecommendBatch
        # submits from tasks, already scheduled): one turn of the loop lets them reach it.
        await asyncio.sleep(0)
        key = (name, version)
        self._retiring.add(key)
        try:
            await self._batchers[key].close()
        finally:
            del self._batchers[key]
            self._retiring.discard(key)
        await self.backend.unload(model)
        log.info("unloaded %s version %d", name, version)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        await self.backend.close()

    def uses_exact_scoring(self, model: ModelVersion) -> bool:
        return self.config.exact or model.num_items < self.config.exact_below

    async def _run_batch(
        self, model: ModelVersion, queries: Sequence[Query], waits: Sequence[float]
    ) -> list[Answer]:
        ranked: list[Ranked | None] = [
            pipeline.popularity_ranking(model, q) if q.fallback else None for q in queries
        ]
        rows = [r for r, q in enumerate(queries) if not q.fallback]
        stages = {"encode": 0.0, "retrieve": 0.0, "score": 0.0}
        if rows:
            batch = [queries[r] for r in rows]
            for row, result in zip(rows, await self._rank(model, batch, stages), strict=True):
                ranked[row] = result
            for stage, seconds in stages.items():
                self.metrics.stage_duration.labels(stage).observe(seconds)
        for wait in waits:
            self.metrics.stage_duration.labels("queue").observe(wait)
        return [
            Answer(result, {"queue": wait, **stages})
            for result, wait in zip(ranked, waits, strict=True)
        ]

    async def _rank(
        self, model: ModelVersion, batch: Sequence[Query], stages: dict[str, float]
    ) -> list[Ranked]:
        """Encode, retrieve and score the model's rows of a batch; `stages` gets the seconds."""
        # Every backend call times out: when the batch's latest deadline passes (nobody waits
        # longer; the earliest would let one hurried caller fail the others) or after
        # backend_timeout_seconds, so a stuck backend never holds the batcher for long.
        deadlines = [q.deadline for q in batch]
        deadline = None if None in deadlines else max(deadlines)
        longest = self.config.backend_timeout_seconds
        started = time.perf_counter()
        histories, context = pipeline.pad_histories(batch), pipeline.context_matrix(batch)
        vectors = await call_with_timeout(
            lambda timeout: self.backend.encode(model, histories, context, timeout=timeout),
            deadline,
            longest,
        )
        stages["encode"] = time.perf_counter() - started

        started = time.perf_counter()
        candidates = await self._candidates(model, batch, vectors)
        stages["retrieve"] = time.perf_counter() - started

        started = time.perf_counter()
        ranked: list[Ranked | None] = [None] * len(batch)
        listed = [i for i, c in enumerate(candidates) if c is not None]
        if listed:  # candidate lists (pruned, allowed, Score's items): the backend's scorer
            padded = pipeline.pad_candidates([candidates[i] for i in listed])
            logits = await call_with_timeout(
                lambda timeout: self.backend.score(model, vectors[listed], padded, timeout=timeout),
                deadline,
                longest,
            )
            for i, ids, values in zip(listed, padded, logits, strict=True):
                ranked[i] = (
                    pipeline.in_request_order(ids, values)
                    if batch[i].score_items is not None
                    else pipeline.top_k(ids, values, batch[i].k)
                )
        whole = [i for i, c in enumerate(candidates) if c is None]
        if whole:  # the whole catalog: one GEMM per block over the head, in the gateway
            loop = asyncio.get_running_loop()
            rankings = await loop.run_in_executor(
                None, pipeline.exact_rankings, vectors[whole], model.head, [batch[i] for i in whole]
            )
            for i, ranking in zip(whole, rankings, strict=True):
                ranked[i] = ranking
        stages["score"] = time.perf_counter() - started
        return ranked

    async def _candidates(
        self, model: ModelVersion, batch: Sequence[Query], vectors: np.ndarray
    ) -> list[np.ndarray | None]:
        """Per query: the items to score, or None for the whole catalog (minus exclusions).
        Pruned queries get the index's hits minus exclusions; one left with fewer than k
        candidates is scored over the whole catalog instead, so it still gets k items."""
        exact = self.uses_exact_scoring(model)
        candidates: list[np.ndarray | None] = [
            q.score_items if q.score_items is not None else q.allowed for q in batch
        ]
        pruned_rows = [i for i, q in enumerate(batch) if not exact and candidates[i] is None]
        if not pruned_rows:
            return candidates
        widths = [
            pipeline.search_width(batch[i], self.config.candidate_count, model.num_items)
            for i in pruned_rows
        ]
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            None, search, model.faiss_index, vectors[pruned_rows], max(widths)
        )
        for position, i in enumerate(pruned_rows):
            hits = found[position]
            if (hits > 0).sum() < widths[position]:
                self._report_short(model, int((hits > 0).sum()), widths[position])
            kept = pipeline.pruned_candidates(batch[i], hits, self.config.candidate_count)
            candidates[i] = kept if len(kept) >= batch[i].k else None
        return candidates

    def _report_short(self, model: ModelVersion, found: int, asked: int) -> None:
        """The index returned fewer candidates than asked (IVF lists scanned too small for
        the count): counted, and said once per version, since recall falls with it."""
        self.metrics.candidates_short.inc()
        key = (model.name, model.version)
        if key not in self._short_reported:
            self._short_reported.add(key)
            log.warning(
                "%s version %d: the index returned %d of %d candidates asked for; raise the "
                "search breadth (--search-breadth) or lower --candidate-count (counted in "
                "logitrec_candidates_short_total)",
                model.name, model.version, found, asked,
            )  # fmt: skip
