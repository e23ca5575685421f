#!/usr/bin/env bash
# remon developer entry point: the two Quick start commands of the README.
#   ./dev.sh demo [remon demo options]   set up (once) and run the simulated fleet end to end
#   ./dev.sh test [pytest options]       set up (once) and run lint, types, import contracts, tests
# Works on a fresh Debian / Ubuntu / Raspberry Pi OS machine with Python >= 3.11. System packages
# (python3-venv; for tests mosquitto, victoria-metrics, postgresql and chromium) are installed with apt, via sudo when not root.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${REMON_VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[remon]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "missing system packages ${missing[*]} and no apt-get here: install them by hand"; exit 1
  fi
  log "installing system packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_python() {
  if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    log "remon needs Python >= 3.11 ($PY is $("$PY" --version 2>&1 || echo missing))"; exit 1
  fi
}

ensure_venv() {
  local extras=$1
  check_python
  # a venv made before python3-venv was installed has a python but no pip: make it anew
  if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "removing the incomplete virtual environment $VENV"
    rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
      local ver; ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${ver}-venv" || apt_install python3-venv
    fi
    log "creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  local spec=. stamp="$VENV/.remon-installed-base"
  if [ -n "$extras" ]; then spec=".[$extras]"; stamp="$VENV/.remon-installed-$extras"; fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing remon $spec into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
  fi
}

ensure_postgres() {
  # The tests use a throwaway database on the machine's PostgreSQL, reached over its Unix socket
  # as the current OS user (peer or trust auth). Install, start and create the role when missing.
  if ! command -v pg_ctlcluster >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  if ! pg_isready -q 2>/dev/null; then
    local ver; ver=$(ls /etc/postgresql | sort -V | tail -n1)
    log "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start
    for _ in $(seq 30); do pg_isready -q && break; sleep 1; done
  fi
  local me; me=$(id -un)
  if ! psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    log "creating PostgreSQL role $me"
    if command -v runuser >/dev/null; then
      as_root runuser -u postgres -- psql -q -c "CREATE ROLE \"$me\" LOGIN SUPERUSER"
    else
      as_root su postgres -c "psql -q -c 'CREATE ROLE \"$me\" LOGIN SUPERUSER'"
    fi
  fi
  export REMON_TEST_PG_URL=${REMON_TEST_PG_URL:-"postgresql+psycopg://$me@/postgres?host=/var/run/postgresql"}
}

cmd=${1:-help}
shift || true
case "$cmd" in
  demo)
    case " $* " in
      *postgres*) ensure_venv "postgres,virtual" ;;  # --database postgresql://… needs the driver
      *) ensure_venv virtual ;;  # virtual BLE peripherals (bumble) for the demo fleet
    esac
    exec "$VENV/bin/remon" demo "$@"
    ;;
  test)
    # victoria-metrics: the time-series writer's tests; chromium: the web UI's browser tests
    # (driven by Playwright at /usr/bin/chromium, so no browser is downloaded)
    apt_install mosquitto victoria-metrics chromium
    ensure_postgres
    ensure_venv dev
    PATH="$(cd "$VENV/bin" && pwd):$PATH"
    export PATH
    log "ruff"; ruff check . && ruff format --check --quiet . || { log "ruff found problems"; exit 1; }
    log "mypy (strict, product packages)"; mypy
    log "import contracts"; lint-imports --no-cache >/dev/null || lint-imports --no-cache
    log "pytest"; exec python -m pytest "$@"
    ;;
  bench)
    ensure_venv dev
    apt_install mosquitto
    ensure_postgres
    exec "$VENV/bin/python" bench/run_all.py "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [--duration S] | ./dev.sh test [pytest args] | ./dev.sh bench" >&2
    exit 2
    ;;
esac
