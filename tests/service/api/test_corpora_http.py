"""/v1/corpora against the real Redis: CRUD, replacement, bad input, all-or-nothing ingestion, a restart that
finds the corpus again, a second replica that sees another's writes, and a Redis that hangs."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.harness import stop
from tests.conftest import start_service


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


ENGINELESS = ("--engine", "none")


def start_light_service(tmp: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    """A service process without an engine (`--engine none`): corpora only, starts in seconds."""
    return start_service(tmp, *ENGINELESS, env=env, ready_path="/healthz", timeout=120)


@pytest.fixture
def corpus(client: httpx.Client) -> Iterator[str]:
    name = unique()
    response = client.post("/v1/corpora", json={"name": name})
    assert response.status_code == 200, response.text
    yield name
    client.delete(f"/v1/corpora/{name}")


DOCS = [
    {"id": "a", "title": "Quorvel", "text": "Quorvel is a town founded in 1422 on the Tasmir river."},
    {"id": "b", "title": "Bennith Dral", "text": "Bennith Dral is a clockmaker born in 1931 in Quorvel."},
    {"id": "c", "title": "Zentop", "text": "Zentop is a town known for its glass market, founded in 1788."},
]


def test_crud_search_and_replace(client: httpx.Client, corpus: str) -> None:
    added = client.post(f"/v1/corpora/{corpus}/documents", json={"documents": DOCS})
    assert added.status_code == 200, added.text
    assert added.json()["documents"] == 3
    described = client.get(f"/v1/corpora/{corpus}").json()
    assert described["documents"] == 3 and described["chunks"] == 3 and described["dimension"] == 384
    assert corpus in [c["name"] for c in client.get("/v1/corpora").json()["data"]]
    hits = client.post(
        f"/v1/corpora/{corpus}/search", json={"query": "Who is the clockmaker?", "k": 2}
    ).json()
    assert hits["data"][0]["document_id"] == "b"
    assert hits["data"][0]["score"] >= hits["data"][1]["score"]
    # Re-adding an id replaces the document (and its chunks) instead of duplicating it.
    long_text = " ".join(["Bennith Dral later moved to Zentop and built a tower clock."] * 60)
    client.post(
        f"/v1/corpora/{corpus}/documents",
        json={"documents": [{"id": "b", "title": "Bennith Dral", "text": long_text}]},
    )
    described = client.get(f"/v1/corpora/{corpus}").json()
    assert described["documents"] == 3 and described["chunks"] > 3
    hits = client.post(
        f"/v1/corpora/{corpus}/search", json={"query": "clockmaker born in 1931", "k": 50}
    ).json()
    assert all("born in 1931" not in hit["text"] for hit in hits["data"])
    assert client.delete(f"/v1/corpora/{corpus}").status_code == 200
    assert client.get(f"/v1/corpora/{corpus}").status_code == 404


def test_bad_input_is_a_clear_400_or_404(client: httpx.Client, corpus: str) -> None:
    missing = client.post(f"/v1/corpora/{unique('missing')}/documents", json={"documents": DOCS})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert client.post(f"/v1/corpora/{unique('missing')}/search", json={"query": "x"}).status_code == 404
    empty = client.post(
        f"/v1/corpora/{corpus}/documents", json={"documents": [DOCS[0], {**DOCS[1], "text": "  "}]}
    )
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "documents.1.text"
    # The failed batch left nothing behind: its valid first document was not written either.
    assert client.get(f"/v1/corpora/{corpus}").json()["documents"] == 0
    too_many = [{"id": str(i), "title": "", "text": "x"} for i in range(2001)]
    assert client.post(f"/v1/corpora/{corpus}/documents", json={"documents": too_many}).status_code == 400
    assert client.post("/v1/corpora", json={"name": corpus}).status_code == 400
    assert client.post("/v1/corpora", json={"name": "bad name!"}).status_code == 400
    assert client.post("/v1/corpora", json={"name": unique(), "embedding_model": "nope"}).status_code == 400
    # Only operator-allowed embedding models (issue 10): an existing folder on the disk is not enough.
    folder = client.post("/v1/corpora", json={"name": unique(), "embedding_model": str(Path.home())})
    assert folder.status_code == 400 and "all-MiniLM-L6-v2" in folder.json()["error"]["message"]
    assert folder.json()["error"]["param"] == "embedding_model"


def test_corpus_survives_restart_and_is_shared_by_replicas(client: httpx.Client, tmp_path: Path) -> None:
    name = unique("restart")
    url, process = start_light_service(tmp_path, {})
    try:
        with httpx.Client(base_url=url, timeout=120) as other:
            assert other.post("/v1/corpora", json={"name": name}).status_code == 200
            assert other.post(f"/v1/corpora/{name}/documents", json={"documents": DOCS}).status_code == 200
    finally:
        stop(process)
    url, process = start_light_service(tmp_path, {})
    try:
        with httpx.Client(base_url=url, timeout=120) as other:
            assert other.get(f"/v1/corpora/{name}").json()["documents"] == 3
            hits = other.post(
                f"/v1/corpora/{name}/search", json={"query": "Tasmir river town", "k": 1}
            ).json()
            assert hits["data"][0]["document_id"] == "a"
            # The session's service (another replica) sees the corpus, and a change made here.
            assert (
                client.post(f"/v1/corpora/{name}/search", json={"query": "glass", "k": 1}).json()["data"][0][
                    "document_id"
                ]
                == "c"
            )
            extra = {
                "id": "d",
                "title": "Mornwex",
                "text": "Mornwex is a lighthouse keeper on the Pellucid coast.",
            }
            other.post(f"/v1/corpora/{name}/documents", json={"documents": [extra]})
            hits = client.post(
                f"/v1/corpora/{name}/search", json={"query": "lighthouse keeper", "k": 1}
            ).json()
            assert hits["data"][0]["document_id"] == "d"
    finally:
        client.delete(f"/v1/corpora/{name}")
        stop(process)


def test_hanging_redis_is_a_prompt_503(tmp_path: Path) -> None:
    """A Redis that accepts connections and never answers must not hang requests."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url, process = start_light_service(
            tmp_path, {"TTC_REDIS_URL": f"redis://127.0.0.1:{port}/0", "TTC_REDIS_TIMEOUT_SECONDS": "0.5"}
        )
        try:
            started = time.monotonic()
            response = httpx.get(f"{url}/v1/corpora", timeout=30)
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "storage_unavailable"
            assert time.monotonic() - started < 5
        finally:
            stop(process)
