"""What a command rule looks at in a tool call: a field of the tool input, the text it is
matched as, file paths normalised, and the globs that match tool names and paths.

Fields. A rule's ``field`` is a top-level key of the input (``command``, ``file_path``) or a
JSON pointer (RFC 6901, starting with ``/``: ``/edits/0/file_path``). No field: the whole
input. A value that is not a string is matched as its canonical JSON
(`gatehouse.recording.canonical.canonical_json`), the same bytes the call hash is made of.

Globs (`compile_glob`): ``*``, ``?``, ``[abc]`` / ``[!abc]`` and ``{a,b}`` alternatives (which
may nest), ``\\`` escapes the next character. For tool names every character is alike
(``mcp__*`` matches ``mcp__github__create_issue``), case-sensitive. For paths, ``*`` and
``?`` do not cross ``/`` while ``**`` does (``**/`` is any number of folders, none included),
and matching ignores case (macOS and Windows file systems do: ``.GitHub/Workflows/x`` is the
same folder there). A relative path glob is anchored at any folder boundary, because an
agent names a file by an absolute path (Claude Code's Write and Edit tools always do) that
the gateway cannot resolve: ``.github/workflows/*`` matches ``.github/workflows/ci.yml``,
``/repo/.github/workflows/ci.yml`` and ``./a/../.github/workflows/ci.yml``. A glob that starts
with ``/`` or ``~`` is anchored at the start.

Paths (`normalise_path`) are normalised lexically, without touching a file system (the files
are on the developer's machine, not the gateway's): backslashes become ``/``, duplicate
slashes and ``.`` folders go, ``..`` removes the folder before it, and a leading ``$HOME`` or
``${HOME}`` becomes ``~``. A home folder spelt out (``/home/u``, ``/Users/u``) stays as it is,
so a rule about the home folder uses ``**/.ssh/**``, which matches ``~/.ssh/x``,
``$HOME/.ssh/x`` and ``/home/u/.ssh/x`` alike. Pure (no mitmproxy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import re2

from gatehouse.recording.canonical import canonical_json, json_safe

_MISSING: Any = object()


_RE2_MAX_MEM = 16 << 20


def re2_options() -> Any:
    """The options of every pattern and glob of a command rule: a memory budget, no logging."""
    opts = re2.Options()
    opts.max_mem = _RE2_MAX_MEM
    opts.log_errors = False
    return opts


def re2_message(e: Exception) -> str:
    """RE2's own words for why a pattern does not compile (it raises them as bytes)."""
    arg = e.args[0] if e.args else e
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


class GlobError(ValueError):
    """A glob that cannot be compiled (an unbalanced ``[`` or ``{``, a trailing ``\\``)."""


# -- fields ------------------------------------------------------------------------------


def pointer_problem(field: str) -> str | None:
    """Why `field` is not a usable key or JSON pointer, or None when it is."""
    if not field:
        return "must not be empty"
    if field.startswith("/"):
        for token in field[1:].split("/"):
            rest = token.replace("~0", "").replace("~1", "")
            if "~" in rest:
                return f"not a JSON pointer: '~' must be followed by 0 or 1 in {token!r} (RFC 6901)"
    return None


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def lookup(tool_input: Any, field: str | None) -> Any:
    """The value `field` names in `tool_input` (the whole input when `field` is None), or
    `MISSING` when it is not there."""
    if field is None:
        return tool_input
    if not field.startswith("/"):
        return tool_input.get(field, _MISSING) if isinstance(tool_input, Mapping) else _MISSING
    value = tool_input
    for raw in field[1:].split("/"):
        token = _unescape(raw)
        if isinstance(value, Mapping):
            if token not in value:
                return _MISSING
            value = value[token]
        elif isinstance(value, list):
            # RFC 6901: an index is digits without leading zeros ("-" names no element).
            if not token.isdigit() or (len(token) > 1 and token[0] == "0") or int(token) >= len(value):
                return _MISSING
            value = value[int(token)]
        else:
            return _MISSING
    return value


MISSING = _MISSING


def as_text(value: Any) -> str:
    """The text a pattern is searched in: a string as it is, anything else as canonical JSON."""
    if isinstance(value, str):
        return value
    try:
        return canonical_json(value).decode("ascii")
    except (TypeError, ValueError):  # not JSON (a caller's tuple, a NaN): its JSON-safe copy
        return canonical_json(json_safe(value)).decode("ascii")


def is_command_field(field: str | None) -> bool:
    """Whether the rule looks at a shell command, which is then also checked piece by piece."""
    return field in ("command", "/command")


# -- paths -------------------------------------------------------------------------------


def normalise_path(path: str) -> str:
    """`path` with backslashes as ``/``, duplicate slashes, ``.`` and ``..`` folded, and a
    leading ``$HOME``/``${HOME}`` written ``~``. Lexical only: symlinks are not followed.

    ``./a/../.github/workflows/x`` gives ``.github/workflows/x``; ``/../etc`` gives ``/etc``;
    a relative path keeps the ``..`` it cannot fold (``../x``), and so does ``~/../u``.
    """
    p = path.replace("\\", "/")
    for home in ("${HOME}", "$HOME"):
        if p == home or p.startswith(home + "/"):
            p = "~" + p[len(home) :]
            break
    absolute = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] not in ("..", "~"):
                parts.pop()
            elif not absolute:
                parts.append(seg)  # above the start of a relative path: kept, cannot be folded
            continue
        parts.append(seg)
    joined = "/".join(parts)
    if absolute:
        return "/" + joined
    return joined or "."


