# Sourced by scripts/run and scripts/test: find Python >= 3.12, create .venv,
# install turnout (with extras "$1") when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
    local c
    for c in "${TURNOUT_PYTHON:-}" python3.13 python3.12 python3 python; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 && python_ok "$c" && { command -v "$c"; return 0; }
    done
    # pyenv installs that are not on PATH (the shims only expose the selected version)
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
        [ -x "$c" ] && python_ok "$c" && { echo "$c"; return 0; }
    done
    return 1
}

bootstrap() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
        local py
        py="$(cd "$ROOT" && find_python)" || {
            echo "turnout needs Python 3.12 or newer and none was found." >&2
            echo "Install one (e.g. 'pyenv install 3.12') or point TURNOUT_PYTHON at it." >&2
            exit 2
        }
        echo "creating .venv with $py ($("$py" --version 2>&1))" >&2
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    fi
    local stamp="$VENV/.turnout-installed" hash have want
    hash="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
    want="$hash[$extras]"
    have="$(cat "$stamp" 2>/dev/null || true)"
    # an install with extras (scripts/test's [dev]) also serves scripts/run, which needs none
    if [ "$have" != "$want" ] && { [ -n "$extras" ] || [ "${have%%\[*}" != "$hash" ]; }; then
        echo "installing turnout${extras:+[$extras]} into .venv" >&2
        local spec="$ROOT"
        [ -n "$extras" ] && spec="$ROOT[$extras]"
        "$VENV/bin/python" -m pip install --quiet -e "$spec" >&2
        echo "$want" > "$stamp"
    fi
}
