# The mlopsd system user (the unit runs as it; systemd makes /var/lib/mlopsd for it).
if ! getent passwd mlopsd >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /var/lib/mlopsd \
        --shell /sbin/nologin --comment "mlopsd daemon" mlopsd
fi
exit 0
