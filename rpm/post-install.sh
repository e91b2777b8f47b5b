# New or changed unit files: systemd reads them again. An upgrade leaves a running daemon as
# it is (restart it with `systemctl restart mlopsd`); /etc/mlopsd/mlops.toml is kept.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
