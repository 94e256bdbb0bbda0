"""A local stand-in for `python:3.11-slim-bookworm`, made with debootstrap, for hosts without a registry.

The templates' Dockerfiles start `FROM python:3.11-slim-bookworm`. Where no
registry can be reached (this project's CI), `ensure()` builds a Debian
bookworm root filesystem from Debian's own packages (python3, venv,
ca-certificates, `python` as a name for python3) and imports it under that very
name, so the Dockerfiles build unchanged, with their default BASE_IMAGE. It is
made once and found in podman's storage afterwards.

It also carries this host's package settings, which the published templates
must not depend on: the extra CA certificates of a TLS-intercepting proxy, and
the host's pip configuration (`cert`, `find-links`, `extra-index-url`), whose
local folders `build_volumes()` mounts read-only into each build.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from .podman import Podman, PodmanError

NAME = "docker.io/library/python:3.11-slim-bookworm"
LABEL = "com.aigc-functions.stand-in"  # marks our image, so a real one is never replaced or mistaken
PACKAGES = "python3,python3-venv,ca-certificates,python-is-python3"
MIRROR = "http://deb.debian.org/debian"
HOST_CAS = Path("/usr/local/share/ca-certificates")
PIP_KEYS = ("cert", "find-links", "extra-index-url")


def host_pip_settings() -> dict[str, str]:
    """The host's global pip settings that a build inside a container needs too (pip's own files, then env)."""
    found: dict[str, str] = {}
    parser = configparser.ConfigParser()
    for path in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.expanduser("~/.config/pip/pip.conf")):
        parser.read(path)
    for key in PIP_KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_")) or parser.get("global", key, fallback="")
        if value.strip():
            found[key] = " ".join(value.split())
    return found


def _local_dirs(settings: dict[str, str]) -> list[str]:
    dirs = []
    for key in ("find-links", "extra-index-url"):
        for item in settings.get(key, "").split():
            path = urlparse(item).path if item.startswith("file://") else item
            if path.startswith("/") and os.path.isdir(path):
                # an index at /opt/pypi/simple links its files from /opt/pypi: mount the parent of a simple/ index
                root = os.path.dirname(path.rstrip("/")) if path.rstrip("/").endswith("/simple") else path
                dirs.append(root)
    return sorted(set(dirs))


def build_volumes(podman: Podman, image: str = NAME) -> list[str]:
    """Read-only mounts of the host's local pip folders, for builds on our stand-in (none for a real base)."""
    if not podman.image_exists(image) or LABEL not in podman.image_labels(image):
        return []
    return [f"{d}:{d}:ro" for d in _local_dirs(host_pip_settings())]


def ensure(podman: Podman, log=print) -> str:
    """The base image's name, after building the stand-in if no image of that name exists."""
    if podman.image_exists(NAME):
        return NAME
    if shutil.which("debootstrap") is None:
        raise PodmanError(f"{NAME} is not in podman's storage and debootstrap is missing to make a stand-in "
                          "(Debian: apt-get install debootstrap), or pull the real image")
    work = Path(tempfile.mkdtemp(prefix="aigc-base-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    rootfs = work / "rootfs"
    try:
        log(f"making {NAME} with debootstrap (bookworm, {PACKAGES}); once per machine, 1-3 min")
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(rootfs),
                        MIRROR], check=True, stdout=subprocess.DEVNULL)
        _host_settings(rootfs)
        # the official Debian images' apt setting: no .deb archives kept in layers
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'
            'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        changes = ["ENV LANG=C.UTF-8", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   'CMD ["python3"]', f"LABEL {LABEL}=debootstrap"]
        args = ["podman", "import", *[a for c in changes for a in ("--change", c)], "-", NAME]
        imported = subprocess.run(args, env=podman.env, stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise PodmanError(f"importing the stand-in base failed: {imported.stderr[-2000:]}")
        log(f"{NAME}: stand-in imported ({podman.image_size(NAME) / 1e6:.0f} MB)")
        return NAME
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _host_settings(rootfs: Path) -> None:
    extra = sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []
    if extra:
        dest = rootfs / HOST_CAS.relative_to("/")
        dest.mkdir(parents=True, exist_ok=True)
        for cert in extra:
            shutil.copyfile(cert, dest / cert.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, stdout=subprocess.DEVNULL)
    settings = host_pip_settings()
    if extra:
        settings["cert"] = "/etc/ssl/certs/ca-certificates.crt"
    lines = ["[global]"] + [f"{k} = {v}" for k, v in sorted(settings.items())]
    (rootfs / "etc/pip.conf").write_text("\n".join(lines) + "\n")
