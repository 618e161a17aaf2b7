"""Splitting a shell command line into the simple commands it runs, so that a rule sees
``rm -rf /`` in ``ls; rm -rf /``, ``echo $(rm -rf /)`` and ``bash -c 'rm -rf /'``.

`split_command` splits on ``;``, ``&&``, ``||``, ``|``, ``|&``, ``&``, newlines and an unmatched
``)`` (the end of a ``case`` pattern), and descends into ``$(...)``, backticks, ``(...)``
subshells, ``<(...)``/``>(...)`` process substitutions, the script of ``bash -c`` / ``sh -c``
(any shell, anywhere in the command: ``sudo -u x bash -lc '...'``, ``docker exec c sh -c
'...'``), of ``su -c`` and of ``eval``. Quotes are respected (a ``;`` inside quotes does not
split) and so are backslash escapes and line continuations; ``$(...)`` and backticks inside
double quotes run, and are descended into. Leading reserved words (``if``, ``then``, ``do``,
``!``, ``{`` ...) are dropped from a piece, and pieces that are nothing else (``fi``, ``}``)
are left out.

It is a matcher's splitter, not a shell: it errs towards *more* pieces. Every line of a
multi-line command is also split on its own (so that a heredoc body or a comment with an
apostrophe cannot hide the lines after it behind an unbalanced quote), comments are not
skipped, and nesting deeper than `MAX_DEPTH` is cut at every operator character regardless
of quotes. It never raises; unbalanced quotes and parentheses run to the end of the text.

`command_texts` gives the texts a rule that spans several pieces looks at (``curl ... | sh``):
the whole command, every nested script and every line. `words` and `unquote` give a piece
as the shell would pass it (quotes and escapes removed), so ``r'm' -rf "/"`` reads
``rm -rf /``. Pure (no mitmproxy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_DEPTH = 8

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh", "yash", "fish", "busybox"})
# Words that may open a simple command without being the command.
_LEADING_RESERVED = frozenset({"!", "{", "if", "then", "else", "elif", "do", "while", "until", "time"})
# Pieces that are nothing but syntax.
_ONLY_RESERVED = _LEADING_RESERVED | {"}", "fi", "done", "esac", "(", ")"}
# Wrappers that run their arguments as a command; `eval` is recognised after them.
_WRAPPERS = frozenset({"sudo", "doas", "env", "command", "builtin", "exec", "nohup", "nice", "time"})
_FIRST_WORD = re.compile(r"\S+")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_CRUDE = re.compile(r"[;&|\n\r()`]+")
# Runs of characters the scanners below do nothing with but copy or skip, taken in one step
# instead of one character at a time (a 16 KB heredoc took ~25 ms, on the event loop when
# the call streams). Each class leaves out every character its scanner looks at, and also
# ``$ < > (`` (special only before certain characters), which go the one-character way.
# The tests swap in one-character versions of these and expect the same results.
_SPLIT_PLAIN = re.compile(r"[^\\'\"$`<>()\n\r;|&]+")  # `_split`, outside quotes
_DOUBLE_PLAIN = re.compile(r"[^\\\"`$]+")  # inside double quotes (`_double_end`, `words`)
_WORD_PLAIN = re.compile(r"[^\s\\'\"$`]+")  # `words`, outside quotes
_WORD_QUOTING = re.compile(r"[\\'\"$`]")  # what `words` does anything with but split


@dataclass
class _Acc:
    pieces: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    deepest: int = 0  # the deepest `_split` so far
    # `words` of each piece read so far: a heredoc's lines repeat the same `$(...)` hundreds
    # of times, and the judge unquotes every piece again.
    words: dict[str, list[str]] = field(default_factory=dict)

    def words_of(self, piece: str) -> list[str]:
        if (ws := self.words.get(piece)) is None:
            ws = self.words[piece] = words(piece)
        return ws


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _analyse(text: str) -> _Acc:
    acc = _Acc()
    try:
        _split(text, acc, 0, lines=True)
    except RecursionError:  # cannot happen with MAX_DEPTH; never let odd input raise
        acc.pieces.append(text.strip())
    return acc


def split_command(text: str) -> list[str]:
    """The simple commands of `text`, stripped, in the order found, each once (nested ones
    usually before the command that contains them)."""
    return read_command(text).pieces


def command_texts(text: str) -> list[str]:
    """`text` stripped, then every nested script (``$(...)``, ``bash -c``, subshells) and
    every line, each once: what a rule about a whole pipeline is searched in."""
    return read_command(text).texts


@dataclass(frozen=True)
class Reading:
    """One reading of a command (a long heredoc takes milliseconds to read): `split_command`
    and `command_texts` of it, and `unquote` remembering what it has unquoted before."""

    pieces: list[str]
    texts: list[str]
    _acc: _Acc

    def unquote(self, s: str) -> str:
        """What `unquote` gives for `s`, from the words kept for it when it is a piece already
        read (they are kept for the next call too)."""
        return " ".join(self._acc.words_of(s))


def read_command(text: str) -> Reading:
    """`text` read once: its pieces (`split_command`), its texts (`command_texts`) and the
    words of each piece. Not a string (a tool input's odd field): nothing."""
    if not isinstance(text, str):
        return Reading([], [], _Acc())
    acc = _analyse(text)
    pieces = [p for p in _dedupe(acc.pieces) if p]
    return Reading(pieces, _dedupe([text.strip(), *(s for s in acc.scripts if s)]), acc)


# -- the scanner ---------------------------------------------------------------------------


def find_close(text: str, i: int) -> int:
    """The index of the ``)`` that closes a ``(`` just before `text[i]`, skipping quotes,
    nested parentheses, ``$(...)`` inside double quotes and backticks; `len(text)` when none."""
    n = len(text)
    stack = ["("]
    while i < n:
        c = text[i]
        top = stack[-1]
        if c == "\\":
            i += 2
            continue
        if top == '"':
            if c == '"':
                stack.pop()
            elif c == "`":
                stack.append("`")
            elif c == "$" and text.startswith("$(", i):
                stack.append("(")
                i += 1
        elif top == "`":
            if c == "`":
                stack.pop()
        else:  # inside parentheses
            if c == "'":
                j = text.find("'", i + 1)
                i = n if j < 0 else j + 1
                continue
            if c == '"':
                stack.append('"')
            elif c == "`":
                stack.append("`")
            elif c == "(":
                stack.append("(")
            elif c == ")":
                stack.pop()
                if not stack:
                    return i
        i += 1
    return n


def _backtick_end(text: str, i: int) -> int:
    """The index of the backtick closing one opened before `text[i]`; `len(text)` when none."""
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            return i
        i += 1
    return n


def _ansi_end(text: str, i: int) -> int:
    """The index after the ``'`` closing a ``$'...'`` whose body starts at `text[i]`."""
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "'":
            return i + 1
        i += 1
    return n


def _double_end(text: str, i: int, acc: _Acc | None, depth: int) -> int:
    """The index after the ``"`` closing a string whose body starts at `text[i]`; the
    substitutions inside it are split into `acc` (when given)."""
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif c == "`":
            j = _backtick_end(text, i + 1)
            if acc is not None:
                _split(_unescape_backticks(text[i + 1 : j]), acc, depth + 1)
            i = j + 1
        elif c == "$" and text.startswith("$(", i):
            j = find_close(text, i + 2)
            if acc is not None:
                _split(text[i + 2 : j], acc, depth + 1)
            i = j + 1
        else:
            m = _DOUBLE_PLAIN.match(text, i)
            i = m.end() if m is not None else i + 1
    return n


def _has_line_end(s: str) -> bool:
    return "\n" in s or "\r" in s


def _clear_of_the_cut(acc: _Acc) -> bool:
    """Whether splitting each line of the text again, one level deeper than the text was
    split, stays clear of the cut at MAX_DEPTH."""
    return acc.deepest < MAX_DEPTH


def _unescape_backticks(body: str) -> str:
    # Inside backticks, a backslash before `, \ or $ is removed before the body runs.
    return re.sub(r"\\([`\\$])", r"\1", body)


def _at_command_start(cur: list[str], cur_len: int) -> bool:
    if cur_len > 64:
        return False
    return all(w in _LEADING_RESERVED for w in "".join(cur).split())


def _split(text: str, acc: _Acc, depth: int, *, lines: bool = False) -> None:
    if depth > MAX_DEPTH:
        # Too deep to follow: every run of text between operator characters is a piece.
        for part in _CRUDE.split(text):
            _emit(part, acc, depth, descend=False)
        return
    acc.deepest = max(acc.deepest, depth)
    stripped = text.strip()
    if stripped:
        acc.scripts.append(stripped)
    cur: list[str] = []
    cur_len = 0
    n = len(text)
    i = 0
    # Some quote, substitution or continuation went on past a line end: `add` notes what it
    # takes in, the two branches that take text without adding it note it themselves.
    spans_lines = False

    def emit() -> None:
        nonlocal cur_len
        if cur:
            _emit("".join(cur), acc, depth)
            cur.clear()
            cur_len = 0

    def add(s: str) -> None:
        nonlocal cur_len, spans_lines
        cur.append(s)
        cur_len += len(s)
        spans_lines = spans_lines or _has_line_end(s)

    while i < n:
        c = text[i]
        if c == "\\":
            if text.startswith("\\\n", i):  # a line continuation joins the lines
                spans_lines = True
                i += 2
                continue
            add(text[i : i + 2])
            i += 2
        elif c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j + 1
            add(text[i:j])
            i = j
        elif c == "$" and text.startswith("$'", i):
            j = _ansi_end(text, i + 2)
            add(text[i:j])
            i = j
        elif c == '"':
            j = _double_end(text, i + 1, acc, depth)
            add(text[i:j])
            i = j
        elif c == "`":
            j = _backtick_end(text, i + 1)
            _split(_unescape_backticks(text[i + 1 : j]), acc, depth + 1)
            add(text[i : j + 1])
            i = j + 1
        elif c in "$<>" and text.startswith("(", i + 1):
            # $(...) command substitution, <(...) and >(...) process substitution.
            j = find_close(text, i + 2)
            _split(text[i + 2 : j], acc, depth + 1)
            add(text[i : j + 1])
            i = j + 1
        elif c == "(" and _at_command_start(cur, cur_len):
            j = find_close(text, i + 1)
            _split(text[i + 1 : j], acc, depth + 1)
            spans_lines = spans_lines or _has_line_end(text[i : j + 1])
            i = j + 1
        elif c in "\n\r;)":
            emit()
            i += 1
        elif c == "|":
            if cur and cur[-1].endswith(">"):  # >| is a redirection
                add(c)
                i += 1
                continue
            emit()
            i += 2 if text.startswith(("||", "|&"), i) else 1
        elif c == "&":
            if text.startswith("&&", i):
                emit()
                i += 2
            elif text.startswith("&>", i) or (cur and cur[-1][-1:] in ("<", ">")):
                add(c)  # &> file, 2>&1, <&3: redirections
                i += 1
            else:
                emit()  # a command run in the background
                i += 1
        else:
            m = _SPLIT_PLAIN.match(text, i)
            if m is None:  # a $, <, > or ( that opens nothing
                add(c)
                i += 1
            else:
                add(m.group())
                i = m.end()
    emit()

    if lines and _has_line_end(text):
        # Each line is split again on its own, one level deeper, so that a quote left open on
        # one line (a heredoc's apostrophe) cannot hide the next. When nothing crossed a line
        # end, and the extra level cannot reach the cut at MAX_DEPTH, that gives exactly the
        # pieces and scripts found above, once more: only each line, as a script, is new. (A
        # 16 KB heredoc took as long again for that.)
        again = spans_lines or not _clear_of_the_cut(acc)
        for line in re.split(r"[\r\n]+", text):
            if line.strip() and line.strip() != stripped:
                if again:
                    _split(line, acc, depth + 1)
                else:
                    acc.scripts.append(line.strip())


def _emit(raw: str, acc: _Acc, depth: int, *, descend: bool = True) -> None:
    piece = raw.strip()
    while piece:
        m = _FIRST_WORD.match(piece)
        if m is None or m.group(0) not in _LEADING_RESERVED or m.end() == len(piece):
            break
        piece = piece[m.end() :].lstrip()
    if not piece or piece in _ONLY_RESERVED:
        return
    acc.pieces.append(piece)
    if descend:
        script = _inner_script(acc.words_of(piece))
        if script is not None and script.strip():
            _split(script, acc, depth + 1)


def _inner_script(ws: list[str]) -> str | None:
    """The script a command runs as a command line: ``bash -c SCRIPT``, ``su -c SCRIPT``,
    ``eval ARGS``; None when it runs none."""
    k = 0
    while k < len(ws) and (_ASSIGNMENT.match(ws[k]) or ws[k].rsplit("/", 1)[-1] in _WRAPPERS):
        k += 1
    if k < len(ws) and ws[k] == "eval":
        return " ".join(ws[k + 1 :]) or None
    for k, w in enumerate(ws):
        base = w.rsplit("/", 1)[-1]
        if base in SHELLS:
            # Any later short-option group with "c" (-c, -lc, -ec, after --rcfile F or -o
            # pipefail alike): erring towards a script where there is none only adds pieces.
            for m in range(k + 1, len(ws) - 1):
                a = ws[m]
                if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
                    return ws[m + 1]
        elif base in ("su", "runuser"):
            for m in range(k + 1, len(ws) - 1):
                if ws[m] in ("-c", "--command"):
                    return ws[m + 1]
                if ws[m].startswith("--command="):
                    return ws[m][len("--command=") :]
    return None


# -- words ---------------------------------------------------------------------------------

_ANSI_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def _ansi_decode(body: str) -> str:
    """The value of a ``$'...'`` body: C escapes decoded (``$'\\x72m'`` is ``rm``)."""
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ANSI_SIMPLE:
            out.append(_ANSI_SIMPLE[e])
            i += 2
            continue
        m = (
            re.match(r"x([0-9a-fA-F]{1,2})", body[i + 1 :])
            or re.match(r"u([0-9a-fA-F]{1,4})", body[i + 1 :])
            or re.match(r"U([0-9a-fA-F]{1,8})", body[i + 1 :])
            or re.match(r"([0-7]{1,3})", body[i + 1 :])
        )
        if m is None:
            out.append(body[i : i + 2])
            i += 2
            continue
        code = int(m.group(1), 8 if m.group(0)[0] in "01234567" else 16)
        out.append(chr(code) if code <= 0x10FFFF else "?")
        i += 1 + m.end()
    return "".join(out)


def words(piece: str) -> list[str]:
    """The words of a simple command with quotes and escapes removed, as the shell passes
    them; substitutions (``$(...)``, backticks) are kept as written."""
    if _WORD_QUOTING.search(piece) is None:
        return piece.split()  # nothing to remove: `str.split` splits where `\s` matches
    out: list[str] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(piece)
    while i < n:
        c = piece[i]
        if c.isspace():
            if have:
                out.append("".join(cur))
                cur, have = [], False
            i += 1
            continue
        have = True
        if c == "\\":
            cur.append(piece[i + 1 : i + 2] if i + 1 < n else c)
            i += 2
        elif c == "'":
            j = piece.find("'", i + 1)
            j = n if j < 0 else j
            cur.append(piece[i + 1 : j])
            i = j + 1
        elif c == "$" and piece.startswith("$'", i):
            j = _ansi_end(piece, i + 2)
            cur.append(_ansi_decode(piece[i + 2 : j - 1 if piece[j - 1 : j] == "'" and j > i + 2 else j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and piece[j] != '"':
                if piece[j] == "\\" and j + 1 < n:
                    nxt = piece[j + 1]
                    cur.append(nxt if nxt in '$`"\\\n' else piece[j : j + 2])
                    j += 2
                elif piece.startswith("$(", j):
                    k = find_close(piece, j + 2)
                    cur.append(piece[j : k + 1])
                    j = k + 1
                elif piece[j] == "`":
                    k = _backtick_end(piece, j + 1)
                    cur.append(piece[j : k + 1])
                    j = k + 1
                else:
                    m = _DOUBLE_PLAIN.match(piece, j)
                    k = m.end() if m is not None else j + 1
                    cur.append(piece[j:k])
                    j = k
            i = j + 1
        elif c == "$" and piece.startswith("$(", i):
            j = find_close(piece, i + 2)
            cur.append(piece[i : j + 1])
            i = j + 1
        elif c == "`":
            j = _backtick_end(piece, i + 1)
            cur.append(piece[i : j + 1])
            i = j + 1
        else:
            m = _WORD_PLAIN.match(piece, i)
            k = m.end() if m is not None else i + 1
            cur.append(piece[i:k])
            i = k
    if have:
        out.append("".join(cur))
    return out


def unquote(piece: str) -> str:
    """`piece` as its words joined by single spaces: ``r'm' -rf "/"`` gives ``rm -rf /``."""
    return " ".join(words(piece))
