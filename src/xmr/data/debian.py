"""Debian packages a dataset is built from: their installed versions and installing them with apt-get.

The same steps as ``make data`` (``Makefile``): ``apt-get install -y PKGS``, and when that fails
``apt-get update`` then the install again; as root directly, else through ``sudo`` (non-interactive,
``sudo -n``, when there is no terminal to ask a password on). Nothing is installed when the files
are already there (:func:`ensure_debian_packages` asks ``present`` first).

Example::

    ensure_debian_packages(("openclipart-svg",), present=lambda: Path("/usr/share/openclipart/svg").is_dir(),
                           what="openclipart")
    package_versions(("openclipart-svg",))          # {'openclipart-svg': '1:0.18+dfsg-19'}
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

from xmr.errors import XmrError

log = logging.getLogger(__name__)

#: seconds one apt-get call may take (a download of a few hundred MB on a slow mirror)
APT_TIMEOUT_S = 3600


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each Debian package (None: not installed, or no ``dpkg-query`` here)."""
    dpkg = shutil.which("dpkg-query")
    out: dict[str, str | None] = {}
    for name in names:
        version = None
        if dpkg is not None:
            proc = subprocess.run([dpkg, "-W", "-f", "${Status}\t${Version}", name], capture_output=True,
                                  text=True, check=False)
            status, _, ver = proc.stdout.partition("\t")
            if proc.returncode == 0 and status.endswith(" installed") and ver.strip():
                version = ver.strip()
        out[name] = version
    return out


def _privilege_prefix(names: Sequence[str], what: str) -> list[str]:
    """``[]`` as root, ``["sudo"]`` (``["sudo", "-n"]`` without a terminal) otherwise.

    Raises:
        XmrError: not root and no sudo, naming the packages to install by hand.
    """
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        raise XmrError("{what}: the Debian packages {packages} are not installed, and installing them needs root "
                       "(no sudo here); install them as root (apt-get install {packages})",
                       what=what, packages=" ".join(names))
    return [sudo] if sys.stdin is not None and sys.stdin.isatty() else [sudo, "-n"]


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "sudo:"))]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _apt(prefix: list[str], apt: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """One apt-get call, never asking questions (sudo resets the environment: the setting goes as its argument)."""
    cmd = [*prefix, *(["DEBIAN_FRONTEND=noninteractive"] if prefix else []), apt, *args]
    log.info("running %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def apt_install(names: Sequence[str], *, what: str) -> None:
    """``apt-get install -y names``; on failure ``apt-get update`` and once more (as ``make data``).

    Raises:
        XmrError: no apt-get, no way to become root, or the install failed (apt-get's last error line).
    """
    apt = shutil.which("apt-get")
    if apt is None:
        raise XmrError("{what}: the Debian packages {packages} are not installed and there is no apt-get here; "
                       "install them (or copy their files into place) yourself", what=what, packages=" ".join(names))
    prefix = _privilege_prefix(names, what)
    install = ["install", "-y", "-q", *names]
    proc = _apt(prefix, apt, install)
    if proc.returncode != 0:
        update = _apt(prefix, apt, ["update", "-q"])
        proc = _apt(prefix, apt, install) if update.returncode == 0 else update
    if proc.returncode != 0:
        raise XmrError("{what}: apt-get install {packages} failed: {reason}", what=what, packages=" ".join(names),
                       reason=_last_line(proc))


def ensure_debian_packages(names: Sequence[str], *, present: Callable[[], bool], what: str) -> None:
    """Install ``names`` with :func:`apt_install` unless ``present()`` already says their files are there.

    Raises:
        XmrError: the install failed, or the files are still missing after it.
    """
    if present():
        return
    apt_install(names, what=what)
    if not present():
        raise XmrError("{what}: the Debian packages {packages} were installed but their files are not where "
                       "expected", what=what, packages=" ".join(names))
