#!/bin/bash
# A fresh install by docs/operations.md, run by tests/e2e/test_fresh_install.py inside
# `unshare --mount --net` as root: /etc, /opt, /var, /usr/local and /root are overlays
# whose changes vanish with the namespace, /run is empty, the network is a loopback of
# its own, so the doc's paths and ports (5432, 1883, 8883, 8000) are used as written and
# nothing of the machine is touched.
#
# What differs from a real machine, and only that (shims/):
#   apt-get   the packages are installed already; postgresql's cluster "main" is
#             created and started as the package's install does;
#   python3 -m venv /opt/fablab/venv, and its pip: the test's own venv, installed;
#   systemctl starts the installed units' ExecStart as their User (no systemd here);
#   sudo      runuser;
#   GPIOZERO_PIN_FACTORY=mock: the controller runs in simulation mode (no GPIO here).
#
# Usage: runner.sh STATE_DIR BLOCKS_DIR REPO ANSWERS_FILE ADMIN_PASSWORD
set -euo pipefail

STATE="$1"
BLOCKS="$2"
REPO="$3"
ANSWERS="$4"
ADMIN_PASSWORD="$5"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf "==> [%s] %s\n" "$(date +%T)" "$*"; }

# --- a private machine ---------------------------------------------------------------------
ip link set lo up
for dir in /etc /opt /var /usr/local /root; do
    mkdir -p "$STATE/overlay$dir/upper" "$STATE/overlay$dir/work"
    mount -t overlay overlay \
        -o "lowerdir=$dir,upperdir=$STATE/overlay$dir/upper,workdir=$STATE/overlay$dir/work" "$dir"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/postgresql
mount -t tmpfs tmpfs /var/lib/postgresql
chown postgres:postgres /var/lib/postgresql
install -d -o postgres -g postgres -m 2775 /run/postgresql
install -d -o mosquitto -g mosquitto /run/mosquitto
# The test venv's Python may live under /root/.pyenv: let the service users reach it.
chmod 711 /root
echo "127.0.0.1 broker.mylab.org" >>/etc/hosts
install -d /opt/fablab/venv/bin
for program in python fablab fablab-pi; do
    ln -s "$REPO/.venv/bin/$program" "/opt/fablab/venv/bin/$program"
done
install -m 755 "$HERE/shims/venv-pip" /opt/fablab/venv/bin/pip
export PATH="$HERE/shims:$PATH" GPIOZERO_PIN_FACTORY=mock

show_logs() {
    for log in /run/e2e-units/*.log /var/log/mosquitto/mosquitto.log; do
        [ -f "$log" ] && { say "tail of $log"; tail -n 25 "$log"; }
    done
    return 0
}
cleanup() {
    systemctl stop fablab-pi fablab-server mosquitto >/dev/null 2>&1 || true
    pg_ctlcluster 15 main stop -m fast >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the doc's blocks, in order -----------------------------------------------------------
admin=/root/fablab-admin
pi=/root/pi-source
install -d -m 700 "$admin" "$pi"
for block in "$BLOCKS"/*.sh; do
    name="$(basename "$block" .sh)"
    case "$name" in
        *-source) cwd="$REPO" ;;
        *-pi)
            # On the Pi: a copy of the source, and what was copied over from the server.
            rsync -a --exclude .git --exclude .venv --exclude fablab-data "$REPO/" "$pi/"
            cp "$admin/laser.toml" /etc/fablab/ca/ca.crt "$pi/"
            cwd="$pi" ;;
        *) cwd="$admin" ;;
    esac
    say "block $name (in $cwd)"
    sed 's/^/    /' "$block"
    if ! (cd "$cwd" && bash -euo pipefail "$block" <"$ANSWERS"); then
        say "FAILED: block $name"
        show_logs
        exit 1
    fi
done

# --- what the operator then sees ----------------------------------------------------------
say "check: the controller reports online to the server (TLS, its login, the ACL)"
state=""
for _ in $(seq 1 300); do
    state="$(runuser -u postgres -- psql -tA -d fablab \
        -c "SELECT state FROM controller WHERE id = 'laser'" 2>/dev/null || true)"
    [ "$state" = online ] && break
    sleep 0.1
done
if [ "$state" != online ]; then
    say "FAILED: controller laser is '$state', not online"
    show_logs
    exit 1
fi

say "check: the admin logs in through the web API"
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"email\": \"admin@mylab.org\", \"password\": \"$ADMIN_PASSWORD\"}" \
    http://127.0.0.1:8000/api/auth/login)"
if [ "$code" != 200 ]; then
    say "FAILED: login answered $code"
    show_logs
    exit 1
fi

say "check: the services run as their own users"
pgrep -u fablab -f "fablab serve" >/dev/null || { say "FAILED: no fablab serve as fablab"; exit 1; }
pgrep -u fablab-pi -f "fablab-pi --log-format json run" >/dev/null ||
    { say "FAILED: no fablab-pi run as fablab-pi"; exit 1; }
pgrep -u mosquitto -x mosquitto >/dev/null || { say "FAILED: no mosquitto as mosquitto"; exit 1; }
say "FRESH INSTALL OK"
