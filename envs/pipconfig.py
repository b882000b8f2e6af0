"""pip's configuration, read the way pip reads it, so jobs get the sources `pip install` would.

uv reads none of pip's configuration; the runner reads it and passes on what
uv has an option for (see `IndexConfig.from_pip`). pip's rules:

- Files, in this order, a later one winning for the same option: site-wide
  (`$XDG_CONFIG_DIRS/pip/pip.conf`, default `/etc/xdg`, then `/etc/pip.conf`),
  per-user (`~/.pip/pip.conf`, then `$XDG_CONFIG_HOME/pip/pip.conf`, default
  `~/.config`; skipped when `PIP_CONFIG_FILE` names a file that exists),
  per-environment (`pip.conf` in the interpreter's prefix), `PIP_CONFIG_FILE`.
  `PIP_CONFIG_FILE=/dev/null` turns every file off.
- Of each file, `[global]` and `[install]`; `[install]` (from any file) wins
  over `[global]` (from any file), as it does for `pip install`.
- `PIP_<OPTION>` variables win over every file. Empty values count as unset.
- Option names: `index_url`, `--index-url` and `index-url` are one option.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from envs.errors import EnvError


class PipConfigError(EnvError):
    """A pip configuration file that cannot be read."""


@dataclass(frozen=True)
class Setting:
    """One pip option's value, and where pip would have taken it from."""

    value: str
    origin: str
    """`PIP_INDEX_URL`, or a file and its section: `/etc/pip.conf [global]`."""


SECTIONS = ("global", "install")


def normalize(name: str) -> str:
    """pip's own spelling of an option: lowercase, dashes, no leading `--`."""
    return name.lower().replace("_", "-").removeprefix("--")


def config_files(environ: Mapping[str, str], prefix: str = sys.prefix) -> list[Path]:
    """The files pip reads, in pip's order (later wins); [] when PIP_CONFIG_FILE is os.devnull."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or Path.home())
    xdg_dirs = (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep)
    files = [*(Path(d) / "pip" / "pip.conf" for d in xdg_dirs if d), Path("/etc/pip.conf")]
    if not (env_file and Path(env_file).exists()):
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    files.append(Path(prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def entries(environ: Mapping[str, str], prefix: str = sys.prefix) -> dict[str, Setting]:
    """What `pip config list` shows, for `pip install`: `global.OPTION`, `install.OPTION`
    (a later file winning) and `:env:.OPTION` for each `PIP_OPTION` variable."""
    found: dict[str, Setting] = {}
    for path in config_files(environ, prefix):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            what = str(exc).splitlines()[0]
            problem = f"pip configuration file {str(path)!r} is invalid: {what}"
            raise PipConfigError(problem) from None
        for section in SECTIONS:
            if parser.has_section(section):
                for key, value in parser.items(section):
                    found[f"{section}.{normalize(key)}"] = Setting(value, f"{path} [{section}]")
    for var, value in sorted(environ.items()):
        if var.startswith("PIP_"):
            found[f":env:.{normalize(var[4:])}"] = Setting(value, var)
    return found


def read(environ: Mapping[str, str], prefix: str = sys.prefix) -> dict[str, Setting]:
    """The options `pip install` takes from its configuration, by pip's name (`index-url`):
    `[install]` over `[global]`, `PIP_*` over both; empty values are unset."""
    listed = entries(environ, prefix)
    found: dict[str, Setting] = {}
    for section in (*SECTIONS, ":env:"):
        for key, setting in listed.items():
            name = key.partition(".")[2]
            if key.startswith(f"{section}.") and setting.value.strip():
                found[ALIASES.get(name, name)] = setting
    return found


ALIASES = {"default-timeout": "timeout"}
"""Options pip knows by two names."""

INERT = frozenset(
    {
        "no-cache-dir", "cache-dir", "disable-pip-version-check", "progress-bar", "no-color",
        "quiet", "verbose", "log", "no-input", "root-user-action", "break-system-packages",
        "exists-action", "require-virtualenv", "no-python-version-warning", "compile",
        "no-compile", "no-warn-script-location", "no-warn-conflicts", "resume-retries",
        "config-file",
    }
)  # fmt: skip
"""Options that change how pip talks or where it caches, not which packages an env gets."""


def is_true(value: str) -> bool:
    """pip's booleans (strtobool); an option given as a bare flag (`no-index =`) is unset."""
    return value.strip().lower() in {"1", "true", "yes", "y", "on", "t"}


def mask(url: str) -> str:
    """`url` with any password or token shown as `****`: safe to print and to record."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    shown = f"{user}:****" if sep else "****"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))
