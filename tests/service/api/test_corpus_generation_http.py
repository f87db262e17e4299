"""A corpus deleted and re-created must never let a replica serve its old documents: two engineless replicas
on the shared Redis, one caches the old corpus's index, the other deletes and re-creates it with the same
number of writes (so a version counter that restarts at 0 would match the cached one)."""

from __future__ import annotations

from pathlib import Path

import httpx

from loadtests.harness import stop
from tests.service.api.test_corpora_http import start_light_service, unique


def test_recreated_corpus_never_serves_old_documents(tmp_path: Path) -> None:
    first_url, first = start_light_service(tmp_path, {})
    second_url, second = start_light_service(tmp_path, {})
    name = unique("regen")
    old = {"id": "x", "title": "Old", "text": "The old corpus says the harbour of Velm opened in 1310."}
    new = {"id": "y", "title": "New", "text": "The new corpus says the mill of Arrow Creek burned in 1902."}
    try:
        with (
            httpx.Client(base_url=first_url, timeout=120) as a,
            httpx.Client(base_url=second_url, timeout=120) as b,
        ):
            assert a.post("/v1/corpora", json={"name": name}).status_code == 200
            assert a.post(f"/v1/corpora/{name}/documents", json={"documents": [old]}).status_code == 200
            hits = b.post(f"/v1/corpora/{name}/search", json={"query": "harbour", "k": 5}).json()["data"]
            assert [hit["document_id"] for hit in hits] == ["x"]  # b now holds an index of the old corpus
            assert a.delete(f"/v1/corpora/{name}").status_code == 200
            assert a.post("/v1/corpora", json={"name": name}).status_code == 200
            assert a.post(f"/v1/corpora/{name}/documents", json={"documents": [new]}).status_code == 200
            hits = b.post(f"/v1/corpora/{name}/search", json={"query": "harbour", "k": 5}).json()["data"]
            assert [hit["document_id"] for hit in hits] == ["y"], hits
            a.delete(f"/v1/corpora/{name}")
    finally:
        stop(first)
        stop(second)
