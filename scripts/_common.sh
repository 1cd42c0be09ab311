# Shared by scripts/test and scripts/demo (sourced, not run): system packages through
# apt-get, and the project's virtualenv in .venv with `pip install -e '.[dev]'`.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FABLAB_VENV:-$REPO_ROOT/.venv}"
STAMP="$VENV/.fablab-install-stamp"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo env DEBIAN_FRONTEND=noninteractive "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

_apt_updated=0
# apt_install PACKAGE... : install Debian packages (apt-get update once per run first).
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install these packages with your system's package manager: $*"
    if [ "$_apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq </dev/null
        _apt_updated=1
    fi
    log "apt-get install $*"
    as_root apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# The interpreter the venv is made from: $PYTHON, else python3; must be 3.11 or newer.
find_python() {
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "$py not found: install Python 3.11 or newer"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$("$py" --version 2>&1) is too old: fablab-monitor needs Python 3.11 or newer"
    printf '%s\n' "$py"
}

# A usable venv: Python 3.11+, pip, and made here (a venv copied from another path
# keeps that path in its scripts' #! lines and would run the other venv's Python).
_venv_works() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || return 1
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || return 1
    local shebang=""
    [ -f "$VENV/bin/pip" ] && shebang="$(head -n 1 "$VENV/bin/pip")"
    case "$shebang" in
        "#!$VENV/bin/python"*) return 0 ;;
        *) log "$VENV was made elsewhere (${shebang:-no pip script}): recreating it"; return 1 ;;
    esac
}

# Filter pip's output down to one line per package collected, then the summary.
_pip_progress() {
    local line
    while IFS= read -r line; do
        case "$line" in
            Collecting*|"Installing collected packages"*|"Successfully installed"*)
                printf '    %s\n' "${line:0:100}" >&2 ;;
        esac
    done
}

# ensure_venv: create (or repair) .venv and `pip install -e '.[dev]'` into it, skipped
# when pyproject.toml has not changed since the last successful install.
ensure_venv() {
    local py
    if ! _venv_works; then
        py="$(find_python)"
        rm -rf "$VENV"
        log "creating virtualenv $VENV ($("$py" --version 2>&1))"
        if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            # Debian and Ubuntu ship venv/ensurepip in a separate package.
            local minor
            minor="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install python3-venv "python$minor-venv" || apt_install python3-venv
            "$py" -m venv "$VENV" || die "could not create the virtualenv $VENV"
        fi
    fi
    local want have=""
    want="$( (cat "$REPO_ROOT/pyproject.toml"; "$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)"
    [ -f "$STAMP" ] && have="$(cat "$STAMP")"
    if [ "$want" != "$have" ]; then
        log "pip install -e '.[dev]' (the first time takes a few minutes)"
        rm -f "$STAMP"
        local pip_log="$VENV/pip-install.log"
        # Show each package as pip gets to it; the whole output goes to $pip_log.
        if ! "$VENV/bin/python" -m pip install --progress-bar off -e "${REPO_ROOT}[dev]" 2>&1 |
            tee "$pip_log" | _pip_progress; then
            tail -n 30 "$pip_log" >&2
            die "pip install -e '.[dev]' failed (whole output: $pip_log)"
        fi
        printf '%s\n' "$want" >"$STAMP"
    else
        log "dependencies up to date in $VENV (pyproject.toml unchanged)"
    fi
}
