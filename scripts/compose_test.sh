#!/usr/bin/env bash
# `make compose-test`: the compose stack for real. Builds the serving image, starts `service` and
# `prometheus` from docker-compose.yml, waits until both are healthy, runs scripts/compose_smoke.py
# (real images to /predict through the published port; Prometheus reports the target up and the
# request counter rising), checks the container's promises (non-root, tini as PID 1, threads from
# the CPU quota, SIGTERM lets in-flight requests finish), then tears everything down, also on failure.
# Grafana is not started: it has no stand-in image where there is no registry.
#
# With a Docker engine it uses that; without one (as root) it brings up
# ../shared/tools/container-sandbox.sh (podman + docker-compose 1.29) and stops it again after,
# unless it was already running or KEEP_SANDBOX=1.
#
# Environment: OODSERVE_CPUS (CPU limit of the service container, default 1 here so the derived
# thread count differs from the host's cores), OODSERVE_MODELS (models to mount instead of the
# bundled ones), DATA (folder with MNIST/ and FashionMNIST/, default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."

SANDBOX=${CONTAINER_SANDBOX:-../shared/tools/container-sandbox.sh}
DATA=${DATA:-../shared/data}
export OODSERVE_CPUS=${OODSERVE_CPUS:-1}
# Its own project name, so it neither collides with nor tears down a stack someone runs here.
PROJECT=oodserve-compose-test
COMPOSE=(docker compose -p "$PROJECT")

log() { printf '[compose-test] %s\n' "$*"; }
die() { log "FAILED: $*" >&2; exit 1; }
# Phase timings for the closing summary (EPOCHREALTIME: bash 5's clock with microseconds).
timings=()
started=$EPOCHREALTIME
phase_start=$EPOCHREALTIME
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f} s")' "$1" "$EPOCHREALTIME"; }
phase_done() { timings+=("$(printf '%-30s %8s' "$1" "$(elapsed "$phase_start")")"); phase_start=$EPOCHREALTIME; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The bundled models, or OODSERVE_MODELS (a folder that docker-compose.yml mounts over them).
compgen -G "${OODSERVE_MODELS:-models}/*.onnx" >/dev/null ||
  die "no ${OODSERVE_MODELS:-models}/*.onnx to serve (make models, or set OODSERVE_MODELS)"
[[ -r $DATA/MNIST/raw/t10k-images-idx3-ubyte ]] || die "no MNIST test images under DATA=$DATA"

# ---------------------------------------------------------------------------------- engine --
sandbox_started=0
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log "using the Docker engine at ${DOCKER_HOST:-the default socket}"
else
  [[ $EUID == 0 ]] || die "no Docker engine reachable, and the container sandbox needs root"
  [[ -x $SANDBOX ]] || die "no Docker engine reachable and no $SANDBOX"
  "$SANDBOX" status 2>/dev/null | grep -q '^podman service: pid' || sandbox_started=1
  log "no Docker engine: bringing up the container sandbox (first time ~2 min)"
  envs=$("$SANDBOX" up) && eval "$envs"
fi
phase_done "engine ready"

# Free ports on loopback, so a stack already running here (or anything on 8000/9090) is no obstacle.
OODSERVE_PORT=$(free_port)
PROMETHEUS_PORT=$(free_port)
export OODSERVE_PORT PROMETHEUS_PORT

cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    log "logs of the failed run:"
    "${COMPOSE[@]}" logs --no-color --tail=60 service prometheus 2>&1 | sed 's/^/    /' || true
  fi
  "${COMPOSE[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || log "docker compose down failed"
  if ((sandbox_started)) && [[ -z ${KEEP_SANDBOX:-} ]]; then
    "$SANDBOX" down >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------- the stack --
log "building the serving image"
"${COMPOSE[@]}" build service
phase_done "build service image"

log "starting service (127.0.0.1:$OODSERVE_PORT) and prometheus (127.0.0.1:$PROMETHEUS_PORT)"
"${COMPOSE[@]}" up -d --wait --wait-timeout 180 service prometheus
phase_done "up until healthy"

python3 scripts/compose_smoke.py --data "$DATA" \
  --service "http://127.0.0.1:$OODSERVE_PORT" --prometheus "http://127.0.0.1:$PROMETHEUS_PORT"
phase_done "smoke test (requests+scrape)"

# ------------------------------------------------------------------- container promises --
in_service() { "${COMPOSE[@]}" exec -T service "$@"; }
uid=$(in_service id -u)
[[ $uid != 0 ]] || die "the service runs as root"
pid1=$(in_service cat /proc/1/comm)
[[ $pid1 == tini ]] || die "PID 1 is '$pid1', not tini"
threads=$(in_service python -c 'from service.settings import Settings; print(Settings().intra_op_threads)')
expected=$(python3 -c 'import math, sys; print(math.ceil(float(sys.argv[1])))' "$OODSERVE_CPUS")
[[ $threads == "$expected" ]] ||
  die "onnxruntime threads $threads, expected $expected from the container's CPU quota ($OODSERVE_CPUS)"
log "container: uid $uid, PID 1 $pid1, $threads intra-op thread(s) with cpus=$OODSERVE_CPUS on a $(nproc)-core host"
phase_done "container checks (exec)"

# SIGTERM must reach uvicorn (through tini), let the requests in flight finish, and end in a clean
# shutdown well within the grace period. A 3 s batching delay keeps requests in flight long enough.
log "recreating the service with OODSERVE_MAX_DELAY_MS=3000 and OODSERVE_BATCH_WAIT_WHEN_IDLE=true (requests wait in the queue) for the drain check"
OODSERVE_MAX_DELAY_MS=3000 OODSERVE_BATCH_WAIT_WHEN_IDLE=true "${COMPOSE[@]}" up -d --wait --wait-timeout 120 service
container=$("${COMPOSE[@]}" ps -q service)
python3 scripts/compose_smoke.py --data "$DATA" --service "http://127.0.0.1:$OODSERVE_PORT" \
  --drain "docker stop -t 30 $container"
phase_done "drain check (SIGTERM)"
# uvicorn re-raises SIGTERM once it has shut down, so a clean stop exits 143 (128 + SIGTERM), passed
# on by tini; 137 would mean Docker had to SIGKILL it after the grace period.
exit_code=$(docker inspect --format '{{.State.ExitCode}}' "$container")
[[ $exit_code == 143 || $exit_code == 0 ]] ||
  die "the service exited with $exit_code on SIGTERM (137: killed after the grace period)"
# Into a variable first: `docker logs | grep -q` fails under pipefail when grep's early exit leaves
# docker logs writing into a closed pipe (SIGPIPE), which CI saw after a clean shutdown.
service_log=$(docker logs "$container" 2>&1)
grep -q 'Application shutdown complete' <<<"$service_log" ||
  die "no 'Application shutdown complete' in the service's log after SIGTERM"
log "SIGTERM: drained and shut down cleanly (exit code $exit_code)"

size=$(docker image inspect --format '{{.Size}}' oodserve:latest)
"${COMPOSE[@]}" down --volumes --remove-orphans >/dev/null 2>&1
phase_done "tear down"
log "passed in $(elapsed "$started"); serving image oodserve:latest $((size / 1000000)) MB"
printf '    %s\n' "${timings[@]}"
