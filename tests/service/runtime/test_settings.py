from pathlib import Path

import pytest

from service.__main__ import parse_args
from service.runtime.settings import Settings

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    missing = [name for name in Settings.model_fields if f"`TTC_{name.upper()}`" not in readme]
    assert not missing


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_PORT", "9100")
    monkeypatch.setenv("TTC_MAX_SAMPLES", "7")
    settings = parse_args(["--port", "9200"])
    assert settings.port == 9200 and settings.max_samples == 7
