# $1 is the number of versions left after this: 0 on erase (stop the daemon), 1 on upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop mlopsd.service >/dev/null 2>&1 || true
fi
exit 0
