"""The package as an index shows it: one version everywhere, the wheel's
metadata (name, summary, README, license and its files, classifiers, tags),
and the release workflow that builds the wheels for every platform.

The wheel is the one tests/python/run.sh installed (``TOKENSTORE_WHEEL``);
without it those tests say SKIPPED, and fail with CI=true."""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import re
import zipfile

import pytest
from real_servers import missing

import tokenstore
from tokenstore import _native

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..")
ROOT = os.path.join(PYTHON_DIR, "..")
WORKFLOW = os.path.join(ROOT, ".github", "workflows", "release.yml")


def toml(path: str) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


PYPROJECT = toml(os.path.join(PYTHON_DIR, "pyproject.toml"))["project"]
CRATE = toml(os.path.join(PYTHON_DIR, "Cargo.toml"))["package"]
ENGINE = toml(os.path.join(ROOT, "Cargo.toml"))["package"]


def test_the_version_is_the_crates_everywhere():
    assert re.fullmatch(r"\d+\.\d+\.\d+([-.+].*)?", tokenstore.__version__), tokenstore.__version__
    assert tokenstore.__version__ == _native.__version__ == CRATE["version"]
    assert importlib.metadata.version("tokenstore") == tokenstore.__version__
    # The binding is released with the engine it wraps.
    assert CRATE["version"] == ENGINE["version"]
    assert "version" in PYPROJECT["dynamic"] and "version" not in PYPROJECT


def built_wheel() -> str:
    wheel = os.environ.get("TOKENSTORE_WHEEL")
    if not wheel:
        missing("no built wheel to check (TOKENSTORE_WHEEL; tests/python/run.sh sets it)")
    return wheel


def test_the_wheels_metadata_is_what_an_index_shows():
    wheel = built_wheel()
    with zipfile.ZipFile(wheel) as z:
        dist_info = f"tokenstore-{tokenstore.__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(z.read(f"{dist_info}/METADATA").decode())
        names = z.namelist()
        licenses = {name: z.read(f"{dist_info}/licenses/{name}").decode() for name in metadata.get_all("License-File")}

    assert metadata["Name"] == "tokenstore"
    assert metadata["Version"] == tokenstore.__version__
    assert metadata["Summary"] == PYPROJECT["description"]
    # PEP 639: the SPDX expression and the files, as the crates declare it.
    assert tuple(int(n) for n in metadata["Metadata-Version"].split(".")) >= (2, 4)
    assert metadata["License-Expression"] == ENGINE["license"] == CRATE["license"] == "MIT OR Apache-2.0"
    assert sorted(licenses) == ["LICENSE-APACHE", "LICENSE-MIT"]
    for name, text in licenses.items():
        with open(os.path.join(PYTHON_DIR, name)) as f:
            assert text == f.read()
    assert "Permission is hereby granted" in licenses["LICENSE-MIT"]
    assert "Apache License" in licenses["LICENSE-APACHE"] and "Version 2.0" in licenses["LICENSE-APACHE"]
    assert metadata["Requires-Python"] == PYPROJECT["requires-python"] == ">=3.9"
    assert metadata.get_all("Classifier") == PYPROJECT["classifiers"]
    # No license classifier beside the expression (PEP 639 forbids both).
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")]
    # The README is the long description, whole.
    assert metadata["Description-Content-Type"].startswith("text/markdown")
    with open(os.path.join(PYTHON_DIR, "README.md")) as f:
        assert metadata.get_payload().strip() == f.read().strip()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert urls == PYPROJECT.get("urls", {})
    assert set(metadata.get_all("Provides-Extra")) == set(PYPROJECT["optional-dependencies"])

    # What is inside: the package with its stub and marker, nothing else.
    package = sorted(n for n in names if not n.startswith(dist_info))
    assert [n for n in package if not re.fullmatch(r"tokenstore/_native\.abi3\.so", n)] == [
        "tokenstore/__init__.py",
        "tokenstore/_native.pyi",
        "tokenstore/py.typed",
        "tokenstore/zoho.py",
    ]
    assert "tokenstore/_native.abi3.so" in package


def test_the_wheel_is_abi3_from_the_minimum_python_for_manylinux():
    wheel = built_wheel()
    with zipfile.ZipFile(wheel) as z:
        info = email.parser.Parser().parsestr(z.read(f"tokenstore-{tokenstore.__version__}.dist-info/WHEEL").decode())
    minimum = PYPROJECT["requires-python"].removeprefix(">=").replace(".", "")
    tags = info.get_all("Tag")
    assert info["Root-Is-Purelib"] == "false"
    assert tags and all(t.startswith(f"cp{minimum}-abi3-") for t in tags), tags
    platforms = {t.split("-")[2] for t in tags}
    assert platforms & {"manylinux_2_17_x86_64", "manylinux_2_17_aarch64"}, platforms
    # The file name carries the same tags (pip chooses by the name).
    name = os.path.basename(wheel)
    assert name.startswith(f"tokenstore-{tokenstore.__version__}-cp{minimum}-abi3-")
    assert set(name.removesuffix(".whl").split("-")[4].split(".")) == platforms


def test_the_release_workflow_builds_every_platform_and_publishes_on_tags():
    try:
        import yaml
    except ImportError:
        missing("PyYAML, to read the release workflow")
    with open(WORKFLOW) as f:
        workflow = yaml.safe_load(f)
    # YAML 1.1 reads the key `on` as True.
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    jobs = workflow["jobs"]
    assert set(jobs) == {"linux", "macos", "windows", "sdist", "publish"}

    def maturin_steps(job: str) -> list:
        steps = [s for s in jobs[job]["steps"] if s.get("uses", "").startswith("PyO3/maturin-action@")]
        assert steps, job
        for step in steps:
            assert step["with"]["working-directory"] == "python", job
            assert step["with"]["maturin-version"] == "${{ env.MATURIN_VERSION }}", job
        return steps

    with open(os.path.join(PYTHON_DIR, "build-wheel.sh")) as f:
        pinned = re.search(r"^maturin_version=(\S+)$", f.read(), re.M).group(1)
    assert workflow["env"]["MATURIN_VERSION"] == pinned

    linux = jobs["linux"]["strategy"]["matrix"]
    assert set(linux["target"]) == {"x86_64", "aarch64"}
    assert set(linux["libc"]) == {"manylinux2014", "musllinux_1_2"}
    assert maturin_steps("linux")[0]["with"]["manylinux"] == "${{ matrix.libc }}"
    macos = {p["target"] for p in jobs["macos"]["strategy"]["matrix"]["platform"]}
    assert macos == {"x86_64", "aarch64"}
    assert jobs["windows"]["strategy"]["matrix"]["target"] == ["x64"]
    for job in ("linux", "macos", "windows"):
        assert "--release" in maturin_steps(job)[0]["with"]["args"]
    assert maturin_steps("sdist")[0]["with"]["command"] == "sdist"

    publish = jobs["publish"]
    assert set(publish["needs"]) == {"linux", "macos", "windows", "sdist"}
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/')"
    assert publish["permissions"] == {"id-token": "write"}
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in publish["steps"])
