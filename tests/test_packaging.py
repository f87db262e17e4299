"""A non-editable install (a container image) carries the fitted data files the service reads at run time."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "strategies", "verifiers")


def test_the_wheel_holds_every_package_and_data_file(tmp_path: Path) -> None:
    source = (
        tmp_path / "source"
    )  # a copy: setuptools would leave build/ in the checkout, and reuse it next time
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path,
            source,
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("ttc_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.suffix in (".py", ".json")
    }
    assert any(name.endswith(".json") for name in wanted)
    assert wanted <= names, sorted(wanted - names)
