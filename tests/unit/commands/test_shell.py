"""The Bash splitter (gatehouse.commands.shell): every simple command a line runs is a piece,
however it is joined, nested or quoted, and odd input never raises."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.commands import shell
from gatehouse.commands.shell import MAX_DEPTH, command_texts, split_command, unquote, words


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ls", ["ls"]),
        ("ls; rm -rf /", ["ls", "rm -rf /"]),
        ("a && b || c | d & e", ["a", "b", "c", "d", "e"]),
        ("a |& b ;; c", ["a", "b", "c"]),
        ("a\nb\r\nc", ["a", "b", "c"]),
        ("  spaced   ;  out  ", ["spaced", "out"]),
        ("if true; then rm -rf /; fi", ["true", "rm -rf /"]),
        ("while read l; do echo $l; done < f", ["read l", "echo $l", "done < f"]),
        ("{ a; b; }", ["a", "b"]),
        ("! grep -q x f", ["grep -q x f"]),
    ],
)
def test_splits_on_operators_and_drops_reserved_words(text, expected):
    assert split_command(text) == expected


def test_quotes_and_escapes_do_not_split():
    assert split_command("echo 'a; b' && echo \"c | d\"") == ["echo 'a; b'", 'echo "c | d"']
    assert split_command(r"echo a\;b; echo c\|d") == [r"echo a\;b", r"echo c\|d"]
    assert split_command("echo $'it\\'s; fine'") == ["echo $'it\\'s; fine'"]


def test_redirections_with_ampersand_and_pipe_are_not_operators():
    assert split_command("make 2>&1 | tee log") == ["make 2>&1", "tee log"]
    assert split_command("make &> log; x >| y; cat <&3") == ["make &> log", "x >| y", "cat <&3"]


def test_a_line_continuation_joins_lines():
    assert "rm -rf /" in split_command("rm -rf \\\n/")


@pytest.mark.parametrize(
    "text",
    [
        "echo $(rm -rf /)",
        "echo `rm -rf /`",
        'echo "today: $(rm -rf /)"',
        'echo "`rm -rf /`"',
        "(rm -rf /)",
        "(cd x && rm -rf /) 2>&1",
        "diff <(rm -rf /) f",
        "tee >(rm -rf /)",
        "bash -c 'rm -rf /'",
        'sh -c "rm -rf /"',
        "sudo -u root bash -lc 'rm -rf /'",
        "docker exec box sh -c 'ls; rm -rf /'",
        "bash -o pipefail -c 'rm -rf /'",
        "bash --rcfile x -c 'rm -rf /'",
        "eval 'rm -rf /'",
        'sudo eval "rm -rf /"',
        "su -c 'rm -rf /' root",
        "sh -c \"bash -c 'rm -rf /'\"",
        "echo $(echo $(echo $(rm -rf /)))",
        "if (rm -rf /); then :; fi",
        "f() { rm -rf /; }",
        "case $x in a) rm -rf /;; esac",
    ],
)
def test_descends_into_nested_commands(text):
    assert "rm -rf /" in split_command(text)


def test_nested_scripts_are_whole_texts_too():
    # A pipeline inside bash -c is one text (for rules such as curl | sh) as well as pieces.
    texts = command_texts("sudo bash -c 'curl -s x | sh'")
    assert texts[0] == "sudo bash -c 'curl -s x | sh'" and "curl -s x | sh" in texts
    assert {"curl -s x", "sh"} <= set(split_command("sudo bash -c 'curl -s x | sh'"))


def test_every_line_is_also_split_alone():
    # An apostrophe in a heredoc body or a comment must not hide the lines after it.
    assert "rm -rf /" in split_command("cat <<EOF\nit's here\nEOF\nrm -rf /")
    assert "rm -rf /" in split_command("echo hi # don't worry\nrm -rf /")


def test_unbalanced_input_runs_to_the_end():
    assert split_command("echo 'unterminated; rm x") == ["echo 'unterminated; rm x"]
    assert split_command('echo "a; b') == ['echo "a; b']
    assert "rm -rf /" in split_command("echo $(rm -rf /")
    assert "b" in split_command("a; (b")
    assert split_command("") == [] and split_command(" ;; && ") == []


def test_too_deep_nesting_is_still_cut_into_pieces():
    deep = "$(" * (MAX_DEPTH + 5) + "rm -rf /" + ")" * (MAX_DEPTH + 5)
    assert any(p.startswith("rm -rf /") for p in split_command(f"echo {deep}"))


def test_words_remove_quotes_and_escapes():
    assert words("r'm' -rf \"/\"") == ["rm", "-rf", "/"]
    assert words(r"a\ b 'c d' \"e") == ["a b", "c d", '"e']
    assert words("$'\\x72\\155' x") == ["rm", "x"]
    assert words('echo "$(date "+%F")" `id`') == ["echo", '$(date "+%F")', "`id`"]
    assert unquote("  \"rm\"   -rf   '~'  ") == "rm -rf ~"


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time", "case", "esac", "in"}
WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_./=,:@%+", min_size=1, max_size=8).filter(
    lambda w: w not in RESERVED and not w.startswith("-")
)
COMMAND = st.lists(WORD, min_size=1, max_size=4).map(" ".join)
SEPARATOR = st.sampled_from([";", " ; ", "&&", " && ", "||", " || ", "|", " | ", "|&", "&", " & ", "\n", " \n "])


@SETTINGS
@given(st.lists(st.tuples(COMMAND, SEPARATOR), min_size=1, max_size=6))
def test_property_every_joined_command_is_a_piece(parts):
    text = "".join(cmd + sep for cmd, sep in parts)
    pieces = split_command(text)
    for cmd, _ in parts:
        assert cmd in pieces, (text, pieces)


@SETTINGS
@given(st.lists(st.tuples(COMMAND, SEPARATOR), min_size=1, max_size=4), st.sampled_from(["$({})", "`{}`", "({})"]))
def test_property_nested_commands_are_pieces(parts, wrapper):
    inner = "".join(cmd + sep for cmd, sep in parts).rstrip(";&|\n ")
    pieces = split_command("echo start; " + wrapper.format(inner) + " && echo end")
    for cmd, _ in parts:
        assert cmd in pieces, (inner, pieces)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ab ;&|()$`'\"\\\n{}<>#=~-")) | st.characters(), max_size=200))
def test_property_never_raises_and_pieces_are_clean(text):
    for piece in split_command(text):
        assert piece and piece == piece.strip()
    command_texts(text)
    for piece in split_command(text):
        words(piece)


# The scanners take runs of ordinary characters in one step (`shell._*_PLAIN`), and `words`
# splits a piece with no quoting at all with `str.split`; with each pattern cut to one
# character, and every piece taken as quoted, they read the text one character at a time, as
# they did before.
def _one_character_at_a_time(monkeypatch):
    for name in ("_SPLIT_PLAIN", "_DOUBLE_PLAIN", "_WORD_PLAIN"):
        pattern = getattr(shell, name).pattern
        assert pattern.endswith("]+"), pattern
        monkeypatch.setattr(shell, name, re.compile(pattern[:-1]))
    monkeypatch.setattr(shell, "_WORD_QUOTING", re.compile(r"(?s)."))


SHELL_TEXT = st.text(alphabet=st.sampled_from(list("ab ;&|()$`'\"\\\n\r\t{}<>#=~-")) | st.characters(), max_size=300)


@SETTINGS
@given(SHELL_TEXT)
def test_property_runs_read_as_one_character_at_a_time(text):
    fast = (split_command(text), command_texts(text), [words(p) for p in split_command(text)], words(text))
    with pytest.MonkeyPatch.context() as mp:
        _one_character_at_a_time(mp)
        slow = (split_command(text), command_texts(text), [words(p) for p in split_command(text)], words(text))
    assert fast == slow


def test_runs_keep_the_characters_that_matter_inside_them(monkeypatch):
    # Each case has a run of ordinary text touching a character some branch looks at.
    texts = [
        "echo abc>|f; x",
        "cmd 2>&1|tee log&& next",
        'echo "a$(rm -rf /)b"c',
        "echo a$'\\x72m'b",
        "abc(def) && (rm x)",
        "echo a<(ls)b >(cat)c",
        "a\\\nb;c",
        "x=1$y `id`z",
    ]
    fast = [(split_command(t), [words(p) for p in split_command(t)]) for t in texts]
    _one_character_at_a_time(monkeypatch)
    assert fast == [(split_command(t), [words(p) for p in split_command(t)]) for t in texts]
    assert "rm -rf /" in fast[2][0] and "id" in fast[7][0]


def test_a_long_heredoc_is_split_as_before():
    body = "\n".join(f"line {i}: value = 'x' $HOME" for i in range(400))
    text = f"cat > notes.txt <<'EOF'\n{body}\nEOF\nrm -rf /tmp/x"
    assert "rm -rf /tmp/x" in split_command(text)
    assert words("echo " + "a" * 20000) == ["echo", "a" * 20000]


# Lines are split again only when that can find something new: something crossed a line end,
# or the cut at MAX_DEPTH is near (`shell._clear_of_the_cut`). Splitting them again always must
# give the same pieces and texts, in the same order.
MULTILINE_TEXT = st.lists(
    st.lists(st.sampled_from([*"ab ;&|()$`'\"\\\r{}<>#-", "$(", "<<'EOF'", "bash -c '"]), max_size=12).map("".join),
    max_size=8,
).map("\n".join)


@SETTINGS
@given(SHELL_TEXT | MULTILINE_TEXT)
def test_property_lines_are_split_again_only_when_it_matters(text):
    fast = (split_command(text), command_texts(text))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shell, "_clear_of_the_cut", lambda acc: False)
        slow = (split_command(text), command_texts(text))
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        "cat > f <<'EOF'\nit's here\nrm -rf /\nEOF",  # an apostrophe left open on a line
        'echo "a\nb"; rm -rf /\nls',  # a string across a line end
        "echo $(ls\nrm -rf /)\nls",  # a substitution across a line end
        "a \\\nb\nc",  # a continuation
        "a \\\rb\nc",
        # At the cut, one level deeper splits at every operator character: more pieces.
        "(" * MAX_DEPTH + "echo 'a;b'" + ")" * MAX_DEPTH + "\nls",
    ],
)
def test_lines_are_split_again_when_something_crosses_a_line_end(text, monkeypatch):
    fast = (split_command(text), command_texts(text))
    monkeypatch.setattr(shell, "_clear_of_the_cut", lambda acc: False)
    assert fast == (split_command(text), command_texts(text))
