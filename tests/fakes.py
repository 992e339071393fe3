"""Test doubles for the package registries' clients: a fake ``npm`` that serves local tarballs (offline)."""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

FAKE_NPM = """#!{python}
import os, shutil, sys
spec = sys.argv[2]
with open(os.environ["FAKE_NPM_LOG"], "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
stem = spec.lstrip("@").replace("/", "-").replace("@", "-")
src = os.path.join(os.environ["FAKE_NPM_SRC"], stem + ".tgz")
if sys.argv[1] != "pack" or not os.path.exists(src):
    sys.stderr.write("npm warn config something\\nnpm error code E404\\n"
                     "npm error 404 Not Found - " + spec + "\\n")
    sys.exit(1)
shutil.copy(src, os.getcwd())
print(os.path.basename(src))
"""


def tarball_stem(name: str, version: str) -> str:
    """What the fake npm serves ``name@version`` from: ``@iconify/json@2.2.535`` -> ``iconify-json-2.2.535``."""
    return f"{name}@{version}".lstrip("@").replace("/", "-").replace("@", "-")


def install_fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packages: Mapping[str, Path]
                     ) -> tuple[Path, Path]:
    """Put a fake ``npm`` first on PATH serving each ``{tarball stem: package folder}`` as a tarball.

    Returns ``(registry folder, log)``: the tarballs (delete one to make its fetch fail) and one
    line per npm call (``pack <spec> ...``).
    """
    registry = tmp_path / "registry"
    registry.mkdir()
    for stem, folder in packages.items():
        with tarfile.open(registry / f"{stem}.tgz", "w:gz") as tar:
            tar.add(folder, arcname="package")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "npm.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_NPM_SRC", str(registry))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    return registry, log
