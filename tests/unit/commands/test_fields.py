"""What a rule looks at (gatehouse.commands.fields): fields and JSON pointers, the text of a
value, normalised paths, and the globs over tool names and paths."""

from __future__ import annotations

import pytest

from gatehouse.commands.fields import (
    MISSING,
    GlobError,
    as_text,
    compile_glob,
    expand_braces,
    lookup,
    normalise_path,
    pointer_problem,
)

INPUT = {"command": "ls", "edits": [{"file_path": "/a"}, {"file_path": "/b"}], "a/b": {"m~n": 1}, "n": None}


@pytest.mark.parametrize(
    "field, expected",
    [
        (None, INPUT),
        ("command", "ls"),
        ("n", None),
        ("/command", "ls"),
        ("/edits/1/file_path", "/b"),
        ("/a~1b/m~0n", 1),
        ("missing", MISSING),
        ("/edits/2/file_path", MISSING),
        ("/edits/01/file_path", MISSING),
        ("/edits/-", MISSING),
        ("/command/x", MISSING),
    ],
)
def test_lookup(field, expected):
    assert lookup(INPUT, field) == expected if expected is not MISSING else lookup(INPUT, field) is MISSING


def test_lookup_in_a_non_object_input():
    assert lookup(["x"], "command") is MISSING
    assert lookup("text", None) == "text"


def test_pointer_problems():
    assert pointer_problem("command") is None and pointer_problem("/a~0/b~1") is None
    assert "RFC 6901" in pointer_problem("/a~2")
    assert pointer_problem("") == "must not be empty"


def test_as_text_is_canonical_json_for_non_strings():
    assert as_text("rm -rf /") == "rm -rf /"
    assert as_text({"b": 1, "a": ["é"]}) == '{"a":["\\u00e9"],"b":1}'
    assert as_text(("x", 1)) == '["x",1]'


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("./a/../.github/workflows/x", ".github/workflows/x"),
        ("/repo//src/./../.github/workflows/ci.yml", "/repo/.github/workflows/ci.yml"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("../x/../y", "../y"),
        ("$HOME/.ssh/id", "~/.ssh/id"),
        ("${HOME}/.ssh/id", "~/.ssh/id"),
        ("~/../u/.ssh", "~/../u/.ssh"),
        ("C:\\Users\\dev\\.ssh\\config", "C:/Users/dev/.ssh/config"),
        ("dir/", "dir"),
        ("./", "."),
        ("/", "/"),
    ],
)
def test_normalise_path(raw, normal):
    assert normalise_path(raw) == normal


def _path_match(glob: str, path: str) -> bool:
    return compile_glob(glob, path=True).search(normalise_path(path)) is not None


@pytest.mark.parametrize(
    "path",
    [
        ".github/workflows/ci.yml",
        "/repo/.github/workflows/ci.yml",
        "./a/../.github/workflows/x",
        "/home/u/src/../repo/.GitHub/Workflows/CI.yml",  # case-insensitive file systems
    ],
)
def test_a_relative_path_glob_matches_at_any_folder(path):
    assert _path_match(".github/workflows/*", path)


@pytest.mark.parametrize(
    "path",
    [".github/workflows/sub/x.yml", ".github/workflowsx/ci.yml", "/repo/my.github/workflows/ci.yml", ".github/x"],
)
def test_a_single_star_does_not_cross_folders(path):
    assert not _path_match(".github/workflows/*", path)


def test_double_star_crosses_folders():
    assert _path_match(".github/**", ".github/workflows/sub/x.yml")
    assert _path_match("**/.ssh/**", "/home/u/.ssh/authorized_keys")
    assert _path_match("**/.ssh/**", "~/.ssh/config") and _path_match("**/.ssh/**", "$HOME/.ssh/config")
    assert _path_match("**/.ssh/**", ".ssh/config")
    assert not _path_match("**/.ssh/**", "/home/u/.sshrc")
    assert _path_match("a/**/b", "a/b") and _path_match("a/**/b", "a/x/y/b") and not _path_match("a/**/b", "ab")


def test_an_absolute_glob_is_anchored_at_the_start():
    assert _path_match("/etc/*", "/etc/passwd") and not _path_match("/etc/*", "/chroot/etc/passwd")
    assert _path_match("~/.ssh/*", "$HOME/.ssh/id") and not _path_match("~/.ssh/*", "/home/u/.ssh/id")


def test_classes_braces_and_escapes():
    assert _path_match("*.{yml,yaml}", "/x/a.yaml") and not _path_match("*.{yml,yaml}", "a.json")
    assert _path_match("f[0-9].txt", "f7.txt") and not _path_match("f[!0-9].txt", "f7.txt")
    assert _path_match(r"a\*b", "a*b") and not _path_match(r"a\*b", "axb")
    assert _path_match("**/{.aws/credentials,.kube/config}", "/home/u/.kube/config")


def test_tool_globs_are_case_sensitive_and_cross_everything():
    tool = compile_glob("mcp__*", path=False)
    assert tool.search("mcp__github__create_issue") and not tool.search("MCP__x")
    exact = compile_glob("Bash", path=False)
    assert exact.search("Bash") and not exact.search("bash") and not exact.search("Bash2")
    assert compile_glob("{Write,Edit}", path=False).search("Edit")
    assert compile_glob("a/*", path=False).search("a/b/c")


@pytest.mark.parametrize(
    "glob, problem",
    [
        ("[abc", "unbalanced '['"),
        ("{a,b", "unbalanced '{'"),
        ("a}", "unbalanced '}'"),
        ("a\\", "escapes nothing"),
        ("", "must not be empty"),
        ("[z-a]", "not a valid glob"),
    ],
)
def test_bad_globs_are_refused(glob, problem):
    with pytest.raises(GlobError, match=problem.replace("[", r"\[").replace("{", r"\{")):
        compile_glob(glob, path=True)


def test_expand_braces():
    assert expand_braces("{Bash,bash}") == ["Bash", "bash"]
    assert expand_braces("Read") == ["Read"]
    assert expand_braces("{a,b{1,2}}x") == ["ax", "b1x", "b2x"]
    with pytest.raises(GlobError):
        expand_braces("mcp__*")
