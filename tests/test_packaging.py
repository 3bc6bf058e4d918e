"""Packaging: the wheel carries every cutscope module; the public surface is pinned."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import zipfile

import pytest

import cutscope

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_modules() -> set[str]:
    """Every module the source tree defines, by its installed name."""
    mapping = {"cutscope": "src/cutscope", "cutscope.tracer": "tracer",
               "cutscope.integrations": "integrations", "cutscope.viewer": "viewer"}
    found = set()
    for pkg, folder in mapping.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, base)
            prefix = pkg if rel == "." else pkg + "." + rel.replace(os.sep, ".")
            if prefix != pkg and not os.path.exists(os.path.join(dirpath, "__init__.py")):
                continue
            for f in filenames:
                if f.endswith(".py"):
                    name = f[:-3]
                    found.add(prefix if name == "__init__" else f"{prefix}.{name}")
    # sub-mappings (e.g. cutscope.viewer.screens -> viewer/screens) are covered by the walk
    return {m for m in found if not m.startswith("cutscope._boot.sitecustomize")}


def test_wheel_contains_and_imports_every_module(tmp_path):
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                        str(tmp_path), ROOT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(tmp_path / wheel) as z:
        z.extractall(unpacked)
        names = z.namelist()
    in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in names
                if n.startswith("cutscope/") and n.endswith(".py")}
    missing = source_modules() - in_wheel
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert any(n.endswith("entry_points.txt") for n in names)
    # Import every module from the unpacked wheel, not from the source tree.
    code = (
        "import importlib, sys, os\n"
        f"sys.path.insert(0, {str(unpacked)!r})\n"
        "mods = sys.argv[1:]\n"
        "for m in mods:\n"
        "    mod = importlib.import_module(m)\n"
        f"    assert mod.__file__.startswith({str(unpacked)!r}), (m, mod.__file__)\n"
        "print(len(mods))\n"
    )
    # (sitecustomize runs at interpreter start and __main__ runs the CLI: not imported here)
    mods = sorted(m for m in in_wheel if not m.endswith(("sitecustomize", "__main__")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                       timeout=120, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.strip()) == len(mods)


def test_public_api_is_pinned():
    assert sorted(cutscope.__all__) == sorted([
        "start", "stop", "process", "state", "event", "safepoint", "snapshot", "Snapshot",
        "active", "Tracer", "__version__",
    ])
    for name in cutscope.__all__:
        assert hasattr(cutscope, name), name


def _installed_layout(dest):
    """The package tree as an install lays it out (pyproject's package-dir mapping),
    made of symbolic links to this checkout: import-linter reads a package from one
    directory tree, which the editable install does not have."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        conf = tomllib.load(f)["tool"]["setuptools"]
    folders = dict(conf["package-dir"])
    for package in sorted(conf["packages"]):
        parent, _, last = package.rpartition(".")
        folder = folders.setdefault(package, os.path.join(folders.get(parent, parent), last))
        target = os.path.join(dest, *package.split("."))
        os.makedirs(target, exist_ok=True)
        src = os.path.join(ROOT, folder)
        for name in os.listdir(src):
            if name.endswith(".py") and not os.path.exists(os.path.join(target, name)):
                os.symlink(os.path.join(src, name), os.path.join(target, name))


def test_the_rooms_keep_their_contracts(tmp_path):
    """import-linter's contracts of pyproject.toml: the tracer imports neither the
    integrations nor the viewer, those two do not import each other, no room imports
    the front door, and no room has an import cycle."""
    _installed_layout(str(tmp_path))
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([lint, os.path.join(ROOT, "pyproject.toml")], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 4 kept" in r.stdout, r.stdout[-2000:]


def test_the_tracer_room_is_reachable_by_its_dotted_name():
    import cutscope.tracer as room  # not shadowed by a front-door function

    assert room.__name__ == "cutscope.tracer"
    assert cutscope.active() is None
