#!/usr/bin/env bash
# Build the mofdft_jax image and run it once on a small job (issue 3; called by .ci/run).
#
# usage: bash scripts/container_check.sh [options]
#   --variant cpu|cuda12   which lock to install (default cpu)
#   --tag IMAGE            image name (default mofdft_jax:<variant>; the cpu build is also tagged
#                          mofdft_jax:latest)
#   --base IMAGE           base image to build FROM (default: the Dockerfile's pinned one if it is
#                          present or can be pulled, else a local debootstrap base, see below)
#   --rebuild-base         remake the local debootstrap base even if it exists
#   --no-cache             docker build --no-cache
#   --gpus                 add `--gpus all` to the test runs; JAX must then report backend gpu
#   --skip-default-cmd     do not run the image's default command (the README's main job)
#
# What it does, each step timed:
#   1. Docker engine: uses a running one; otherwise (as root) installs docker.io with apt if needed
#      and starts dockerd, and stops ONLY that daemon on exit (trap).
#   2. Base image: the Dockerfile's default (tag + digest) if present or pullable; on machines that
#      cannot pull it, a local Debian bookworm minbase made with debootstrap + `docker import`
#      (tag mofdft-local/debian:bookworm-slim, reused on reruns) passed as --build-arg BASE_IMAGE.
#   3. docker build with the legacy builder (no buildx needed). The host CA bundle (needed where the
#      egress intercepts TLS) is copied to .docker-build/build-ca.pem, which only the discarded
#      build stage reads, and deleted on exit: it never reaches the image or git.
#      MOFDFT_BUILD_CA=<file> picks another bundle, MOFDFT_BUILD_CA=none passes none.
#   4. Runs (offline, --network none): `mofdft --version`; the uid is not 0; `mofdft info --json`
#      and scripts/container_smoke.py write into a mounted results folder
#      (results/_scratch/container_check/<variant>/); the image's default command with that mount;
#      no CA file inside the image.
# Exit status 0 only if every step passed. Needs root for apt/dockerd/debootstrap (not for an
# already running engine with a base image at hand). MOFDFT_DEBIAN_MIRROR overrides the mirror.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VARIANT=cpu
TAG=""
BASE=""
REBUILD_BASE=0
NO_CACHE=0
GPUS=0
RUN_DEFAULT_CMD=1
LOCAL_BASE_TAG="mofdft-local/debian:bookworm-slim"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${MOFDFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="${TMPDIR:-/tmp}/mofdft-container-check"

log() { printf '[container_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --variant) VARIANT="${2:?--variant needs a value}"; shift 2 ;;
        --variant=*) VARIANT="${1#*=}"; shift ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --base) BASE="${2:?--base needs a value}"; shift 2 ;;
        --rebuild-base) REBUILD_BASE=1; shift ;;
        --no-cache) NO_CACHE=1; shift ;;
        --gpus) GPUS=1; shift ;;
        --skip-default-cmd) RUN_DEFAULT_CMD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
case "$VARIANT" in cpu|cuda12) ;; *) die "--variant must be cpu or cuda12, not '$VARIANT'" ;; esac
[ -f "$ROOT/requirements/$VARIANT.txt" ] || die "missing lock file requirements/$VARIANT.txt"
[ -f "$ROOT/Dockerfile" ] || die "missing $ROOT/Dockerfile"
TAG="${TAG:-mofdft_jax:$VARIANT}"
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
mkdir -p "$WORK"

# ---- one run at a time (the docker test and .ci/run may both call this script) -------------------
exec 9>"$WORK/lock"
flock -n 9 || die "another container_check.sh is running (lock $WORK/lock)"

# ---- cleanup: only what this script created -------------------------------------------------------
DOCKERD_PID=""
POLICY_RC_CREATED=0
CA_COPY=""
ROOTFS=""
T_START=$SECONDS

unmount_under() {  # unmount everything mounted below $1 (debootstrap may leave /proc, /sys, /dev)
    local dir="$1" m
    command -v findmnt >/dev/null || return 0
    { findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true; } | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    return 0
}

stop_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    log "stopping the dockerd this script started (pid $DOCKERD_PID)"
    local children i
    children="$(pgrep -P "$DOCKERD_PID" || true)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for i in $(seq 1 40); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "dockerd did not stop within 20 s; killing it and its children ($children)"
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        for i in $children; do kill -KILL "$i" 2>/dev/null || true; done
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM ERR
    set +e  # clean up as much as possible, whatever fails
    if [ -n "$CA_COPY" ]; then
        rm -f "$CA_COPY"
        rmdir "$ROOT/.docker-build" 2>/dev/null || true
    fi
    if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then
        unmount_under "$ROOTFS"
        rm -rf --one-file-system "$ROOTFS"
    fi
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    stop_dockerd
    if [ "$status" = 0 ]; then
        log "PASSED in $((SECONDS - T_START)) s"
    else
        log "FAILED (exit $status) after $((SECONDS - T_START)) s"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'log "command failed (line $LINENO): $BASH_COMMAND"' ERR

