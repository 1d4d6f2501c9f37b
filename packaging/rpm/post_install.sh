# cwp-portwatch %post: make systemd and the journal see the unit and the catalog; the service
# is not enabled or started (it needs a watchlist and credentials first).
command -v journalctl >/dev/null 2>&1 && journalctl --update-catalog || :
[ -d /run/systemd/system ] && systemctl daemon-reload || :
# $1 = 2 on upgrade: restart a running daemon so that it runs the new binary.
[ "$1" -ge 2 ] 2>/dev/null && systemctl try-restart cwp-portwatch.service >/dev/null 2>&1 || :