# -- globs -------------------------------------------------------------------------------


def _literal(ch: str) -> str:
    if ch.isalnum() or ch == "_":
        return ch
    if ch.isascii() and ch.isprintable() and ch != " ":
        return "\\" + ch  # RE2 takes any escaped ASCII punctuation as itself
    return f"\\x{{{ord(ch):x}}}"


def _class(glob: str, i: int, path: bool) -> tuple[str, int]:
    """The ``[...]`` starting at glob[i] as an RE2 class, and the index after it."""
    j = i + 1
    negate = j < len(glob) and glob[j] in "!^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while j < len(glob) and (glob[j] != "]" or first):
        ch = glob[j]
        escaped = ch == "\\" and j + 1 < len(glob)
        if escaped:
            j += 1
            ch = glob[j]
        if ch == "-" and not escaped and not first and j + 1 < len(glob) and glob[j + 1] != "]":
            items.append("-")
        else:
            items.append(_literal(ch) if ch != "-" else "\\-")
        first = False
        j += 1
    if j >= len(glob):
        raise GlobError(f"unbalanced '[' at position {i + 1}: close it with ']' (or write '\\[' for a literal '[')")
    body = "".join(items)
    if negate:
        return f"[^{body}{'/' if path else ''}]", j + 1
    return f"[{body}]", j + 1


def _glob_to_re(glob: str, i: int, path: bool, in_brace: bool) -> tuple[str, int]:
    """Translate glob[i:] up to the end (or, inside braces, up to the closing ``}``/``,``)."""
    out: list[str] = []
    n = len(glob)
    while i < n:
        ch = glob[i]
        if in_brace and ch in ",}":
            return "".join(out), i
        if ch == "\\":
            if i + 1 >= n:
                raise GlobError("a trailing '\\' escapes nothing")
            out.append(_literal(glob[i + 1]))
            i += 2
        elif ch == "*":
            if glob.startswith("**", i) and path:
                # "**/" is any number of folders (none included); "**" elsewhere anything.
                if glob.startswith("**/", i) and (i == 0 or glob[i - 1] in "/{,"):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                while i < n and glob[i] == "*":
                    i += 1
            else:
                out.append("[^/]*" if path else ".*")
                while i < n and glob[i] == "*":
                    i += 1
        elif ch == "?":
            out.append("[^/]" if path else ".")
            i += 1
        elif ch == "[":
            cls, i = _class(glob, i, path)
            out.append(cls)
        elif ch == "{":
            start = i
            alternatives: list[str] = []
            i += 1
            while True:
                alt, i = _glob_to_re(glob, i, path, True)
                alternatives.append(alt)
                if i >= n:
                    raise GlobError(f"unbalanced '{{' at position {start + 1}: close it with '}}'")
                if glob[i] == "}":
                    i += 1
                    break
                i += 1  # the ","
            out.append("(?:" + "|".join(alternatives) + ")")
        elif ch == "}" and not in_brace:
            raise GlobError(f"unbalanced '}}' at position {i + 1} (write '\\}}' for a literal '}}')")
        else:
            out.append(_literal(ch))
            i += 1
    return "".join(out), i


def glob_regex(glob: str, *, path: bool) -> str:
    """The RE2 source that matches exactly what `glob` matches (see the module docstring)."""
    if not glob:
        raise GlobError("must not be empty")
    body, _ = _glob_to_re(glob, 0, path, False)
    if not path:
        return f"^(?:{body})$"
    anchored = glob.startswith(("/", "~"))
    return f"(?i)^{'' if anchored else '(?:.*/)?'}(?:{body})/?$"


def compile_glob(glob: str, *, path: bool) -> Any:
    """`glob` compiled (RE2); `GlobError` with what is wrong when it cannot be."""
    source = glob_regex(glob, path=path)
    try:
        return re2.compile(source, re2_options())
    except re2.error as e:  # e.g. a class range out of order, "[z-a]"
        raise GlobError(f"not a valid glob: {re2_message(e)}") from None


def expand_braces(glob: str) -> list[str]:
    """The literal names a glob made only of ``{a,b}`` alternatives stands for
    (``{Bash,bash}`` gives ``["Bash", "bash"]``); `GlobError` when it has wildcards."""
    if any(c in glob for c in "*?[\\"):
        raise GlobError(f"{glob!r} has wildcards: it stands for no fixed list of names")
    results = [""]
    i = 0
    while i < len(glob):
        if glob[i] == "{":
            depth, j = 0, i
            while j < len(glob):
                depth += {"{": 1, "}": -1}.get(glob[j], 0)
                if depth == 0:
                    break
                j += 1
            if j >= len(glob):
                raise GlobError(f"unbalanced '{{' in {glob!r}")
            inner, parts, depth, start = glob[i + 1 : j], [], 0, 0
            for k, c in enumerate(inner):
                depth += {"{": 1, "}": -1}.get(c, 0)
                if c == "," and depth == 0:
                    parts.append(inner[start:k])
                    start = k + 1
            parts.append(inner[start:])
            options = [x for p in parts for x in expand_braces(p)]
            results = [r + o for r in results for o in options]
            i = j + 1
        else:
            results = [r + glob[i] for r in results]
            i += 1
    return results
