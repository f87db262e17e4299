"""/v1/corpora: document corpora for retrieval (create, add documents, inspect, search, delete)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from service.api import jobs
from service.api.auth import caller_of, require_admin
from service.api.protocol import CorpusCreate, CorpusSearch, DocumentsAdd
from service.api.state import ServiceState, StateDep
from service.api.tenancy import Tenant
from service.runtime.errors import StorageUnavailable
from service.store.corpora import CorpusStore

router = APIRouter(prefix="/v1/corpora")


def store_of(state: ServiceState) -> CorpusStore:
    if state.corpora is None:
        raise StorageUnavailable("Corpora are not available: the service has no Redis client yet.")
    return state.corpora


def get_store(state: StateDep) -> CorpusStore:
    return store_of(state)


StoreDep = Annotated[CorpusStore, Depends(get_store)]


@router.post("", summary="Create a corpus", dependencies=[Depends(require_admin)])
async def create(body: CorpusCreate, store: StoreDep) -> dict[str, Any]:
    return await store.create(body.name, body.embedding_model)


@router.get("", summary="List corpora")
async def list_corpora(store: StoreDep) -> dict[str, Any]:
    return {"object": "list", "data": [await store.describe(name) for name in await store.names()]}


@router.get("/{name}", summary="Describe a corpus")
async def describe(name: str, store: StoreDep) -> dict[str, Any]:
    return await store.describe(name)


@router.delete("/{name}", summary="Delete a corpus and its documents", dependencies=[Depends(require_admin)])
async def delete(name: str, store: StoreDep) -> dict[str, Any]:
    await store.delete(name)
    return {"object": "corpus.deleted", "name": name, "deleted": True}


async def run_ingest_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """A background ingestion (service/api/jobs.py runs it): what a synchronous one returns."""
    store = store_of(state)
    body = DocumentsAdd.model_validate({**request["body"], "background": False})
    return await store.add(
        request["corpus"],
        [document.model_dump() for document in body.documents],
        [demo.model_dump() for demo in body.demonstrations],
    )


@router.post(
    "/{name}/documents",
    summary="Add or replace documents (all or nothing)",
    dependencies=[Depends(require_admin)],
)
async def add(
    name: str,
    body: DocumentsAdd,
    store: StoreDep,
    request: Request,
    state: StateDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    documents = [document.model_dump() for document in body.documents]
    demonstrations = [demo.model_dump() for demo in body.demonstrations]
    if body.background:
        await store.check_batch(name, documents, demonstrations)  # a bad batch is a 400/404 now
        payload = {"corpus": name, "body": body.model_dump(mode="json", exclude_unset=True)}
        job = await jobs.submit(
            state,
            caller_of(request),
            "corpus.documents",
            f"/v1/corpora/{name}/documents",
            payload,
            idempotency_key,
        )
        return JSONResponse(job.model_dump(mode="json"), status_code=202)
    return await store.add(name, documents, demonstrations)


@router.post("/{name}/search", summary="Ranked chunks for a query (exact cosine)")
async def search(name: str, body: CorpusSearch, store: StoreDep) -> dict[str, Any]:
    hits = await store.search(name, body.query, body.k)
    return {
        "object": "list",
        "corpus": name,
        "data": [
            {
                "id": hit.id,
                "document_id": hit.doc_id,
                "title": hit.title,
                "text": hit.text,
                "score": hit.score,
            }
            for hit in hits
        ],
    }