# ---- step timing ---------------------------------------------------------------------------------
STEP_NAMES=(); STEP_SECONDS=(); STEP_T0=0; STEP_NAME=""
step() {
    step_done
    STEP_NAME="$1"; STEP_T0=$SECONDS
    printf '\n---- %s ----\n' "$STEP_NAME" >&2
}
step_done() {
    if [ -n "$STEP_NAME" ]; then
        STEP_NAMES+=("$STEP_NAME"); STEP_SECONDS+=("$((SECONDS - STEP_T0))")
        log "$STEP_NAME: $((SECONDS - STEP_T0)) s"
    fi
    STEP_NAME=""
}

# ---- apt, without starting services ---------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    [ "$IS_ROOT" = 1 ] || die "need $* but not root: install them (apt-get install $*) or run as root"
    command -v apt-get >/dev/null || die "need $* and there is no apt-get: install them by hand"
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep package scripts from starting daemons
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

# ==== 1. docker engine =============================================================================
step "docker engine"
docker_up() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
start_dockerd() {
    log "starting dockerd (log: $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 120); do
        docker_up && break
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            tail -n 20 "$WORK/dockerd.log" >&2
            DOCKERD_PID=""
            die "dockerd exited during start-up"
        fi
        sleep 0.5
    done
    docker_up || { tail -n 20 "$WORK/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
    log "dockerd $(docker version -f '{{.Server.Version}}') started (pid $DOCKERD_PID)"
}
if docker_up; then
    log "using the running docker engine ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
else
    [ "$IS_ROOT" = 1 ] || die "no docker engine reachable, and starting one needs root"
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        apt_install docker.io
    fi
    command -v dockerd >/dev/null || die "dockerd still missing after installing docker.io"
    if docker_up; then
        log "using the running docker engine (reachable once the client was installed)"
    else
        start_dockerd
    fi
fi

# ==== 2. base image ================================================================================
make_local_base() {
    command -v debootstrap >/dev/null || apt_install debootstrap debian-archive-keyring
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring
    ROOTFS="$(mktemp -d /var/tmp/mofdft-rootfs.XXXXXX)"
    log "debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR (log: $WORK/debootstrap.log)"
    if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            "$DEBIAN_SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    unmount_under "$ROOTFS"
    # make it like the official debian:bookworm-slim: updates + security sources, no docs/man/locales
    rm -f "$ROOTFS/etc/apt/sources.list"
    cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
EOF
    find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$ROOTFS"/usr/share/{man,info,locale,groff,lintian}/* \
           "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
           "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*.log
    log "docker import -> $LOCAL_BASE_TAG"
    tar --numeric-owner --one-file-system -C "$ROOTFS" -c . \
        | docker import --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $DEBIAN_SUITE $DEBIAN_MIRROR ($(date -u +%Y-%m-%dT%H:%MZ))" \
            - "$LOCAL_BASE_TAG" >/dev/null
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
}

step "base image"
DEFAULT_BASE="$(sed -n 's/^ARG BASE_IMAGE=//p' "$ROOT/Dockerfile" | head -n 1)"
[ -n "$DEFAULT_BASE" ] || die "no 'ARG BASE_IMAGE=' default in the Dockerfile"
if [ -n "$BASE" ]; then
    log "base image given: $BASE"
elif docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE="$DEFAULT_BASE"; log "pinned base present: $BASE"
elif [ "$REBUILD_BASE" = 0 ] && timeout 120 docker pull -q "$DEFAULT_BASE" >"$WORK/pull.log" 2>&1; then
    BASE="$DEFAULT_BASE"; log "pulled pinned base: $BASE"
else
    if [ "$REBUILD_BASE" = 0 ]; then
        log "cannot pull $DEFAULT_BASE: $(tail -n 1 "$WORK/pull.log" 2>/dev/null)"
    fi
    if [ "$REBUILD_BASE" = 1 ] || ! docker image inspect "$LOCAL_BASE_TAG" >/dev/null 2>&1; then
        make_local_base
    else
        log "reusing local base $LOCAL_BASE_TAG (--rebuild-base to remake it)"
    fi
    BASE="$LOCAL_BASE_TAG"
fi

# ==== 3. build =====================================================================================
step "docker build ($VARIANT)"
CA_SRC="${MOFDFT_BUILD_CA:-}"
if [ -z "$CA_SRC" ]; then
    for c in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [ -n "$c" ] && [ -f "$c" ]; then CA_SRC="$c"; break; fi
    done
fi
if [ -n "$CA_SRC" ] && [ "$CA_SRC" != none ]; then
    [ -f "$CA_SRC" ] || die "CA bundle $CA_SRC not found (MOFDFT_BUILD_CA=none to pass none)"
    mkdir -p "$ROOT/.docker-build"
    CA_COPY="$ROOT/.docker-build/build-ca.pem"
    cp "$CA_SRC" "$CA_COPY"
    log "build-time CA bundle: $CA_SRC (deps stage only, deleted after the build)"
fi
BUILD_FLAGS=(--build-arg "VARIANT=$VARIANT" --build-arg "BASE_IMAGE=$BASE" -t "$TAG")
[ "$NO_CACHE" = 1 ] && BUILD_FLAGS+=(--no-cache)
log "DOCKER_BUILDKIT=0 docker build ${BUILD_FLAGS[*]} $ROOT (log: $WORK/build-$VARIANT.log)"
stamp_steps() {  # prefix the builder's "Step i/n" lines with the time, to see where it goes
    local line
    while IFS= read -r line; do
        if [[ "$line" =~ ^(Step\ [0-9]+/[0-9]+\ :|Successfully\ built\ [0-9a-f]{12}$) ]]; then
            line="[$(date +%H:%M:%S)] $line"
        fi
        printf '%s\n' "$line"
    done
}
if ! DOCKER_BUILDKIT=0 docker build "${BUILD_FLAGS[@]}" "$ROOT" 2>&1 | stamp_steps | tee "$WORK/build-$VARIANT.log"; then
    die "docker build failed (log: $WORK/build-$VARIANT.log)"
fi
if [ -n "$CA_COPY" ]; then rm -f "$CA_COPY"; rmdir "$ROOT/.docker-build" 2>/dev/null || true; CA_COPY=""; fi
if [ "$VARIANT" = cpu ] && [ "$TAG" = "mofdft_jax:cpu" ]; then docker tag "$TAG" mofdft_jax:latest; fi
IMAGE_BYTES="$(docker image inspect -f '{{.Size}}' "$TAG")"
log "image $TAG: $((IMAGE_BYTES / 1000000)) MB"

# ==== 4. runs ======================================================================================
step "container runs"
RUN_FLAGS=(--rm --network none)
[ "$GPUS" = 1 ] && RUN_FLAGS+=(--gpus all)
RESULTS="$ROOT/results/_scratch/container_check/$VARIANT"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
MOUNT=(-v "$RESULTS:/home/mofdft/results")

version_out="$(docker run "${RUN_FLAGS[@]}" "$TAG" --version)"
want_version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
log "mofdft --version: $version_out"
[ "$version_out" = "mofdft_jax $want_version" ] || die "expected 'mofdft_jax $want_version'"

uid="$(docker run "${RUN_FLAGS[@]}" --entrypoint id "$TAG" -u)"
gid="$(docker run "${RUN_FLAGS[@]}" --entrypoint id "$TAG" -g)"
log "container user: uid $uid gid $gid ($(docker run "${RUN_FLAGS[@]}" --entrypoint id "$TAG" -un))"
[ "$uid" != 0 ] || die "the image runs as root"
# the mounted folder must be writable by the image's user (as a user would chown their results/)
chown "$uid:$gid" "$RESULTS" 2>/dev/null || chmod 0777 "$RESULTS"

docker run "${RUN_FLAGS[@]}" "${MOUNT[@]}" --entrypoint sh "$TAG" -c \
    'id -u > results/uid.txt && mofdft info --json > results/info.json'
python3 - "$RESULTS" "$uid" "$GPUS" <<'EOF'
import json, os, sys
results, uid, gpus = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
info = json.load(open(os.path.join(results, "info.json")))
assert info["jax_enable_x64"] is True, f"jax_enable_x64 is {info['jax_enable_x64']!r} in the image"
# --gpus: a CPU fallback (CUDA plugin not loaded, no device passed through) is a failure
assert not gpus or info["jax_backend"] == "gpu", f"--gpus but JAX backend {info['jax_backend']!r}"
assert int(open(os.path.join(results, "uid.txt")).read()) == uid != 0
assert os.stat(os.path.join(results, "info.json")).st_uid == uid, "info.json not written by the image user"
print(f"info.json: mofdft_jax {info['mofdft_jax']}, python {info['python']}, "
      f"backend {info['jax_backend']}, x64 {info['jax_enable_x64']}, "
      f"{len(info['packages'])} packages", file=sys.stderr)
EOF

# any uid (docker run --user "$(id -u):$(id -g)") works too: HOME is not writable for it
ANYUID_DIR="$RESULTS/any_uid"
mkdir -p "$ANYUID_DIR"
chown 4321:4321 "$ANYUID_DIR" 2>/dev/null || chmod 0777 "$ANYUID_DIR"
docker run "${RUN_FLAGS[@]}" --user 4321:4321 -v "$ANYUID_DIR:/home/mofdft/results" "$TAG" \
    info --json >"$ANYUID_DIR/stdout.json"
docker run "${RUN_FLAGS[@]}" --user 4321:4321 -v "$ANYUID_DIR:/home/mofdft/results" \
    --entrypoint sh "$TAG" -c 'mofdft --version > results/version.txt'
[ -s "$ANYUID_DIR/version.txt" ] || die "a container run as uid 4321 could not write into its mount"
log "runs as an arbitrary uid (4321) too"

log "stack smoke test (scripts/container_smoke.py)"
SMOKE_ARGS=(--out results/smoke.json)
[ "$GPUS" = 1 ] && SMOKE_ARGS+=(--expect-backend gpu)
docker run "${RUN_FLAGS[@]}" "${MOUNT[@]}" \
    -v "$ROOT/scripts/container_smoke.py:/opt/checks/container_smoke.py:ro" \
    --entrypoint python "$TAG" /opt/checks/container_smoke.py "${SMOKE_ARGS[@]}"
[ -s "$RESULTS/smoke.json" ] || die "smoke.json was not written into the mounted folder"
python3 - "$RESULTS/smoke.json" <<'EOF'
import json, sys
smoke = json.load(open(sys.argv[1]))
cuda = smoke.get("cuda")
line = f"smoke: JAX backend {smoke['jax_backend']}, H2 RHF {smoke['h2_rhf_sto3g_hartree']:.6f} Ha"
if cuda:
    line += f"; CUDA wheels {len(cuda['wheels'])}, gpu4pyscf import: {cuda['gpu4pyscf_import']}"
    if smoke["jax_backend"] != "gpu":
        line += " (no GPU: JAX fell back to the CPU, the GPU code path was not run)"
print(line, file=sys.stderr)
EOF

if [ "$RUN_DEFAULT_CMD" = 1 ]; then
    log "default command: docker run --rm -v \"\$PWD/results/quick:/home/mofdft/results\" $TAG"
    docker run "${RUN_FLAGS[@]}" "${MOUNT[@]}" "$TAG" >"$RESULTS/default_cmd.log" 2>&1 \
        || { tail -n 30 "$RESULTS/default_cmd.log" >&2; die "the image's default command failed"; }
    log "default command exited 0 (output: $RESULTS/default_cmd.log)"
fi

leftover="$(docker run "${RUN_FLAGS[@]}" --entrypoint sh "$TAG" -c \
    'find / -xdev \( -name build-ca.pem -o -path /tmp/build-input \) -print 2>/dev/null || true')"
[ -z "$leftover" ] || die "build-time CA material inside the image: $leftover"
if docker history --no-trunc "$TAG" | grep -q 'build-ca'; then die "image history mentions build-ca"; fi
log "no build-time CA material in the image"
step_done

# ==== summary ======================================================================================
{
    printf '{\n  "variant": "%s",\n  "image": "%s",\n  "base_image": "%s",\n' "$VARIANT" "$TAG" "$BASE"
    printf '  "image_bytes": %s,\n  "steps_s": {' "$IMAGE_BYTES"
    for i in "${!STEP_NAMES[@]}"; do
        [ "$i" = 0 ] || printf ','
        printf '\n    "%s": %s' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
    done
    printf '\n  },\n  "wall_s": %s\n}\n' "$((SECONDS - T_START))"
} >"$RESULTS/container_check.json"
printf '\n==== container check summary (%s) ====\n' "$VARIANT" >&2
for i in "${!STEP_NAMES[@]}"; do printf '  %-28s %5s s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}" >&2; done
printf '  %-28s %5s s\n  %-28s %5s MB\n  results: %s\n' total "$((SECONDS - T_START))" \
    "image size" "$((IMAGE_BYTES / 1000000))" "$RESULTS" >&2
