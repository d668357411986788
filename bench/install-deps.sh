#!/usr/bin/env bash
# Install the comparison systems and the load generator for the end-to-end bench
# (Debian packages). Idempotent: does nothing when everything is already there.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -eq 0 ]; then
    echo "bench deps present: nginx haproxy wrk"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "==> installing ${need[*]} (Debian packages)"
$SUDO apt-get update -qq
# The bench runs nginx/haproxy as its own processes; never start the system services.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
