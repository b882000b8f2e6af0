"""Tiny wheels built by the tests themselves, so no test needs the internet."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path


def make_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    deps: Sequence[str] = (),
    scripts: dict[str, str] | None = None,
    body: str = "",
) -> Path:
    """Write a pure-Python wheel `name==version` with an importable module of the same name."""
    dist = name.replace("-", "_")
    module = dist.lower()
    files = {f"{module}/__init__.py": f"__version__ = {version!r}\n{body}"}
    info = f"{dist}-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {d}\n" for d in deps)
    )
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        files[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items()
        )
    record = []
    for path, content in files.items():
        raw = content.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(raw)}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, content in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), content)
    return out


def populate(dest: Path) -> Path:
    """The standard test wheelhouse."""
    make_wheel(dest, "dep-a", "1.0")
    make_wheel(dest, "dep-a", "2.0")
    make_wheel(
        dest,
        "tiny-pkg",
        "1.0",
        deps=["dep-a>=1"],
        scripts={"tiny": "tiny_pkg:main"},
        body="def main():\n    print('tiny ok')\n",
    )
    make_wheel(dest, "tiny-pkg", "0.5", deps=["dep-a<2"])
    make_wheel(dest, "other-pkg", "1.0", body="import dep_a\n", deps=["dep-a"])
    return dest
