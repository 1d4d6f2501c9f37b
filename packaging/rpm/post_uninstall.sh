# cwp-portwatch %postun: forget the unit and the catalog entries. rpm keeps an edited
# config.toml as config.toml.rpmsave; the operator's own files and the state stay.
command -v journalctl >/dev/null 2>&1 && journalctl --update-catalog || :
[ -d /run/systemd/system ] && systemctl daemon-reload || :
