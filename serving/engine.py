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
from dataclasses import dataclass, replace

import numpy as np

from logitrec.errors import InputError
from logitrec.index_shards import shard_index
from logitrec.mips import search
from logitrec.repository import model_names
from serving import explain, pipeline, rerank
from serving.backends import Backend
from serving.backends.base import call_with_timeout
from serving.batcher import MicroBatcher
from serving.config import ServeConfig
from serving.errors import BackendUnavailable, ModelNotFound, PreconditionFailed
from serving.faiss_device import check_device, place_index
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
    widened: bool = False  # filters left too few pruned candidates: the whole catalog was ranked
    # With explain: per returned item, its top contributors (serving.explain.top_contributors)
    explanations: list | None = None


@dataclass(frozen=True, eq=False)
class ExplainJob:
    """One answered request waiting in its version's explanation lane."""

    query: Query
    items: np.ndarray  # the returned item indices, best first


class Engine:
    def __init__(self, config: ServeConfig, backend: Backend, metrics: GatewayMetrics) -> None:
        self.config = config
        self.backend = backend
        self.metrics = metrics
        check_device(config.device)  # --device cuda without a GPU faiss: refused at start
        names = model_names(config.repository)
        if not names:
            raise InputError(f"{config.repository}: no exported model versions found")
        default = config.model or names[0]
        if config.model is None and len(names) > 1:
            log.warning("several models in %s; default is %s", config.repository, default)
        self.registry = Registry(default)
        self._batchers: dict[tuple[str, int], MicroBatcher] = {}
        # Explanations run in their own lane per version (a batcher of leave-one-out encoder
        # batches), so requests that do not ask for them never wait behind one.
        self._explainers: dict[tuple[str, int], MicroBatcher] = {}
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
            model = await loop.run_in_executor(None, self._read_version, name, version)
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
        explainer = MicroBatcher(
            lambda jobs, waits, model=model: self._run_explanations(model, jobs, waits),
            max_batch_size=self.config.max_explain_batch,
            max_wait_seconds=self.config.max_wait_ms / 1000,
            max_queue=self.config.max_explain_queue,
        )
        batcher.start()
        explainer.start()
        try:
            await self._warm_up(model, batcher)
        except Exception:
            await batcher.close()
            await explainer.close()
            await self.backend.unload(model)
            raise
        self._batchers[(name, version)] = batcher
        self._explainers[(name, version)] = explainer
        self.registry.add(model)
        log.info("loaded %s version %d (%d items)", name, version, model.num_items)
        return model

    def _read_version(self, name: str, version: int) -> ModelVersion:
        """One version from the repository, its FAISS index in --index-shards shards and where
        --device puts it."""
        config = self.config
        model = load_version(config.repository, name, version, config.search_breadth)
        index = shard_index(model.faiss_index, config.index_shards)
        return replace(model, faiss_index=place_index(index, config.device))

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
        answer = await batcher.submit(query, query.deadline, admit_by=admit_by)
        if query.explain and not query.fallback and len(answer.ranked.items):
            answer = await self._explained(key, query, answer)
        return answer

    async def _explained(self, key: tuple[str, int], query: Query, answer: Answer) -> Answer:
        """The answer with its explanations, from the version's explanation lane."""
        started = time.perf_counter()
        explainer = self._explainers.get(key)
        if explainer is None:  # unloaded while this request was being ranked
            raise ModelNotFound(f"model_version: {key[0]} version {key[1]} was unloaded")
        job = ExplainJob(query, answer.ranked.items)
        explanations = await explainer.submit(job, query.deadline)
        self.metrics.explanations.inc()
        seconds = time.perf_counter() - started
        self.metrics.stage_duration.labels("explain").observe(seconds)
        timings = {**answer.timings, "explain": seconds}
        return replace(answer, explanations=explanations, timings=timings)

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
            # Requests answered just now queue their explanations on their next turn: let them
            # reach the lane before it closes (it finishes what it holds).
            await asyncio.sleep(0)
            await self._explainers[key].close()
        finally:
            del self._batchers[key]
            self._explainers.pop(key, None)
            self._retiring.discard(key)
        await self.backend.unload(model)
        log.info("unloaded %s version %d", name, version)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        await asyncio.gather(*(b.close() for b in self._explainers.values()))
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
        widened = [False] * len(queries)
        if rows:
            batch = [queries[r] for r in rows]
            results, batch_widened = await self._rank(model, batch, stages)
            for row, result, wide in zip(rows, results, batch_widened, strict=True):
                ranked[row], widened[row] = result, wide
            for stage, seconds in stages.items():
                self.metrics.stage_duration.labels(stage).observe(seconds)
        for wait in waits:
            self.metrics.stage_duration.labels("queue").observe(wait)
        reranked = await self._reranked(model, queries, ranked)
        return [
            Answer(result, {"queue": wait, **stages, "rerank": seconds}, wide)
            for (result, seconds), wait, wide in zip(reranked, waits, widened, strict=True)
        ]

    async def _reranked(
        self, model: ModelVersion, queries: Sequence[Query], ranked: list[Ranked]
    ) -> list[tuple[Ranked, float]]:
        """Each ranking re-ranked to k where its query asks for it, with the seconds it took
        (off the event loop: MMR and calibration are per-request Python work)."""
        chosen = [i for i, q in enumerate(queries) if q.rerank is not None]
        if not chosen:
            return [(r, 0.0) for r in ranked]
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(
            None, _rerank_rows, model, [queries[i] for i in chosen], [ranked[i] for i in chosen]
        )
        self.metrics.reranked.inc(len(chosen))
        results = [(r, 0.0) for r in ranked]
        for i, result in zip(chosen, done, strict=True):
            results[i] = result
        return results

    async def _run_explanations(
        self, model: ModelVersion, jobs: Sequence[ExplainJob], waits: Sequence[float]
    ) -> list[list]:
        """One encoder batch of every job's leave-one-out variants, then each returned item's
        logit deltas from the head (serving.explain)."""
        built = [
            explain.variants(job.query.items, job.query.context, model.max_length) for job in jobs
        ]
        width = max(histories.shape[1] for histories, _, _ in built)
        histories = np.concatenate([_left_pad(h, width) for h, _, _ in built])
        context = np.concatenate([c for _, c, _ in built])
        deadlines = [job.query.deadline for job in jobs]
        deadline = None if None in deadlines else max(deadlines)
        vectors = await self._encode_rows(model, histories, context, deadline)
        results, offset = [], 0
        for job, (rows, _, removals) in zip(jobs, built, strict=True):
            own = vectors[offset : offset + len(rows)]
            offset += len(rows)
            deltas = explain.contributions(own, model.head, job.items, removals)
            results.append(explain.top_contributors(deltas, removals, job.query.explain))
        return results

    async def _encode_rows(self, model, histories, context, deadline) -> np.ndarray:
        """Encode many rows in chunks of the batch size the backend takes (Triton's models
        accept at most their exported max_batch_size)."""
        size = self.config.max_batch_size
        chunks = []
        for start in range(0, len(histories), size):
            rows, features = histories[start : start + size], context[start : start + size]
            chunks.append(
                await call_with_timeout(
                    lambda timeout, rows=rows, features=features: self.backend.encode(
                        model, rows, features, timeout=timeout
                    ),
                    deadline,
                    self.config.backend_timeout_seconds,
                )
            )
        return np.concatenate(chunks)

    async def _rank(
        self, model: ModelVersion, batch: Sequence[Query], stages: dict[str, float]
    ) -> tuple[list[Ranked], list[bool]]:
        """Encode, retrieve and score the model's rows of a batch; `stages` gets the seconds.
        Also says which filtered rows had to be widened to the whole catalog."""
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
        candidates, widened = await self._candidates(model, batch, vectors)
        stages["retrieve"] = time.perf_counter() - started

        started = time.perf_counter()
        ranked: list[Ranked | None] = [None] * len(batch)
        listed = [i for i, c in enumerate(candidates) if c is not None]
        if listed:  # candidate lists (pruned, allowed, Score's items): the backend's scorer
            padded = pipeline.pad_candidates([candidates[i] for i in listed])
            # The encoder's own array when every row is scored: a GPU backend finds its
            # device copy by it (serving.backends.iobinding)
            rows = vectors if len(listed) == len(vectors) else vectors[listed]
            logits = await call_with_timeout(
                lambda timeout: self.backend.score(model, rows, padded, timeout=timeout),
                deadline,
                longest,
            )
            for i, ids, values in zip(listed, padded, logits, strict=True):
                ranked[i] = (
                    pipeline.in_request_order(ids, values)
                    if batch[i].score_items is not None
                    else pipeline.top_k(ids, values, batch[i].depth)
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
        return ranked, widened

    async def _candidates(
        self, model: ModelVersion, batch: Sequence[Query], vectors: np.ndarray
    ) -> tuple[list[np.ndarray | None], list[bool]]:
        """Per query: the items to score, or None for the whole catalog (minus exclusions).
        Pruned queries get the index's hits minus exclusions; one left with fewer than k
        candidates is scored over the whole catalog instead, so it still gets k items (for a
        filtered query that is 'widened', counted and said in the response)."""
        exact = self.uses_exact_scoring(model)
        candidates: list[np.ndarray | None] = [
            q.score_items if q.score_items is not None else q.allowed for q in batch
        ]
        widened = [False] * len(batch)
        pruned_rows = [i for i, q in enumerate(batch) if not exact and candidates[i] is None]
        if not pruned_rows:
            return candidates, widened
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
            candidates[i] = kept if len(kept) >= batch[i].depth else None
            if candidates[i] is None and batch[i].filtered:
                widened[i] = True
                self.metrics.filters_widened.inc()
        return candidates, widened

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


def _rerank_rows(
    model: ModelVersion, queries: Sequence[Query], ranked: Sequence[Ranked]
) -> list[tuple[Ranked, float]]:
    results = []
    for query, ranking in zip(queries, ranked, strict=True):
        started = time.perf_counter()
        chosen = rerank.rerank(
            ranking.items,
            ranking.logits,
            query.k,
            query.rerank,
            popularity=model.popularity,
            vectors=model.head,
            metadata=model.metadata,
            history=query.items,
        )
        results.append((chosen, time.perf_counter() - started))
    return results


def _left_pad(histories: np.ndarray, width: int) -> np.ndarray:
    """Histories [R, L] left-padded with 0 to [R, width] (the encoder reads the newest last)."""
    if histories.shape[1] == width:
        return histories
    out = np.zeros((len(histories), width), dtype=histories.dtype)
    out[:, width - histories.shape[1] :] = histories
    return out
