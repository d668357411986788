#!/usr/bin/env bash
# Status of a logdist compose stack: each container's state and health, the distributor's /queue
# and each analyzer's /processed, read inside the containers (so any host port mapping works):
# those are admin reads, so they carry the admin token mounted at /run/secrets/admin_token, and
# the distributor's is made on its admin listener (https://localhost:9090, the same certificate,
# verified against /run/secrets/ca_cert), which is not published.
#   docker/status.sh [--wait SECONDS] [PROJECT]     (default project: logdist)
# --wait first waits (bounded) until every container is healthy, and exits 1 if one is not.
set -uo pipefail
WAIT=0
if [[ ${1:-} == --wait ]]; then WAIT=$2; shift 2; fi
P="${1:-logdist}"

ids=$(docker ps -a -q --filter "label=com.docker.compose.project=$P")
if [[ -z $ids ]]; then
    echo "no containers in compose project '$P' (make docker-up starts it)"
    exit 0
fi

rc=0
if ((WAIT > 0)); then
    deadline=$((SECONDS + WAIT))
    while :; do
        bad=$(for id in $ids; do
            docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"
        done | grep -cv '^healthy$')
        ((bad == 0)) && break
        if ((SECONDS > deadline)); then echo "status: $bad container(s) not healthy after ${WAIT}s"; rc=1; break; fi
        sleep 1
    done
fi

fetch() {  # fetch CONTAINER URL -> JSON body or an error note (admin token sent when mounted)
    docker exec "$1" python3 -c 'import os, ssl, sys, urllib.request as u
f, ca = "/run/secrets/admin_token", "/run/secrets/ca_cert"
h = {"Authorization": "Bearer " + open(f).readline().strip()} if os.path.exists(f) else {}
ctx = ssl.create_default_context(cafile=ca) if os.path.exists(ca) else None
try:
    print(u.urlopen(u.Request(sys.argv[1], headers=h), timeout=3, context=ctx).read().decode().strip())
except Exception as e:
    print("unavailable:", getattr(e, "code", "") or e)' "$2" 2>/dev/null || echo "unavailable"
}

printf '%-14s %-10s %-10s %-22s %s\n' SERVICE STATE HEALTH PORTS DETAIL
for id in $ids; do
    svc=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
    state=$(docker inspect -f '{{.State.Status}}' "$id")
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' "$id")
    ports=$(docker port "$id" 8080/tcp 2>/dev/null | head -n1)
    detail=""
    if [[ $state == running ]]; then
        case $svc in
            distributor*) detail="queue $(fetch "$id" https://localhost:9090/queue)" ;;
            analyzer*) detail="processed $(fetch "$id" http://127.0.0.1:8080/processed)" ;;
            emitter*) detail="stats $(fetch "$id" http://127.0.0.1:8080/stats | cut -c1-160)" ;;
        esac
    fi
    printf '%-14s %-10s %-10s %-22s %s\n' "$svc" "$state" "$health" "${ports:--}" "$detail"
done | sort
exit $rc
