# Sourced by the scripts that run Python tools against a live hub (tests/sdk/run.sh,
# tests/contract/run.sh).
#
#   ensure_venv DIR REQUIREMENTS   # a virtualenv at DIR with REQUIREMENTS (pinned, from
#                                  # PyPI), made again when the requirements change
ensure_venv() {
    local venv="$1" requirements="$2"
    local stamp="$venv/.requirements"
    if [[ -x "$venv/bin/python" ]] && cmp -s "$requirements" "$stamp"; then
        return 0
    fi
    echo "venv: installing $requirements into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
}
