#!/usr/bin/env bash
# Chaos suite (`make docker-chaos`): build, start the stack, drive steady traffic, inject faults one
# after another while it flows, then stop traffic, wait for the distributor to drain, and print
# accepted / processed / duplicates / lost and each analyzer's share. Exit 1 if anything accepted
# was lost or the run did not complete. The stack is torn down on every exit path.
#
# Auth and TLS are on, as in compose.yml: docker/secrets.sh makes the tokens and certificates;
# the driver posts to https://127.0.0.1:<port>/logs with the ingest token, verified against the
# CA; the analyzers' control endpoints get the admin token; the distributor's admin API (queue,
# metrics, dead letters) is not published, so it is reached with `docker compose exec` on its
# admin listener (https://localhost:9090 inside the container: it serves the same certificate)
# with the admin token and the CA mounted there.
#
# Environment: CHAOS_DURABILITY (wal|memory, default wal), CHAOS_RATE (messages/s, default 200),
# CHAOS_PORT_BASE (emitter; distributor +1, analyzers +2..+5; default: a free run of six ports), CHAOS_SKIP_BUILD=1
# (reuse the image), CHAOS_SKIP_DISTRIBUTOR_KILL=1, CHAOS_KEEP=1 (leave the stack up on exit).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
LIMIT=${CHAOS_LIMIT_S:-840}   # the whole run stays under 15 minutes
P=${CHAOS_PROJECT:-logdist-chaos}
RATE=${CHAOS_RATE:-200}
DURABILITY=${CHAOS_DURABILITY:-wal}
OUT="$ROOT/docker/.build/chaos/$(date -u +%Y%m%dT%H%M%SZ)"
PY="$ROOT/.venv/bin/python"
[[ -x $PY ]] || PY=python3
SECRETS="$ROOT/docker/.secrets"
docker/secrets.sh "$SECRETS" >/dev/null
# Six consecutive free loopback ports (other test runs share this machine), unless given: below
# the ephemeral range, where no outgoing connection can be holding one when Docker binds it.
free_base() {
    "$PY" - <<'PY'
import random, socket
lo = 32768
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError):
    pass
top = lo - 6 if lo > 11000 else 60000
for _ in range(50):
    base = random.randrange(10000, top)
    socks = []
    try:
        for port in range(base, base + 6):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
        print(base)
        break
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
PY
}
use_ports() {
    BASE=$1
    export LOGDIST_PORT_EMITTER=$BASE LOGDIST_PORT_DISTRIBUTOR=$((BASE + 1)) LOGDIST_PORT_ANALYZER_1=$((BASE + 2)) \
        LOGDIST_PORT_ANALYZER_2=$((BASE + 3)) LOGDIST_PORT_ANALYZER_3=$((BASE + 4)) LOGDIST_PORT_ANALYZER_4=$((BASE + 5))
    DIST="https://127.0.0.1:$((BASE + 1))"
}
use_ports "${CHAOS_PORT_BASE:-$(free_base)}"
mkdir -p "$OUT/ids"
chmod 0777 "$OUT/ids"   # written by the analyzers' non-root user

export LOGDIST_DURABILITY=$DURABILITY CHAOS_IDS_DIR="$OUT/ids" LOGDIST_IMAGE=${DOCKER_IMAGE:-logdist:local}
if [[ -z ${COMPOSE_BIN:-} ]]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE_BIN="docker compose"; else COMPOSE_BIN=docker-compose; fi
fi
read -r -a COMPOSE <<<"$COMPOSE_BIN"
COMPOSE+=(-f docker/compose.yml -f docker/compose.chaos.yml -p "$P")

log() { printf '==> [chaos %4ds] %s\n' $((SECONDS - START)) "$*"; }
fail() { log "FAILED: $*"; FAILURES+=("$*"); }
FAILURES=()
DRIVER_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        touch "$OUT/stop"; sleep 2; kill "$DRIVER_PID" 2>/dev/null || true
    fi
    if [[ -n ${CHAOS_KEEP:-} ]]; then
        log "CHAOS_KEEP set: leaving project $P up (docker compose -p $P down --volumes to remove)"
    else
        log "saving logs to $OUT/compose.log and tearing the stack down"
        for c in $("${COMPOSE[@]}" ps -q 2>/dev/null); do docker unpause "$c" >/dev/null 2>&1 || true; done
        "${COMPOSE[@]}" logs --no-color >"$OUT/compose.log" 2>&1 || true
        "${COMPOSE[@]}" down --volumes --remove-orphans -t 5 >/dev/null 2>&1 || true
    fi
    log "finished with exit code $rc (artefacts in ${OUT#"$ROOT"/})"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

