#!/bin/sh
# Print the path of a Python >= 3.12 interpreter, found by running candidates.
# `command -v` is not enough: pyenv shims exist for every installed version
# but fail unless that version is selected, so each candidate must be run.
set -u
check='import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'
candidates="${PYTHON:-} python3.13 python3.12 python3"
if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root 2>/dev/null)
    # Newest first, so a 3.13 is preferred over a 3.12.
    for p in $(ls -d "$root"/versions/*/bin/python3 2>/dev/null | sort -rV); do
        candidates="$candidates $p"
    done
fi
for c in $candidates; do
    [ -n "$c" ] || continue
    if "$c" -c "$check" >/dev/null 2>&1; then
        "$c" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
echo "find_python: no Python >= 3.12 found (tried: $candidates)." >&2
echo "find_python: install Python 3.12 or newer, or set PYTHON=/path/to/python3.12." >&2
exit 1
