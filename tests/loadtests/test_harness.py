"""The benchmark harness without an engine: figures, the JSON line, and real child processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loadtests.harness import percentile, print_result, start_process, stop, wait_ready


def test_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.99) == 5.0
    assert percentile([7.0], 0.95) == 7.0


def test_print_result_ends_with_one_json_line_and_saves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {"benchmark": "x", "rows": [1, 2]}
    print_result(result, tmp_path / "sub" / "result.json")
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[-1]) == result
    assert json.loads((tmp_path / "sub" / "result.json").read_text()) == result


def test_wait_ready_fails_fast_with_the_log_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = [sys.executable, "-c", "import sys; print('engine exploded', flush=True); sys.exit(3)"]
    process = start_process(command, log)
    process.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"(?s)code 3.*engine exploded"):
        wait_ready("http://127.0.0.1:9", process, timeout=30, log_path=log)


def test_stop_ends_the_process_group(tmp_path: Path) -> None:
    process = start_process([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log")
    stop(process)
    assert process.poll() is not None
    stop(process)  # stopping twice is harmless
    stop(None)
