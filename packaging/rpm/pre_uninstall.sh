# cwp-portwatch %preun: on the last removal ($1 = 0), stop and disable the service.
if [ "$1" = 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now cwp-portwatch.service >/dev/null 2>&1 || :
fi
