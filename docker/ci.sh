#!/usr/bin/env bash
# CI step for the Docker chaos suite: runs docker/chaos.sh (via `make docker-chaos`) when a Docker
# engine and compose answer, and otherwise says why it skipped and succeeds. .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "==> docker chaos suite SKIPPED: $*"; exit 0; }

command -v docker >/dev/null 2>&1 || skip "no docker command on this machine"
if ! err=$(timeout 20 docker info 2>&1 >/dev/null); then
    skip "no Docker engine answers (docker info: $(printf '%s' "$err" | tail -n1))"
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    skip "neither 'docker compose' nor docker-compose is installed"
fi
echo "==> docker chaos suite (make docker-chaos)"
exec make --no-print-directory docker-chaos
