# Shared by scripts/test and scripts/demo: a Python venv with moto server, started on a free
# loopback port through scripts/moto_server.py (moto with the AWS behaviour the tests need that
# moto leaves out). Source it; then `moto_start` exports MOTO_URL and stops the server on exit.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLOPSD_VENV:-$ROOT/.venv}"

moto_install() {
    if [ ! -x "$VENV/bin/moto_server" ]; then
        echo "== installing moto server into $VENV (pip)" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]"
    fi
}

# Linters the deploy-kit tests run: cfn-lint (CloudFormation) and parliament (IAM policies).
linters_install() {
    moto_install
    if [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -x "$VENV/bin/parliament" ]; then
        echo "== installing cfn-lint and parliament into $VENV (pip)" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check cfn-lint parliament
    fi
}

moto_start() {
    moto_install
    local port
    port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    MOTO_LOG="${MOTO_LOG:-$(mktemp -t moto.XXXXXX.log)}"
    "$VENV/bin/python" "$ROOT/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
    export MOTO_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "$MOTO_URL/moto-api/" 2>/dev/null; then
            echo "== moto server at $MOTO_URL (log: $MOTO_LOG)" >&2
            return 0
        fi
        if ! kill -0 "$MOTO_PID" 2>/dev/null; then
            echo "moto server failed to start; its log:" >&2
            cat "$MOTO_LOG" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "moto server did not answer at $MOTO_URL within 20 s; its log:" >&2
    cat "$MOTO_LOG" >&2
    return 1
}
