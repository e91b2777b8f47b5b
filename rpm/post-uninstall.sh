# On erase ($1 = 0) the user and the state go too; a modified config is kept as
# /etc/mlopsd/mlops.toml.rpmsave by rpm itself.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" -eq 0 ]; then
    getent passwd mlopsd >/dev/null && userdel mlopsd >/dev/null 2>&1 || true
    rm -rf /var/lib/mlopsd
fi
exit 0
