"""A typed reader over TOML tables that reports errors by file and key path.

Every section parser of the policy uses `Section`, so that every refusal has the
same shape: ``policies/x.toml: commands.rules[2].pattern: <what is wrong>``.
A parser reads the keys it knows and then calls `done()`, which refuses any key
it did not read: a misspelt key in a security policy must not be silently ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_MISSING: Any = object()


class PolicyError(Exception):
    """A policy file is invalid. `str()` names the file and the key path."""

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {message}")


def read_toml(path: Path, what: str = "policy file") -> tuple[dict[str, Any], bytes]:
    """A TOML file's table and raw bytes; `PolicyError` naming the file when it cannot be read."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PolicyError(path, "", f"cannot read {what}: {e.strerror or e}") from None
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except UnicodeDecodeError as e:
        raise PolicyError(path, "", f"not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(path, "", f"not valid TOML: {e}") from None


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Section:
    """One TOML table of a policy file, with the key path that leads to it."""

    def __init__(self, table: dict[str, Any], file: str | Path, path: str = "", base_dir: Path | None = None):
        if not isinstance(table, dict):
            raise PolicyError(file, path, f"expected a table, got {_type_name(table)}")
        self.table = table
        self.file = str(file)
        self.path = path
        self.base_dir = base_dir if base_dir is not None else Path(file).resolve().parent
        self._read: set[str] = set()

    # -- key paths and errors ----------------------------------------------------------
    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> PolicyError:
        return PolicyError(self.file, self.key_path(key) if key else self.path, message)

    def has(self, key: str) -> bool:
        return key in self.table

    def keys(self) -> Iterable[str]:
        return self.table.keys()

    def _get(self, key: str, default: Any, expected: tuple[type, ...], what: str) -> Any:
        self._read.add(key)
        if key not in self.table:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        value = self.table[key]
        # bool is an int in Python; TOML keeps them apart, so do we.
        if isinstance(value, bool) and bool not in expected:
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, expected):
            raise self.error(key, f"expected {what}, got {_type_name(value)}")
        return value

    # -- scalars ------------------------------------------------------------------------
    def str(
        self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None, nonempty: bool = True
    ) -> Any:
        value = self._get(key, default, (str,), "a string")
        if value is default and key not in self.table:
            return value
        if nonempty and not value.strip():
            raise self.error(key, "must not be empty")
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                raise self.error(key, f"must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
        return value

    def int(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None) -> Any:
        value = self._get(key, default, (int,), "an integer")
        if value is default and key not in self.table:
            return value
        if min is not None and value < min:
            raise self.error(key, f"must be at least {min}; got {value}")
        if max is not None and value > max:
            raise self.error(key, f"must be at most {max}; got {value}")
        return value

    def float(self, key: str, default: Any = _MISSING, *, min: float | None = None, max: float | None = None) -> Any:
        value = self._get(key, default, (int, float), "a number")
        if value is default and key not in self.table:
            return value
        value = float(value)
        if min is not None and value < min:
            raise self.error(key, f"must be at least {min}; got {value}")
        if max is not None and value > max:
            raise self.error(key, f"must be at most {max}; got {value}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, (bool,), "a boolean (true or false)")

    def str_list(self, key: str, default: Any = _MISSING, *, nonempty_items: bool = True) -> Any:
        value = self._get(key, default, (list,), "an array of strings")
        if value is default and key not in self.table:
            return value
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise PolicyError(self.file, f"{self.key_path(key)}[{i}]", f"expected a string, got {_type_name(item)}")
            if nonempty_items and not item.strip():
                raise PolicyError(self.file, f"{self.key_path(key)}[{i}]", "must not be empty")
        return tuple(value)

    def path_value(self, key: str, default: Any = _MISSING) -> Any:
        """A filesystem path; relative paths resolve against the policy file's folder."""
        value = self.str(key, default)
        if value is default and key not in self.table:
            return value
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._read.add(key)
        if key not in self.table:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return self.table[key]

    # -- nesting ------------------------------------------------------------------------
    def section(self, key: str, *, required: bool = False) -> Section | None:
        value = self._get(key, _MISSING if required else None, (dict,), "a table")
        if value is None:
            return None
        return Section(value, self.file, self.key_path(key), self.base_dir)

    def sections(self, key: str) -> list[Section]:
        """An array of tables (``[[key]]``); absent means empty."""
        value = self._get(key, [], (list,), "an array of tables")
        out = []
        for i, item in enumerate(value):
            item_path = f"{self.key_path(key)}[{i}]"
            if not isinstance(item, dict):
                raise PolicyError(self.file, item_path, f"expected a table, got {_type_name(item)}")
            out.append(Section(item, self.file, item_path, self.base_dir))
        return out

    def named_sections(self, key: str) -> dict[str, Section]:
        """A table of tables (``[key.NAME]``); absent means empty."""
        value = self._get(key, {}, (dict,), "a table")
        out = {}
        for name, item in value.items():
            item_path = f"{self.key_path(key)}.{name}"
            if not isinstance(item, dict):
                raise PolicyError(self.file, item_path, f"expected a table, got {_type_name(item)}")
            out[name] = Section(item, self.file, item_path, self.base_dir)
        return out

    # -- completeness -------------------------------------------------------------------
    def unsupported(self, key: str) -> None:
        """Refuse a key this build does not enforce yet, rather than ignore it."""
        if key in self.table:
            raise self.error(key, "not supported by this version of Gatehouse (it would not be enforced)")
        self._read.add(key)

    def done(self) -> None:
        unknown = [k for k in self.table if k not in self._read]
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(unknown[0], f"unknown key (known keys here: {known})")
