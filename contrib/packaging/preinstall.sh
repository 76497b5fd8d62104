#!/bin/sh
# The package's files under /etc/bridge belong to the bridge user, which
# must exist before they are unpacked.
set -e
if ! getent passwd bridge >/dev/null; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		echo 'u bridge - "Chatwoot-Dify bridge" /var/lib/bridge /usr/sbin/nologin' | systemd-sysusers -
	else
		useradd --system --user-group --home-dir /var/lib/bridge --no-create-home \
			--shell /usr/sbin/nologin --comment "Chatwoot-Dify bridge" bridge
	fi
fi
