"""A client that goes away stops its engine work (vLLM's reliability case), and the server stays healthy."""

import json
import socket
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.engine

LONG_WORK = {
    "prompt": "Write a very long story about a dragon and a lighthouse.",
    "strategy": "best_of_n",
    "params": {"n": 16},
    "sampling": {"max_tokens": 1500, "temperature": 1.0},
    "answer": {"type": "text"},
}


def engine_requests_running(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("ttc_engine_requests_running"):
            return float(line.split()[-1])
    raise AssertionError("ttc_engine_requests_running is missing from /metrics")


def wait_until_idle(client: httpx.Client, seconds: float = 120.0) -> float:
    deadline = time.monotonic() + seconds
    running = engine_requests_running(client)
    while running > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        running = engine_requests_running(client)
    return running


def send_and_hang_up(
    service_url: str, path: str, body: dict[str, object], stream: bool, seen_busy: threading.Event
) -> None:
    """Send long work over a bare socket and close it once the engine is busy with it (and, when streaming,
    once the response has started), so the hang-up lands mid-work however fast or loaded the machine is."""
    url = httpx.URL(service_url)
    assert url.host and url.port
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=60.0) as connection:
        connection.sendall(head.encode() + payload)
        if not seen_busy.wait(60.0):
            connection.settimeout(5.0)
            try:
                answered = connection.recv(4096)
            except TimeoutError:
                answered = b"(nothing within 5 s)"
            raise AssertionError(
                f"the engine never started the work; the server answered: {answered[:600]!r}"
            )
        received = b""
        while stream and b"\r\n\r\n" not in received:
            chunk = connection.recv(4096)
            assert chunk, "the server closed the stream before hanging up"
            received += chunk


@pytest.mark.parametrize(
    ("path", "body", "stream"),
    [
        ("/v1/solve", LONG_WORK, False),
        ("/v1/solve", {**LONG_WORK, "stream": True}, True),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 1500,
                "n": 8,
                "ignore_eos": True,
            },
            False,
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 1500,
                "ignore_eos": True,  # a short story could end before the watcher saw it start
                "stream": True,
            },
            True,
        ),
        # Calibrations keep the engine busy for minutes (issue 10): they too stop when their client leaves.
        ("/v1/allocator/calibrate-engine", {"batch_sizes": [64, 64], "max_tokens": [512, 512]}, False),
        (
            "/v1/verifiers/reference/calibrate",
            {
                "examples": [
                    {"question": f"Tell a long story number {i}.", "answer": str(i)} for i in range(8)
                ],
                "samples_per_question": 16,
                "sampling": {"max_tokens": 1500, "temperature": 1.0},
            },
            False,
        ),
    ],
    ids=["solve", "solve-stream", "chat", "chat-stream", "calibrate-engine", "calibrate-verifier"],
)
def test_disconnect_aborts_engine_work(
    client: httpx.Client, service_url: str, path: str, body: dict[str, object], stream: bool
) -> None:
    assert wait_until_idle(client) == 0
    seen_busy = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60.0
        with httpx.Client(base_url=service_url, timeout=10.0) as watcher:
            while time.monotonic() < deadline:
                try:
                    busy = engine_requests_running(watcher) > 0
                except httpx.TimeoutException:  # a slow scrape on a loaded machine is not what this tests
                    continue
                if busy:
                    seen_busy.set()
                    return
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        send_and_hang_up(service_url, path, body, stream, seen_busy)
    finally:
        watcher.join()
    # Left alone, this work runs for minutes (16 x 1500 tokens); aborted, it is gone within seconds (more
    # when other work shares the machine).
    assert wait_until_idle(client, 45.0) == 0, "the engine kept working for a client that left"
    fresh = client.post(
        "/v1/solve", json={"prompt": "What is 2 + 2?", "strategy": "none", "sampling": {"max_tokens": 8}}
    )
    assert fresh.status_code == 200
