"""What a built wheel carries besides Python modules.

Tests import gpu_seg from the source tree (an editable install), which finds every file whether or
not the wheel would ship it; so the data files are checked against ``pyproject.toml``'s
``package-data`` here: a shader missing from the wheel, or the ``py.typed`` marker (PEP 561: without
it, type checkers treat gpu_seg as untyped and its hints are lost to users), would otherwise pass
every test and fail only after ``pip install``.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import tomllib
from pathlib import Path

import gpu_seg

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(gpu_seg.__file__).resolve().parent


def _package_data() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]["package-data"]


def _shipped(path: Path, patterns: dict[str, list[str]]) -> bool:
    package = ".".join(path.parent.relative_to(PACKAGE.parent).parts)
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns.get(package, []))


def test_the_package_is_marked_as_typed():
    assert importlib.resources.files("gpu_seg").joinpath("py.typed").is_file()
    assert _shipped(PACKAGE / "py.typed", _package_data())


def test_every_data_file_of_the_package_is_in_the_wheel():
    compiled = (".pyc", ".nbi", ".nbc")  # Python's and numba's caches, never shipped
    data = [
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", *compiled) and "__pycache__" not in path.parts
    ]
    assert any(path.suffix == ".glsl" for path in data)
    missing = [str(path.relative_to(PACKAGE)) for path in data if not _shipped(path, _package_data())]
    assert not missing, f"not in pyproject.toml's package-data, so not in the wheel: {missing}"


def test_the_licence_text_ships_with_the_package():
    """Apache-2.0 asks for its text to go with every copy: the SPDX expression alone is not that."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        text = (ROOT / name).read_text()
        assert "Apache License" in text and "Version 2.0, January 2004" in text
