"""The installed layout: every source package is listed in pyproject.toml and maps to its folder."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg.get("package-dir", {})


def _folder(name: str, mapping: dict) -> Path:
    for pkg, folder in mapping.items():
        if name == pkg or name.startswith(pkg + "."):
            return ROOT / folder / Path(*name[len(pkg):].split(".")[1:])
    return ROOT / Path(*name.split("."))


def test_every_package_folder_is_declared():
    packages, mapping = _declared()
    folders = {_folder(p, mapping).resolve() for p in packages}
    for top in ("gru_hw", "boards", "sim"):
        for init in (ROOT / top).rglob("__init__.py"):
            assert init.parent.resolve() in folders, f"{init.parent} is not in pyproject packages"


def test_packages_import_from_their_folders():
    packages, mapping = _declared()
    for name in packages:
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve().parent == _folder(name, mapping).resolve(), name
