#!/usr/bin/env bash
# Install the fablab-monitor controller on Raspberry Pi OS Lite (Bookworm), from a copy
# of the fablab-monitor source on the Pi:
#
#   sudo deploy/pi/install.sh
#
# It installs the system packages, copies the source to /opt/fablab/src, makes the venv
# /opt/fablab/venv with the `pi` extra, creates the system user fablab-pi (groups gpio,
# spi, input), enables SPI (for the MFRC522 reader) and installs the fablab-pi service.
# The controller's one config file is /etc/fablab/controller.toml: put there what
# `fablab controller-credentials MACHINE --broker mqtts://BROKER:8883` printed on the
# server, and the lab CA as /etc/fablab/ca.crt; then
#
#   sudo -u fablab-pi /opt/fablab/venv/bin/fablab-pi check --config /etc/fablab/controller.toml
#   sudo systemctl enable --now fablab-pi
#
# Running it again upgrades the installed code and keeps the config. docs/operations.md
# has the whole procedure.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX=/opt/fablab
CONFIG_DIR=/etc/fablab
CONFIG="$CONFIG_DIR/controller.toml"
SERVICE_USER=fablab-pi
UNIT=/etc/systemd/system/fablab-pi.service

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run it as root: sudo $0"
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a fablab-monitor source folder"

log "system packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# lgpio and evdev come from Debian (no compiler needed on the Pi); the venv sees them.
apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-lgpio python3-evdev python3-spidev rsync

log "system user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "/var/lib/$SERVICE_USER" --shell /usr/sbin/nologin \
        "$SERVICE_USER"
fi
for group in gpio spi input; do
    getent group "$group" >/dev/null || groupadd --system "$group"
    usermod -a -G "$group" "$SERVICE_USER"
done

log "SPI"
if command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_spi 0
else
    boot_config=/boot/firmware/config.txt
    [ -f "$boot_config" ] || boot_config=/boot/config.txt
    if [ -f "$boot_config" ] && ! grep -q '^dtparam=spi=on' "$boot_config"; then
        echo 'dtparam=spi=on' >>"$boot_config"
        log "SPI enabled in $boot_config: reboot once"
    fi
fi

log "code in $PREFIX/src, venv in $PREFIX/venv"
install -d -m 755 "$PREFIX"
rsync -a --delete --exclude .git --exclude .venv --exclude fablab-data "$SRC/" "$PREFIX/src/"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$PREFIX/venv"
fi
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$PREFIX/src[pi]"

log "config $CONFIG"
install -d -m 755 "$CONFIG_DIR"
if [ ! -f "$CONFIG" ]; then
    install -m 640 -o root -g "$SERVICE_USER" "$PREFIX/src/firmware_pi/example-config.toml" \
        "$CONFIG"
    log "wrote an example $CONFIG: replace it with the server's controller-credentials output"
fi
chown root:"$SERVICE_USER" "$CONFIG"
chmod 640 "$CONFIG"

log "service fablab-pi"
install -m 644 "$PREFIX/src/deploy/systemd/fablab-pi.service" "$UNIT"
systemctl daemon-reload
systemctl enable fablab-pi
log "done: check with  sudo -u $SERVICE_USER $PREFIX/venv/bin/fablab-pi check --config $CONFIG"
log "then start it with  sudo systemctl restart fablab-pi"
