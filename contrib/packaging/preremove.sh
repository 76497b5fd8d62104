#!/bin/sh
# Stop on removal, not on upgrade (deb passes "remove", rpm passes 0).
set -e
case "$1" in
remove|0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now bridge.service bridge.socket >/dev/null 2>&1 || true
	fi
	;;
esac