remaining() { echo $((LIMIT - (SECONDS - START))); }
cid() { "${COMPOSE[@]}" ps -q "$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }

wait_healthy() {  # wait_healthy SERVICE... (bounded)
    local deadline=$((SECONDS + ${WAIT_S:-90})) s c h
    for s in "$@"; do
        c=$(cid "$s")
        while h=$(health "$c"); [[ $h != healthy ]]; do
            if ((SECONDS > deadline)); then fail "$s not healthy (state: $h)"; return 1; fi
            sleep 1
        done
    done
}

# The request of http() and admin(): METHOD URL [JSON], the bearer token read from $TOKEN_FILE,
# https verified against $CA_FILE when set. Admin requests are application/json, body or not.
REQUEST='import os, ssl, sys, urllib.request as u
token = open(os.environ["TOKEN_FILE"]).readline().strip()
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = u.Request(sys.argv[2], data=data, method=sys.argv[1],
                headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
ca = os.environ.get("CA_FILE")
ctx = ssl.create_default_context(cafile=ca) if ca else None
print(u.urlopen(req, timeout=5, context=ctx).read().decode().strip())'

http() {  # http METHOD URL [JSON] -> body (exit 1 on failure): from the host, with the admin token
    TOKEN_FILE="$SECRETS/admin.tokens" CA_FILE="$SECRETS/ca.pem" "$PY" -c "$REQUEST" "$@"
}

admin() {  # admin METHOD PATH [JSON] -> body: the distributor's admin listener, inside its container
    local m=$1 path=$2
    shift 2
    "${COMPOSE[@]}" exec -T -e TOKEN_FILE=/run/secrets/admin_token -e CA_FILE=/run/secrets/ca_cert distributor \
        python3 -c "$REQUEST" "$m" "https://localhost:9090$path" "$@"
}

analyzers_fault() {  # analyzers_fault JSON: POST /fault to every analyzer
    local i
    for i in 2 3 4 5; do http POST "http://127.0.0.1:$((BASE + i))/fault" "$1" >/dev/null || return 1; done
}

dist_json() {  # dist_json PATH EXPR: evaluate EXPR on the distributor's JSON answer (as d)
    admin GET "$1" 2>/dev/null | "$PY" -c "import json, sys; d = json.load(sys.stdin); print($2)" 2>/dev/null
}

queue_size() { dist_json /queue 'd["size"]'; }

deliveries() { cat "$OUT"/ids/*.ids 2>/dev/null | wc -l; }

drain() {  # drain SECONDS: until /queue is empty and the recorded deliveries stop growing
    local deadline=$((SECONDS + $1)) stable=0 last="" n
    while :; do
        size=$(queue_size || true)
        n=$(deliveries)
        if [[ $size == 0 && $n == "$last" ]]; then stable=$((stable + 1)); else stable=0; fi
        ((stable >= 3)) && return 0
        if ((SECONDS > deadline)); then fail "queue did not drain (size ${size:-unknown})"; return 1; fi
        last=$n
        sleep 1
    done
}

step() {  # step "description" command... : runs one fault action, records a failure if it fails
    log "$1"
    shift
    "$@" >/dev/null || fail "step failed: $*"
}

if ! docker info >/dev/null 2>&1; then
    echo "chaos: no Docker engine answers" >&2
    exit 1
fi

if [[ -z ${CHAOS_SKIP_BUILD:-} ]]; then
    log "building the image (make docker-build)"
    make --no-print-directory docker-build
fi

"${COMPOSE[@]}" down --volumes --remove-orphans -t 2 >/dev/null 2>&1 || true
# A port can still be taken between free_base and Docker's bind (the machine is shared): then
# start again on other ports, unless the ports were given.
for try in 1 2 3; do
    log "starting project $P (durability $DURABILITY, distributor on $DIST)"
    if "${COMPOSE[@]}" up -d --no-build 2>&1 | tee "$OUT/compose-up.log"; then break; fi
    "${COMPOSE[@]}" down --volumes --remove-orphans -t 2 >/dev/null 2>&1 || true
    if [[ -n ${CHAOS_PORT_BASE:-} || $try -eq 3 ]] || ! grep -q "address already in use" "$OUT/compose-up.log"; then
        fail "docker compose up"
        exit 1
    fi
    use_ports "$(free_base)"
done
wait_healthy analyzer-1 analyzer-2 analyzer-3 analyzer-4 distributor emitter || exit 1
http GET "$DIST/health" || { fail "distributor /health"; exit 1; }

log "starting traffic: $RATE messages/s in packets of 20 to $DIST/logs"
"$PY" docker/chaos/driver.py --url "$DIST/logs" --out "$OUT" --rate "$RATE" \
    --token-file "$SECRETS/ingest.tokens" --cacert "$SECRETS/ca.pem" &
DRIVER_PID=$!
sleep 10

A1=$(cid analyzer-1) A2=$(cid analyzer-2) A3=$(cid analyzer-3) A4=$(cid analyzer-4) D=$(cid distributor)
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$A3")

step "fault 1/6: docker kill analyzer-1" docker kill "$A1"
sleep 6
step "          docker start analyzer-1" docker start "$A1"
wait_healthy analyzer-1 || true
sleep 6

step "fault 2/6: docker pause analyzer-2" docker pause "$A2"
sleep 6
step "          docker unpause analyzer-2" docker unpause "$A2"
wait_healthy analyzer-2 || true
sleep 6

step "fault 3/6: docker network disconnect analyzer-3 ($NET)" docker network disconnect "$NET" "$A3"
sleep 6
step "          docker network connect analyzer-3" docker network connect --alias analyzer-3 "$NET" "$A3"
wait_healthy analyzer-3 || true
sleep 6

step "fault 4/6: docker restart analyzer-4" docker restart -t 5 "$A4"
wait_healthy analyzer-4 || true
sleep 6

step "fault 5/6: POST /disable analyzer-2" http POST "http://127.0.0.1:$((BASE + 3))/disable"
sleep 6
step "          POST /enable analyzer-2" http POST "http://127.0.0.1:$((BASE + 3))/enable"
sleep 6

if [[ -z ${CHAOS_SKIP_DISTRIBUTOR_KILL:-} ]]; then
    # Make the distributor hold undelivered messages first (every analyzer answers 503 for a few
    # seconds), so that the kill hits accepted-but-unprocessed work: memory mode loses it; with
    # the write-ahead log nothing may be lost.
    step "fault 6/6: every analyzer answers 503 (the distributor holds what it accepts)" \
        analyzers_fault '{"fail_status": 503, "retry_after": 1}'
    sleep 4
    log "          distributor holds $(queue_size || echo '?') message(s)"
    step "          docker kill distributor" docker kill "$D"
    step "          analyzers recover" analyzers_fault '{"fail_status": null, "retry_after": null}'
    sleep 3
    step "          docker start distributor" docker start "$D"
    wait_healthy distributor || true
    log "          distributor restarted: $(dist_json /health '"durability %s, replayed %s message(s) from its WAL" % (d.get("durability"), d.get("wal_replayed_messages", "-"))' || echo '?'), holds $(queue_size || echo '?')"
    sleep 8
else
    log "fault 6/6 skipped (CHAOS_SKIP_DISTRIBUTOR_KILL)"
fi

log "stopping traffic"
touch "$OUT/stop"
deadline=$((SECONDS + 90))
while kill -0 "$DRIVER_PID" 2>/dev/null; do
    if ((SECONDS > deadline)); then fail "traffic driver did not stop"; kill "$DRIVER_PID" || true; break; fi
    sleep 1
done
wait "$DRIVER_PID" || fail "traffic driver reported an incomplete run"
DRIVER_PID=""

log "waiting for the distributor's queue to drain"
drain $(( $(remaining) < 180 ? $(remaining) : 180 )) || true
log "queue size ${size:-unknown}; $(deliveries) deliveries recorded"
dead=$(dist_json /api/v1/metrics 'd["totals"].get("dead_letters", 0)' || echo 0)
if [[ ${dead:-0} != 0 ]]; then
    log "replaying $dead dead letter(s) (POST /api/v1/dead-letters/replay)"
    admin POST /api/v1/dead-letters/replay '{}' || fail "dead-letter replay"
    drain 60 || true
fi

args=()
for f in "${FAILURES[@]}"; do args+=(--incomplete "$f"); done
if (( SECONDS - START > LIMIT )); then args+=(--incomplete "over the ${LIMIT}s time limit"); fi
admin GET /api/v1/metrics >"$OUT/metrics.json" 2>/dev/null || true
"$PY" docker/chaos/report.py --out "$OUT" --config docker/config/distributor.json \
    --metrics "file://$OUT/metrics.json" --durability "$DURABILITY" "${args[@]}" | tee "$OUT/report.txt"
