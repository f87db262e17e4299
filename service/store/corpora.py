"""Document corpora kept in Redis (so they survive restarts and every replica sees the same ones), searched
in process by exact cosine similarity over a numpy matrix.

Redis layout, for a corpus `c` (prefix `ttc:corpus:c:`):

    ttc:corpora        set    corpus names
    ...:meta           hash   name, embedding_model, dimension, created, generation, version
    ...:docs           hash   document id -> JSON {id, title, metadata, chunks}
    ...:chunks         hash   "<doc id>#<i>" -> JSON {doc_id, title, text}
    ...:vectors        hash   same key -> float32 bytes (unit length)
    ...:demos          hash   demonstration id -> JSON {question, answer}

Every write is one MULTI/EXEC transaction that also bumps `version`, so a search never sees half a batch,
and a replica compares its index's (generation, version) with Redis's before each search and reloads when they
differ. `generation` is a random id set when the corpus is created: a corpus deleted and re-created restarts its
version at 0, so the version alone could match an index of the old corpus that another replica still holds.
Exact search costs O(chunks x 384) per query: fine to about 10^5 chunks (a few ms); past ~10^6 a vector
database (Redis's own vector search, FAISS, pgvector) should take over.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from service.runtime.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, embedder, embedding_model_ok
from service.runtime.errors import InvalidRequest, NotFound, StorageUnavailable
from service.runtime.settings import Settings

LOAD_PAGE = 2000
EMBED_SLICE = 64  # texts per embedding call during ingestion
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    title: str
    text: str
    score: float = 0.0


def chunk_text(text: str, words: int, overlap: int) -> list[str]:
    """Windows of `words` words overlapping by `overlap`, so a fact cut at a border is whole in one."""
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)]
    step = max(1, words - overlap)
    return [" ".join(tokens[start : start + words]) for start in range(0, len(tokens) - overlap, step)]


@dataclass
class CorpusIndex:
    generation: str
    version: int
    chunks: list[Chunk]
    matrix: np.ndarray

    def search(self, query: np.ndarray, k: int) -> list[Chunk]:
        if not self.chunks or k <= 0:
            return []
        scores = self.matrix @ query
        k = min(k, len(self.chunks))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [
            Chunk(c.id, c.doc_id, c.title, c.text, float(scores[i])) for i in top for c in (self.chunks[i],)
        ]


class CorpusStore:
    """Corpora in Redis plus this process's search indexes; one per app, built in its lifespan."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._indexes: dict[str, CorpusIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- helpers -------------------------------------------------------------------------------------------
    async def _call(self, work: Awaitable[Any] | Any, timeout: float | None = None) -> Any:
        """Any Redis trouble (down, hanging, refused) becomes a 503 within the configured timeout."""
        try:
            async with asyncio.timeout(timeout or self.settings.redis_timeout_seconds * 2):
                return await work if inspect.isawaitable(work) else work
        except (RedisError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"Redis is unavailable: {exc!r}") from exc

    @staticmethod
    def _key(name: str, part: str) -> str:
        return f"ttc:corpus:{name}:{part}"

    @staticmethod
    def embedder(model: str) -> Embedder:
        return embedder(model)

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.match(name):
            raise InvalidRequest(
                "Corpus names are 1-64 characters: letters, digits, '_', '.', '-'.", param="name"
            )

    async def meta(self, name: str) -> dict[str, str]:
        self.check_name(name)
        meta: dict[bytes, bytes] = await self._call(self.redis.hgetall(self._key(name, "meta")))
        if not meta:
            self._indexes.pop(name, None)
            raise NotFound(f"There is no corpus {name!r}.", param="name")
        return {key.decode(): value.decode() for key, value in meta.items()}

    # -- corpora -------------------------------------------------------------------------------------------
    async def create(self, name: str, embedding_model: str | None) -> dict[str, Any]:
        self.check_name(name)
        model = embedding_model or self.settings.embedding_model
        allowed = dict.fromkeys([self.settings.embedding_model, *self.settings.embedding_models])
        if model not in allowed:  # operator-chosen only: a caller cannot load any folder of the disk
            raise InvalidRequest(
                f"Embedding model {model!r} is not allowed; the service offers: {', '.join(allowed)} "
                "(settings TTC_EMBEDDING_MODEL, TTC_EMBEDDING_MODELS).",
                param="embedding_model",
            )
        if not embedding_model_ok(model):
            raise InvalidRequest(
                f"Embedding model {model!r} is allowed but not available here: it must be "
                f"{DEFAULT_EMBEDDING_MODEL!r} or a local model folder.",
                param="embedding_model",
            )
        dimension = (await self.embedder(model).encode(["probe"])).shape[1]
        meta: dict[Any, Any] = {
            "name": name,
            "embedding_model": model,
            "dimension": str(dimension),
            "created": str(int(time.time())),
            "generation": uuid.uuid4().hex,
            "version": "0",
        }
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await self._call(pipe.watch(self._key(name, "meta")))
                if await self._call(pipe.exists(self._key(name, "meta"))):
                    raise InvalidRequest(
                        f"A corpus named {name!r} already exists.", param="name", code="exists"
                    )
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(self._key(name, "meta"), mapping=meta)
                pipe.sadd("ttc:corpora", name)
                await self._call(pipe.execute())
        except WatchError:
            raise InvalidRequest(
                f"A corpus named {name!r} already exists.", param="name", code="exists"
            ) from None
        return await self.describe(name)

    async def describe(self, name: str) -> dict[str, Any]:
        meta = await self.meta(name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hlen(self._key(name, "docs"))
            pipe.hlen(self._key(name, "chunks"))
            pipe.hlen(self._key(name, "demos"))
            documents, chunks, demos = await self._call(pipe.execute())
        return {
            "object": "corpus",
            "name": name,
            "embedding_model": meta["embedding_model"],
            "dimension": int(meta["dimension"]),
            "created": int(meta["created"]),
            "generation": meta.get("generation", ""),
            "version": int(meta.get("version", "0")),
            "documents": documents,
            "chunks": chunks,
            "demonstrations": demos,
        }

    async def names(self) -> list[str]:
        members: set[bytes] = await self._call(self.redis.smembers("ttc:corpora"))
        return sorted(member.decode() for member in members)

    async def delete(self, name: str) -> None:
        await self.meta(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._key(name, part) for part in ("meta", "docs", "chunks", "vectors", "demos")))
            pipe.srem("ttc:corpora", name)
            await self._call(pipe.execute())
        self._indexes.pop(name, None)

    # -- documents -----------------------------------------------------------------------------------------
    async def add(
        self,
        name: str,
        documents: Sequence[dict[str, Any]],
        demonstrations: Sequence[dict[str, str]] = (),
    ) -> dict[str, Any]:
        """Chunk, embed, then write the whole batch in one transaction (replacing documents with the same id)."""
        meta = await self.check_batch(name, documents, demonstrations)
        return await self._write(name, meta, documents, demonstrations)

    async def check_batch(
        self,
        name: str,
        documents: Sequence[dict[str, Any]],
        demonstrations: Sequence[dict[str, str]] = (),
    ) -> dict[str, str]:
        """Everything about a batch that can be checked before embedding it (so a background ingestion is
        refused at once, not failed later); returns the corpus's meta."""
        meta = await self.meta(name)
        limit = self.settings.corpus_max_batch
        if len(documents) + len(demonstrations) > limit:
            raise InvalidRequest(f"At most {limit} documents per request.", param="documents")
        seen: set[str] = set()
        for position, document in enumerate(documents):
            if not document["text"].strip():
                raise InvalidRequest(
                    f"documents[{position}].text is empty.", param=f"documents.{position}.text"
                )
            if document["id"] in seen:
                raise InvalidRequest(
                    f"Document id {document['id']!r} appears twice in this batch.",
                    param=f"documents.{position}.id",
                )
            seen.add(document["id"])
        return meta

    async def _embed(self, model: str, texts: list[str]) -> np.ndarray:
        """Embed in slices, so a large batch never holds the shared embedding model (which `auto` and ETS
        also use) for longer than one slice at a time."""
        parts = [
            await self.embedder(model).encode(texts[start : start + EMBED_SLICE])
            for start in range(0, len(texts), EMBED_SLICE)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)

    async def _write(
        self,
        name: str,
        meta: dict[str, str],
        documents: Sequence[dict[str, Any]],
        demonstrations: Sequence[dict[str, str]],
    ) -> dict[str, Any]:
        rows: list[tuple[str, dict[str, str]]] = []
        counts: dict[str, int] = {}
        for document in documents:
            pieces = chunk_text(document["text"], self.settings.chunk_words, self.settings.chunk_overlap)
            counts[document["id"]] = len(pieces)
            for index, piece in enumerate(pieces):
                key = f"{document['id']}#{index}"
                rows.append((key, {"doc_id": document["id"], "title": document["title"], "text": piece}))
        vectors = await self._embed(
            meta["embedding_model"], [f"{row['title']}\n{row['text']}" for _, row in rows]
        )
        docs_key, chunks_key = self._key(name, "docs"), self._key(name, "chunks")
        for _ in range(5):
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    await self._call(pipe.watch(self._key(name, "meta"), docs_key))
                    exists = await self._call(pipe.exists(self._key(name, "meta")))
                    if not exists:
                        raise NotFound(f"There is no corpus {name!r}.", param="name")
                    old = await self._call(pipe.hmget(docs_key, list(counts))) if counts else []
                    stale = [
                        f"{doc_id}#{index}"
                        for doc_id, raw in zip(counts, old, strict=True)
                        if raw is not None
                        for index in range(int(json.loads(raw)["chunks"]))
                    ]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if stale:
                        pipe.hdel(chunks_key, *stale)
                        pipe.hdel(self._key(name, "vectors"), *stale)
                    if documents:
                        pipe.hset(
                            docs_key,
                            mapping={
                                d["id"]: json.dumps(
                                    {
                                        "id": d["id"],
                                        "title": d["title"],
                                        "metadata": d.get("metadata") or {},
                                        "chunks": counts[d["id"]],
                                    }
                                )
                                for d in documents
                            },
                        )
                        pipe.hset(chunks_key, mapping={key: json.dumps(row) for key, row in rows})
                        pipe.hset(
                            self._key(name, "vectors"),
                            mapping={key: vectors[i].tobytes() for i, (key, _) in enumerate(rows)},
                        )
                    if demonstrations:
                        pipe.hset(
                            self._key(name, "demos"),
                            mapping={
                                demo.get("id") or f"demo-{i}": json.dumps(
                                    {"question": demo["question"], "answer": demo["answer"]}
                                )
                                for i, demo in enumerate(demonstrations)
                            },
                        )
                    pipe.hincrby(self._key(name, "meta"), "version", 1)
                    await self._call(pipe.execute())
                break
            except WatchError:
                continue
        else:
            raise StorageUnavailable("The corpus kept changing under this write; try again.")
        return {
            "object": "corpus.documents",
            "corpus": name,
            "documents": len(documents),
            "chunks": len(rows),
            "replaced": len(stale),
            "demonstrations": len(demonstrations),
        }

    # -- search --------------------------------------------------------------------------------------------
    async def _version(self, name: str) -> tuple[str, int]:
        generation, version = await self._call(
            self.redis.hmget(self._key(name, "meta"), ["generation", "version"])
        )
        if version is None:
            raise NotFound(f"There is no corpus {name!r}.", param="name")
        return (generation or b"").decode(), int(version)

    async def _load(self, name: str) -> CorpusIndex:
        """Read the corpus in pages (each Redis reply stays small and fast), and again if a writer
        changed it meanwhile, so the index is one consistent version."""
        dimension = int((await self.meta(name))["dimension"])
        for _ in range(5):
            generation, version = await self._version(name)
            raw_chunks: dict[bytes, bytes] = {}
            cursor = 0
            while True:
                cursor, page = await self._call(
                    self.redis.hscan(self._key(name, "chunks"), cursor, count=LOAD_PAGE)
                )
                raw_chunks.update(page)
                if cursor == 0:
                    break
            keys = sorted(raw_chunks)
            raw_vectors: list[bytes | None] = []
            for start in range(0, len(keys), LOAD_PAGE):
                page_keys = keys[start : start + LOAD_PAGE]
                raw_vectors.extend(await self._call(self.redis.hmget(self._key(name, "vectors"), page_keys)))
            if await self._version(name) == (generation, version) and all(v is not None for v in raw_vectors):
                break
        else:
            raise StorageUnavailable(f"Corpus {name!r} kept changing while it was being loaded; try again.")
        chunks = []
        for key in keys:
            row = json.loads(raw_chunks[key])
            chunks.append(Chunk(key.decode(), row["doc_id"], row["title"], row["text"]))
        matrix = (
            np.frombuffer(b"".join(v for v in raw_vectors if v is not None), dtype=np.float32).reshape(
                -1, dimension
            )
            if keys
            else np.zeros((0, dimension), dtype=np.float32)
        )
        return CorpusIndex(generation, version, chunks, matrix)

    async def index(self, name: str) -> CorpusIndex:
        """This process's index of the corpus, reloaded from Redis when another writer changed it."""
        meta = await self.meta(name)
        wanted = (meta.get("generation", ""), int(meta.get("version", "0")))
        current = self._indexes.get(name)
        if current is not None and (current.generation, current.version) == wanted:
            return current
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = self._indexes.get(name)
            if current is None or (current.generation, current.version) != wanted:
                current = await self._load(name)
                self._indexes[name] = current
        return current

    async def search(self, name: str, query: str, k: int) -> list[Chunk]:
        if not query.strip():
            raise InvalidRequest("query is empty.", param="query")
        index = await self.index(name)
        meta = await self.meta(name)
        vector = (await self.embedder(meta["embedding_model"]).encode([query]))[0]
        return index.search(vector, k)

    async def demonstrations(self, name: str, m: int) -> list[tuple[str, str]]:
        """The first `m` stored demonstrations (question, answer), in a stable order."""
        if m <= 0:
            return []
        raw: dict[bytes, bytes] = await self._call(self.redis.hgetall(self._key(name, "demos")))
        rows = [json.loads(raw[key]) for key in sorted(raw)][:m]
        return [(row["question"], row["answer"]) for row in rows]

    async def warm(self) -> None:
        """Rebuild every corpus's index from Redis (at start-up); failures only log, searches retry."""
        names = await self.names()
        for name in names:
            await self.index(name)
        if names:  # load the embedding model now rather than in the first search
            await self.embedder(self.settings.embedding_model).encode(["warm up"])


@dataclass(frozen=True)
class CorpusRetriever:
    """One corpus of a store, as the RAG strategies see it (`strategies.base.Retriever`)."""

    store: CorpusStore
    name: str

    async def search(self, query: str, k: int) -> list[Chunk]:
        return await self.store.search(self.name, query, k)

    async def demonstrations(self, m: int) -> list[tuple[str, str]]:
        return await self.store.demonstrations(self.name, m)
