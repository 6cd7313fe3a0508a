#!/usr/bin/env bash
# make bench: wasmcell vs runc running a static native program, side by side, under a private
# containerd (never a system one), whose state and runc's are on tmpfs and whose root is on a
# journaled ext4 image, as on a host (host_like_filesystems). Writes target/bench/report.md and
# report.json and prints the table.
#
#   1. ctr run --rm latency: demo-app `echo hello` (wasmcell) vs a static C hello (runc),
#      BENCH_WARMUP warm-up runs each, then BENCH_ITERATIONS pairs, alternating which goes first.
#   2. PSS of every shim-side process (shims and their descendants: wasmcell guests, runc
#      container processes) with N detached sleeping containers, N in BENCH_COUNTS; for
#      wasmcell after one warm run, so that its starter is there (see warm_starter).
#   4. Signal latency: from starting `ctr task kill` (SIGTERM, then SIGKILL) of a running
#      sleeper until a client already waiting through containerd's API sees the exit
#      (test/examples/await_exit.rs), BENCH_SIGNAL_RUNS each; `ctr task kill`'s own time beside it.
#   5. Throughput: BENCH_THROUGHPUT_TASKS short echo containers, 2 and 10 at a time, driven
#      through containerd's API (test/examples/stress.rs, as runwasi's stress test does) and,
#      for comparison, with one `ctr run --rm` process per container.
#   6. A pod of BENCH_POD_CONTAINERS sleeping containers through containerd 2.1's CRI: PSS of
#      every shim-side process (the pod's shim, its sandbox holder and its guests).
#   7. HTTP: wrk (1 and 50 connections, BENCH_HTTP_SECONDS each) against demo-http served by
#      wasmcell (`ctr run --net-host`), the same component by `wasmtime serve` of the pinned
#      wasmtime version (built once from crates.io into ~/.cache/wasmcell), and a static
#      native server in runc; wasmcell's idle PSS and per-request instantiation times.
#   2b. The same PSS at N=10 and 50 with `group = "namespace"` (one shim for every container).
#   8. Cold start after `wasmcell import`: BENCH_COLD_RUNS times, the demo image removed, the
#      compile cache emptied, `wasmcell import` (which compiles ahead), then one timed `ctr run`;
#      runc's static hello the same way (image removed, `ctr image import`, one timed run).
#   9. CPU per task, around the API throughput runs: containerd and everything it starts (shims,
#      runc) run in a cgroup of their own, containers in the namespace's; shim + guest CPU =
#      that cgroup's usage - containerd's own (/proc) + the containers'. The throughput ceiling
#      (containerd 2.x): the same API runs under a null shim whose tasks do nothing
#      (test/examples/null_shim.rs), i.e. what containerd and the shim protocol alone sustain on
#      this machine; containerd's own CPU per task also gives a CPU bound (every core to itself).
#      wasmcell's API runs once more with `group = "namespace"` (one shim for every task).
#   3. Import validation: `ctr run --rm` of an artifact with a BENCH_BIG_MIB MiB wasm layer
#      that imports wasi:keyvalue (refused by the pre-flight from its config) against a first
#      run, empty compile cache, of its satisfiable twin (same code) and a warm run of it;
#      compile time = cold - warm. BENCH_REJECT_RUNS runs each.
#
# Knobs (environment): BENCH_CONTAINERD="2.1 1.6" (space-separated list of release lines for
# test/fetch-debian.sh; the first one fills report.json's top-level figures),
# BENCH_ITERATIONS=20, BENCH_WARMUP=3, BENCH_COUNTS="1 10 50 200", BENCH_BIG_MIB=10,
# BENCH_REJECT_RUNS=3, BENCH_COLD_RUNS=5, BENCH_SIGNAL_RUNS=10, BENCH_THROUGHPUT_TASKS=100,
# BENCH_THROUGHPUT_ROUNDS=10 (interleaved API runs of every kind but runc, every other round in
# reverse order; each kind's fraction of the ceiling is the median over the rounds of its rate
# over the null shim's in the same round),
# BENCH_PARALLEL="2 10", BENCH_POD_CONTAINERS=10 (0: no pod figure), BENCH_HTTP_SECONDS=10 (0: no
# HTTP figures), BENCH_SKIP_BUILD=1 to reuse
# target/release as it is, BENCH_PROFILE=1 to record the API throughput runs with `perf record -a`
# (cpu-clock) and write where the CPU went, by command and object, to raw/VERSION/profile-*.txt.
#
# Needs root and what scripts/setup.sh bench installs (make bench runs it). Everything it starts — containerd,
# shims, guests, runc containers, mounts, cgroups, its /tmp/wcb.* directory — is removed on exit,
# whatever the exit path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_CONTAINERD=${BENCH_CONTAINERD:-2.1 1.6}
BENCH_ITERATIONS=${BENCH_ITERATIONS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_COUNTS=${BENCH_COUNTS:-1 10 50 200}
BENCH_SIGNAL_RUNS=${BENCH_SIGNAL_RUNS:-10}
BENCH_THROUGHPUT_TASKS=${BENCH_THROUGHPUT_TASKS:-100}
BENCH_THROUGHPUT_ROUNDS=${BENCH_THROUGHPUT_ROUNDS:-10}
BENCH_PARALLEL=${BENCH_PARALLEL:-2 10}
BENCH_POD_CONTAINERS=${BENCH_POD_CONTAINERS:-10}
BENCH_BIG_MIB=${BENCH_BIG_MIB:-10}
BENCH_HTTP_SECONDS=${BENCH_HTTP_SECONDS:-10}
BENCH_REJECT_RUNS=${BENCH_REJECT_RUNS:-3}
BENCH_COLD_RUNS=${BENCH_COLD_RUNS:-5}
CARGO=${CARGO:-cargo}
export WASMCELL_OCI_OUT=${WASMCELL_OCI_OUT:-$ROOT/target/oci}

OUT=$ROOT/target/bench
BUILD=$OUT/build
FRONT_TARGET=$(uname -m)-unknown-linux-musl
NS=wcbench
WASM_RUNTIME=io.containerd.wasmcell.v1
RUNC_RUNTIME=io.containerd.runc.v2
# cgroup v2, or v1's cpuacct hierarchy: where CPU use is read.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then CPU_CGROUPS=/sys/fs/cgroup; else CPU_CGROUPS=/sys/fs/cgroup/cpuacct; fi
CTRD_CGROUP=$CPU_CGROUPS/wcbench-containerd-$$
WASM_IMAGE=localhost/wasmcell/demo-app:latest
NATIVE_IMAGE=localhost/bench/hello:latest

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# State of the containerd currently under test; cleanup() undoes all of it.
DIR=""        # /tmp/wcb.XXXXXX: root, state, sockets, opt, runc root, compile cache, log
CTRD_PID=""
BIN=""        # containerd's usr/bin
ADDR=""       # gRPC socket
RAW=""        # target/bench/raw/VERSION
IDS_FILE=""   # every container id used, to find leftover shim sockets in /run/containerd/s

ctr_() { "$BIN/ctr" --address "$ADDR" --namespace "$NS" "$@"; }

# PIDs of every process whose command line mentions $DIR/ (containerd names its config, shims
# the socket, guests their plan in the bundle). The `[/]` keeps grep from matching itself.
pids_using_dir() {
  grep -laE -- "${DIR//./\\.}[/]" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true
}

# Long-lived shims of our containerd (ctr itself says --address, so anchor on a space).
shim_count() { pgrep -f -- "containerd-shim[^ ]* .*(^| )-address $ADDR( |\$)" | wc -l; }

# What is left of the shims once every container is gone: processes using $DIR but containerd,
# wasmcell's starter (one per containerd; it forks new pods' shims, and leaves when idle) and
# the spare servers waiting at it (a few at most; they leave with it, or after a minute unused).
leftover_pids() {
  pids_using_dir | grep -vx -e "$CTRD_PID" -e "$(pgrep -fx -- "wasmcell-shim-starter $ADDR" || echo none)" \
    $(pgrep -fx -- "wasmcell-shim-spare $ADDR" | sed 's/^/-e /') || true
}

cleanup() {
  [ -n "$DIR" ] || return 0
  set +e
  log "cleaning up $DIR"
  if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
    local id
    for id in $(timeout 10 "$BIN/ctr" --address "$ADDR" -n "$NS" task ls -q 2>/dev/null); do
      timeout 10 "$BIN/ctr" --address "$ADDR" -n "$NS" task kill -s SIGKILL "$id" >/dev/null 2>&1
      timeout 10 "$BIN/ctr" --address "$ADDR" -n "$NS" task delete -f "$id" >/dev/null 2>&1
    done
    for id in $(timeout 10 "$BIN/ctr" --address "$ADDR" -n "$NS" container ls -q 2>/dev/null); do
      timeout 10 "$BIN/ctr" --address "$ADDR" -n "$NS" container delete "$id" >/dev/null 2>&1
    done
    kill -TERM "$CTRD_PID" 2>/dev/null
    local i
    for i in $(seq 100); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CTRD_PID" 2>/dev/null
    wait "$CTRD_PID" 2>/dev/null
  fi
  CTRD_PID=""
  # runc containers live on without their shim: kill them through our private runc root.
  if [ -d "$DIR/runc/$NS" ] && command -v runc >/dev/null; then
    local c
    for c in $(runc --root "$DIR/runc/$NS" list -q 2>/dev/null); do
      runc --root "$DIR/runc/$NS" kill -a "$c" KILL >/dev/null 2>&1
      runc --root "$DIR/runc/$NS" delete -f "$c" >/dev/null 2>&1
    done
  fi
  local p
  for p in $(pids_using_dir); do kill -KILL "$p" 2>/dev/null; done
  # mounts below $DIR, deepest first
  awk -v d="$DIR" 'index($5, d) == 1 { print length($5) "\t" $5 }' /proc/self/mountinfo \
    | sort -rn | cut -f2- | while read -r m; do umount -l "$m" 2>/dev/null; done
  # cgroups of our namespace (containers first, then the namespace level)
  local cg
  for cg in /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/"$NS"; do
    [ -d "$cg" ] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # shim sockets: sha256 of ADDRESS/NAMESPACE/ID under /run/containerd/s (runc-v2 and wasmcell)
  if [ -n "$IDS_FILE" ] && [ -f "$IDS_FILE" ]; then
    local h
    while read -r id; do
      h=$(printf '%s' "$ADDR/$NS/$id" | sha256sum | cut -d' ' -f1)
      rm -rf "/run/containerd/s/$h" "/run/containerd/s/$h.debug" "/run/containerd/s/$h.lock" \
        "/run/containerd/s/$h.claims"
    done <"$IDS_FILE"
  fi
  [ -d "$CTRD_CGROUP" ] && rmdir "$CTRD_CGROUP" 2>/dev/null
  [ -n "$RAW" ] && [ -f "$DIR/containerd.log" ] && cp "$DIR/containerd.log" "$RAW/containerd.log"
  rm -rf "$DIR"
  DIR=""
  set -e
}
on_exit() {
  local rc=$?
  cleanup
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (private containerd, runc)"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries and demo images"
  # One cargo call, so the bench helpers compile alongside wasmtime instead of after it.
  "$CARGO" build --release --locked -p wasmcell-shim -p wasmcell -p demo-app -p wasmcell-tests \
    --bins --examples
  # The shim's front as it ships: static musl (see crates/shim-front).
  "$CARGO" build --release --locked -p wasmcell-shim-front --target "$FRONT_TARGET"
fi
# The shim's two binaries side by side, as `make install` puts them: the front containerd
# execs, and the core it hands every action but a clean `delete` to.
SHIM_BIN=$BUILD/shim-bin
rm -rf "$SHIM_BIN"
mkdir -p "$SHIM_BIN"
cp "$ROOT/target/$FRONT_TARGET/release/containerd-shim-wasmcell-v1" \
  "$ROOT/target/release/containerd-shim-wasmcell-v1-core" "$SHIM_BIN/" \
  || die "the shim's binaries are missing (run without BENCH_SKIP_BUILD=1)"
SHIM=$SHIM_BIN/containerd-shim-wasmcell-v1-core
WASMCELL=$ROOT/target/release/wasmcell
BIG_COMPONENT=$ROOT/target/release/examples/big_component
CRI_POD_PSS=$ROOT/target/release/examples/cri_pod_pss
STRESS=$ROOT/target/release/examples/stress
NULL_SHIM=$ROOT/target/release/examples/null_shim
AWAIT_EXIT=$ROOT/target/release/examples/await_exit
NULL_RUNTIME=io.containerd.wcnull.v1
DEMO_TAR=$WASMCELL_OCI_OUT/demo-app-image.tar
for exe in "$SHIM" "$WASMCELL" "$BIG_COMPONENT" "$CRI_POD_PSS" "$STRESS" "$NULL_SHIM" "$AWAIT_EXIT"; do
  [ -x "$exe" ] || die "$exe missing (run without BENCH_SKIP_BUILD=1)"
done
[ -f "$DEMO_TAR" ] || die "$DEMO_TAR missing"
# The escape drill (crates/shim/src/drill.rs) exists only in debug builds.
if grep -q WASMCELL_ESCAPE_DRILL "$SHIM"; then
  die "$SHIM contains the escape drill: release builds must not"
fi

# runc, gcc with a static libc, python3 and matplotlib come from scripts/setup.sh bench (make
# bench runs it first). The plot needs matplotlib; Debian's python3 has it (a pyenv python3 on
# PATH may not see it).
for tool in runc gcc python3; do
  command -v "$tool" >/dev/null || die "$tool missing: run scripts/setup.sh bench (make bench does)"
done
if [ "${BENCH_PROFILE:-0}" = 1 ] && ! command -v perf >/dev/null; then
  die "BENCH_PROFILE=1 needs perf (Debian: apt-get install linux-perf)"
fi
PLOT_PYTHON=python3
python3 -c 'import matplotlib' 2>/dev/null || PLOT_PYTHON=/usr/bin/python3
RUNC_VERSION=$(runc --version | head -1)

# Static native programs and their image.
mkdir -p "$BUILD"
for prog in hello sleep httpd; do
  gcc -static -O2 -pthread -D_GNU_SOURCE -o "$BUILD/$prog.tmp" "$ROOT/bench/$prog.c"
  mv "$BUILD/$prog.tmp" "$BUILD/$prog"
done
python3 "$ROOT/bench/mkimage.py" --name "$NATIVE_IMAGE" --cmd /hello \
  --file "/hello=$BUILD/hello" --file "/sleep=$BUILD/sleep" --file "/httpd=$BUILD/httpd" \
  -o "$BUILD/native-image.tar"

# The HTTP figures' baseline: `wasmtime serve` of the wasmtime version the engine pins, built
# once from crates.io into the cache (a release build of wasmtime-cli: long, once).
WASMTIME_VERSION=$(sed -n 's/^wasmtime = { version = "=\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml")
WASMTIME=${WASMTIME:-$HOME/.cache/wasmcell/wasmtime-$WASMTIME_VERSION/bin/wasmtime}
if [ "$BENCH_HTTP_SECONDS" -gt 0 ] && ! [ -x "$WASMTIME" ]; then
  log "building wasmtime-cli $WASMTIME_VERSION from crates.io into ${WASMTIME%/bin/wasmtime} (once)"
  cargo install --quiet --locked wasmtime-cli --version "$WASMTIME_VERSION" \
    --root "${WASMTIME%/bin/wasmtime}" || die "cannot build wasmtime-cli $WASMTIME_VERSION"
fi
DEMO_HTTP_TAR=$WASMCELL_OCI_OUT/demo-http-image.tar
DEMO_P3_HTTP_TAR=$WASMCELL_OCI_OUT/demo-p3-http-image.tar
DEMO_P3_TAR=$WASMCELL_OCI_OUT/demo-p3-image.tar
[ -f "$DEMO_P3_TAR" ] || die "$DEMO_P3_TAR missing"
[ -f "$DEMO_P3_HTTP_TAR" ] || die "$DEMO_P3_HTTP_TAR missing"
# The component inside the demo-http image, for `wasmtime serve`.
DEMO_HTTP_WASM=$BUILD/demo-http.wasm
tar -xOf "$DEMO_HTTP_TAR" index.json >/dev/null 2>&1 || die "$DEMO_HTTP_TAR missing"
python3 - "$DEMO_HTTP_TAR" "$DEMO_HTTP_WASM" <<'PY'
import io, json, sys, tarfile
archive, out = sys.argv[1:]
with tarfile.open(archive) as t:
    blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1]).read()
    index = json.loads(t.extractfile("index.json").read())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][0]["digest"]))) as layer:
        open(out, "wb").write(layer.extractfile("demo-http.wasm").read())
PY
# The pod sandbox image for the CRI figure: runc really runs it, wasmcell never does.
python3 "$ROOT/bench/mkimage.py" --name localhost/bench/pause:latest --cmd /sleep --cmd 1000000 \
  --file "/sleep=$BUILD/sleep" -o "$BUILD/pause-image.tar"

# Two artifacts with the same large code: one the host can run, one importing wasi:keyvalue.
BIG_IMAGE=localhost/bench/big:latest
BIG_KV_IMAGE=localhost/bench/big-kv:latest
"$BIG_COMPONENT" "$BUILD/big.wasm" "$BENCH_BIG_MIB"
"$BIG_COMPONENT" "$BUILD/big-kv.wasm" "$BENCH_BIG_MIB" wasi:keyvalue/store@0.2.0-draft
"$WASMCELL" package --format artifact --name "$BIG_IMAGE" --module "$BUILD/big.wasm" \
  -o "$BUILD/big.tar" >/dev/null
"$WASMCELL" package --format artifact --name "$BIG_KV_IMAGE" --module "$BUILD/big-kv.wasm" \
  -o "$BUILD/big-kv.tar" >/dev/null

now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "$t"; }

# cgroup_cpu_us DIR: CPU used so far by the cgroup DIR and its descendants, removed ones included
# (0 if it does not exist yet).
cgroup_cpu_us() {
  if [ -f "$1/cpu.stat" ]; then
    awk '$1 == "usage_usec" { print $2 }' "$1/cpu.stat"
  elif [ -f "$1/cpuacct.usage" ]; then
    echo $(($(cat "$1/cpuacct.usage") / 1000))
  else
    echo 0
  fi
}

# proc_cpu_us PID: user + system CPU of the process itself (all its threads), in microseconds.
proc_cpu_us() {
  local ticks
  ticks=$(sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }')
  echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# machine_busy_us: CPU the whole machine has spent busy (user, nice, system, irq, softirq; not
# idle, iowait or steal) since boot, in microseconds: every process and kernel thread, so also
# the work a task leaves to the kernel's workers (a network namespace's teardown, writeback).
machine_busy_us() {
  awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8) * 1000000 / hz }' /proc/stat
}

# cpu_snapshot: "containerd_us cgroup_us containers_us machine_us" now.
cpu_snapshot() {
  echo "$(proc_cpu_us "$CTRD_PID") $(cgroup_cpu_us "$CTRD_CGROUP") $(cgroup_cpu_us "$CPU_CGROUPS/$NS") $(machine_busy_us)"
}

# cold_after_import: BENCH_COLD_RUNS first runs of each runtime's image just imported (wasmcell's
# with `wasmcell import`, which compiles ahead into the emptied cache), into $RAW/cold.tsv.
cold_after_import() {
  local i us
  printf 'runtime\trun\tus\n' >"$RAW/cold.tsv"
  for i in $(seq "$BENCH_COLD_RUNS"); do
    ctr_ image rm --sync "$WASM_IMAGE" >/dev/null
    rm -rf "$DIR/cache" && mkdir -p "$DIR/cache"
    "$WASMCELL" import --address "$ADDR" -n "$NS" --ctr "$BIN/ctr" --cache-dir "$DIR/cache" \
      "$DEMO_TAR" >"$DIR/out" 2>&1 || die "wasmcell import failed: $(cat "$DIR/out")"
    grep -q "compiled ahead" "$DIR/out" || die "wasmcell import did not compile ahead: $(cat "$DIR/out")"
    us=$(run_once wasmcell "cold-import-wasmcell-$i")
    printf 'wasmcell\t%s\t%s\n' "$i" "$us" >>"$RAW/cold.tsv"
    ctr_ image rm --sync "$NATIVE_IMAGE" >/dev/null
    ctr_ image import "$BUILD/native-image.tar" >/dev/null
    us=$(run_once runc "cold-import-runc-$i")
    printf 'runc\t%s\t%s\n' "$i" "$us" >>"$RAW/cold.tsv"
  done
}

# wait_for_background_compiles: waits (at most 10 minutes) until no background optimizer
# (`__wasmcell-optimize`, started by the shim after a cold start ran baseline code) of this
# containerd's compile cache is running, and logs how long that took.
wait_for_background_compiles() {
  local t0=$SECONDS
  while pgrep -f -- "__wasmcell-optimize $DIR/" >/dev/null; do
    [ $((SECONDS - t0)) -lt 600 ] || die "background compiles still running after 600 s"
    sleep 0.5
  done
  log "containerd $ver: background compiles done (waited $((SECONDS - t0)) s)"
}

# run_once KIND ID: one `ctr run --rm`, prints the wall time in microseconds.
run_once() {
  local kind=$1 id=$2 t0 t1 status=0
  echo "$id" >>"$IDS_FILE"
  if [ "$kind" = wasmcell ]; then
    t0=$(now_us)
    ctr_ run --rm --fifo-dir "$DIR/fifo" --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
      "$WASM_IMAGE" "$id" /demo-app.wasm echo hello >"$DIR/out" 2>&1 || status=$?
    t1=$(now_us)
  else
    t0=$(now_us)
    ctr_ run --rm --fifo-dir "$DIR/fifo" --runtime "$RUNC_RUNTIME" --runc-root "$DIR/runc" \
      "$NATIVE_IMAGE" "$id" /hello hello >"$DIR/out" 2>&1 || status=$?
    t1=$(now_us)
  fi
  ran_ok "$kind" "$id" "$status" "$(cat "$DIR/out")" || die "$kind run $id printed: $(cat "$DIR/out")"
  echo $((t1 - t0))
}

# ran_ok KIND ID STATUS OUTPUT: whether one `ctr run --rm` echo ran. ctr can miss a runc
# container's output when it exits at once (its FIFO copy races the exit): for runc an empty
# output with ctr's status 0 counts, and is reported. wasmcell's must be exact.
ran_ok() {
  local kind=$1 id=$2 status=$3 out=$4
  [ "$out" = hello ] && return 0
  if [ "$kind" = runc ] && [ -z "$out" ] && [ "$status" = 0 ]; then
    echo "bench: runc run $id exited 0 but ctr printed nothing (counted)" >&2
    return 0
  fi
  return 1
}

# run_quiet KIND ID: one `ctr run --rm` echo, output checked; for the throughput runs.
run_quiet() {
  local kind=$1 id=$2 out status=0
  if [ "$kind" = wasmcell ]; then
    out=$(ctr_ run --rm --fifo-dir "$DIR/fifo" --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
      "$WASM_IMAGE" "$id" /demo-app.wasm echo hello 2>&1) || status=$?
  else
    out=$(ctr_ run --rm --fifo-dir "$DIR/fifo" --runtime "$RUNC_RUNTIME" --runc-root "$DIR/runc" \
      "$NATIVE_IMAGE" "$id" /hello hello 2>&1) || status=$?
  fi
  ran_ok "$kind" "$id" "$status" "$out" || { echo "$kind run $id printed: $out" >&2; return 1; }
}

# api_throughput KIND PARALLEL ROUND: BENCH_THROUGHPUT_TASKS tasks of template tpl-KIND
# straight through containerd's API, PARALLEL at a time; appends the wall time to
# throughput.tsv and the CPU it took (containerd, shim + guest, machine) to cpu.tsv.
api_throughput() {
  local kind=$1 par=$2 round=$3 before after us
  log "containerd $ver: throughput, $BENCH_THROUGHPUT_TASKS $kind containers, $par at a time, API, round $round"
  case $kind in
    grouped) echo 'group = "namespace"' >"$DIR/wasmcell.toml" ;;
    synced) echo 'sync_rootfs = true' >"$DIR/wasmcell.toml" ;;
  esac
  local profiler=()
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    profiler=(perf record -q -a -g -e cpu-clock -o "$RAW/perf-$kind-$par-$round.data" --)
  fi
  before=$(cpu_snapshot)
  us=$("${profiler[@]}" "$STRESS" "$ADDR" "$NS" "tpl-$kind" "$BENCH_THROUGHPUT_TASKS" "$par") \
    || die "$kind: the API throughput run failed"
  after=$(cpu_snapshot)
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    perf report -i "$RAW/perf-$kind-$par-$round.data" --no-children --sort comm,dso --stdio \
      2>/dev/null | grep -v '^$' >"$RAW/profile-$kind-$par-$round.txt" || true
  fi
  # shim + guest = containerd's cgroup - containerd itself + the containers' cgroups
  local -a a b
  read -r -a b <<<"$before"
  read -r -a a <<<"$after"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$par" "$BENCH_THROUGHPUT_TASKS" \
    $((a[0] - b[0])) $(((a[1] - b[1]) - (a[0] - b[0]) + (a[2] - b[2]))) $((a[3] - b[3])) \
    "$round" >>"$RAW/cpu.tsv"
  printf '%s\tapi\t%s\t%s\t%s\t%s\n' "$kind" "$par" "$BENCH_THROUGHPUT_TASKS" "$us" "$round" \
    >>"$RAW/throughput.tsv"
  rm -f "$DIR/wasmcell.toml"
}

# throughput KIND PARALLEL: prints the wall time in microseconds of BENCH_THROUGHPUT_TASKS runs,
# PARALLEL at a time.
throughput() {
  local kind=$1 par=$2 t0 t1 i
  for i in $(seq "$BENCH_THROUGHPUT_TASKS"); do echo "tp-$kind-$par-$i" >>"$IDS_FILE"; done
  export -f run_quiet ran_ok ctr_
  export DIR BIN ADDR NS WASM_RUNTIME RUNC_RUNTIME WASM_IMAGE NATIVE_IMAGE
  t0=$(now_us)
  seq "$BENCH_THROUGHPUT_TASKS" | xargs -P "$par" -I{} bash -c "run_quiet $kind tp-$kind-$par-{}" \
    || die "$kind: a throughput run failed"
  t1=$(now_us)
  echo $((t1 - t0))
}

# signal_latency KIND SIGNAL ID: microseconds from starting `ctr task kill` to the task's exit
# as seen by a client already waiting; prints "us ctr_kill_us exit_status".
signal_latency() {
  local kind=$1 sig=$2 id=$3 result
  echo "$id" >>"$IDS_FILE"
  if [ "$kind" = wasmcell ]; then
    ctr_ run -d --null-io --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
      "$WASM_IMAGE" "$id" /demo-app.wasm sleep 600 >/dev/null
  else
    ctr_ run -d --null-io --runtime "$RUNC_RUNTIME" --runc-root "$DIR/runc" \
      "$NATIVE_IMAGE" "$id" /sleep 600 >/dev/null
  fi
  # `ctr` cannot wait for a running task: a client already waiting through containerd's API
  # runs `ctr task kill` and reports when the exit reached it (test/examples/await_exit.rs).
  result=$("$AWAIT_EXIT" "$ADDR" "$NS" "$id" -- "$BIN/ctr" --address "$ADDR" --namespace "$NS" \
    task kill -s "$sig" "$id") || die "$kind: $sig did not end $id"
  ctr_ task delete "$id" >/dev/null 2>&1 || true
  ctr_ container delete "$id" >/dev/null 2>&1 || true
  echo "$result"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# http_load NAME PORT CONNS...: wrk against http://127.0.0.1:PORT/ for BENCH_HTTP_SECONDS at
# each number of connections (1 thread for 1, 2 threads otherwise), after a 2 s warm-up; wrk's
# output into $RAW/http/NAME-cN.txt.
http_load() {
  local name=$1 port=$2 i conns threads
  shift 2
  for i in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
    [ "$i" -lt 100 ] || die "$name never answered on $port"
    sleep 0.1
  done
  wrk -t1 -c1 -d2s "http://127.0.0.1:$port/" >/dev/null
  for conns in "$@"; do
    threads=2
    [ "$conns" = 1 ] && threads=1
    wrk -t"$threads" -c"$conns" -d"${BENCH_HTTP_SECONDS}s" --latency "http://127.0.0.1:$port/" \
      >"$RAW/http/$name-c$conns.txt"
  done
}

# start_http ID IMAGE PROGRAM CTR_RUN_FLAGS...: an HTTP component served by wasmcell as
# container ID on the host network, its log in $RAW/http/ID.log; prints the port once it
# answers.
start_http() {
  local id=$1 image=$2 program=$3 port
  shift 3
  port=$(free_port)
  echo "$id" >>"$IDS_FILE"
  ctr_ run -d --net-host --log-uri "file://$RAW/http/$id.log" "$@" \
    --env "WASMCELL_HTTP_ADDR=127.0.0.1:$port" --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
    "$image" "$id" "$program" >/dev/null
  until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
  echo "$port"
}

# start_demo_http ID CTR_RUN_FLAGS...: demo-http (WASI 0.2) by start_http.
start_demo_http() {
  local id=$1
  shift
  start_http "$id" localhost/wasmcell/demo-http:latest /demo-http.wasm "$@"
}

# start_demo_p3_http ID CTR_RUN_FLAGS...: demo-p3-http (WASI 0.3, the same routes) by
# start_http.
start_demo_p3_http() {
  local id=$1
  shift
  start_http "$id" localhost/wasmcell/demo-p3-http:latest /demo-p3-http.wasm "$@"
}

# stop_task ID SIGNAL: signals task ID, waits until it is stopped, removes it.
stop_task() {
  ctr_ task kill -s "$2" "$1"
  until ctr_ task ls | awk -v id="$1" '$1 == id {print $3}' | grep -qx STOPPED; do sleep 0.05; done
  ctr_ task delete "$1" >/dev/null 2>&1 || true
  ctr_ container delete "$1" >/dev/null 2>&1 || true
}

# http_bench: demo-http served by wasmcell, the same component by `wasmtime serve`, and a
# native static server in runc, one after the other, nothing else running. wasmcell serves
# the 1-connection and the 50-connection runs from two containers, so the instantiation times
# each reports (in its log, when SIGTERM stops it) are those of one load; a third runs
# without the handler's log line. The idle PSS is the first container's before any load, 5 s
# after its readiness check: once the guest and the shim have let go of what starting touched
# (crates/shim/src/footprint.rs), as a container that serves nothing for a while is.
http_bench() {
  mkdir -p "$RAW/http"
  local port
  ctr_ image import --all-platforms "$DEMO_HTTP_TAR" >/dev/null
  log "containerd $ver: HTTP, demo-http served by wasmcell"
  port=$(start_demo_http http-c1)
  sleep 5
  python3 "$ROOT/bench/pss.py" "$ADDR" >"$RAW/http/pss-idle.json"
  http_load wasmcell "$port" 1
  stop_task http-c1 SIGTERM
  port=$(start_demo_http http-c50)
  http_load wasmcell "$port" 50
  stop_task http-c50 SIGTERM
  # The same without the handler's one log line per request: what logging costs.
  port=$(start_demo_http http-quiet --env DEMO_HTTP_QUIET=1)
  http_load wasmcell_quiet "$port" 50
  stop_task http-quiet SIGTERM

  # The same routes as a WASI 0.3 component, whose instances take many requests each.
  log "containerd $ver: HTTP, demo-p3-http (WASI 0.3) served by wasmcell"
  ctr_ image import --all-platforms "$DEMO_P3_HTTP_TAR" >/dev/null
  port=$(start_demo_p3_http http-p3-c1)
  http_load wasmcell_p3 "$port" 1
  stop_task http-p3-c1 SIGTERM
  port=$(start_demo_p3_http http-p3-c50)
  http_load wasmcell_p3 "$port" 50
  stop_task http-p3-c50 SIGTERM

  log "containerd $ver: HTTP, the same component by wasmtime serve $WASMTIME_VERSION"
  port=$(free_port)
  "$WASMTIME" serve -Scli --addr "127.0.0.1:$port" "$DEMO_HTTP_WASM" >"$RAW/http/wasmtime.log" 2>&1 &
  local serve_pid=$!
  http_load wasmtime_serve "$port" 1 50
  kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true

  log "containerd $ver: HTTP, a native static server in runc"
  port=$(free_port)
  echo http-native >>"$IDS_FILE"
  ctr_ run -d --net-host --runtime "$RUNC_RUNTIME" --runc-root "$DIR/runc" \
    "$NATIVE_IMAGE" http-native /httpd "$port" >/dev/null
  http_load native "$port" 1 50
  stop_task http-native SIGKILL
}

# start_many KIND N: N detached sleeping containers, all RUNNING on return.
start_many() {
  local kind=$1 n=$2 i id running
  for i in $(seq "$n"); do
    id=$kind-$n-$i
    echo "$id" >>"$IDS_FILE"
    if [ "$kind" = wasmcell ]; then
      ctr_ run -d --null-io --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
        "$WASM_IMAGE" "$id" /demo-app.wasm sleep 600 >/dev/null
    else
      ctr_ run -d --null-io --runtime "$RUNC_RUNTIME" --runc-root "$DIR/runc" \
        "$NATIVE_IMAGE" "$id" /sleep 600 >/dev/null
    fi
  done
  running=$(ctr_ task ls | awk 'NR > 1 && $3 == "RUNNING"' | wc -l)
  [ "$running" -eq "$n" ] || { ctr_ task ls >&2; die "$kind: $running of $n tasks RUNNING"; }
}

# warm_starter ID: one wasmcell run before a memory figure, so that each is taken in the same
# steady state. wasmcell's starter leaves after a minute without starts (the runc figure before
# can take longer), and the first start after that execs its server rather than forking it from
# the starter, whose preloaded programs its guests would share.
warm_starter() {
  run_once wasmcell "$1" >/dev/null
}

# stop_all: SIGKILL every task, delete tasks and containers, wait until no shim-side process is
# left.
stop_all() {
  local id i ids
  ids=$(ctr_ task ls -q)
  for id in $ids; do ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $ids; do
    for i in $(seq 100); do
      ctr_ task delete "$id" >/dev/null 2>&1 && break
      [ "$i" -lt 100 ] || die "task $id cannot be deleted: $(ctr_ task ls | grep "^$id " || true)"
      sleep 0.1
    done
  done
  for id in $(ctr_ container ls -q); do ctr_ container delete "$id" >/dev/null; done
  for i in $(seq 300); do
    [ "$(shim_count)" -eq 0 ] && [ -z "$(leftover_pids)" ] && return 0
    sleep 0.1
  done
  pgrep -af -- "containerd-shim[^ ]* .*(^| )-address $ADDR( |\$)" >&2 || true
  die "shim-side processes still alive 30 s after their containers were deleted"
}

write_config() {
  local ver=$1 d=$DIR
  if [ "${ver%%.*}" -ge 2 ]; then
    cat >"$d/config.toml" <<EOF
version = 3
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.grpc.v1.sandbox-controllers",
  "io.containerd.nri.v1.nri"]

[grpc]
  address = "$d/c.sock"

[ttrpc]
  address = "$d/c.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
  else
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$d/c.sock"

[ttrpc]
  address = "$d/c.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
  fi
}

# containerd's directories on the filesystems a host gives them: its state and runc's (/run/...)
# on tmpfs, its root (/var/lib/containerd) on a journaled ext4. Not on whatever holds /tmp: on a
# root filesystem that is ext4 without a journal (this project's CI machines), the inode
# allocator steps over every inode freed in the last minutes (ext4's recently_deleted(), only
# without a journal), so each run paid for the files the runs before it deleted — 0.5 to 3 ms of
# containerd's CPU per task for the same kind, by its place in the order (perf, __ext4_new_inode).
host_like_filesystems() {
  mount -t tmpfs -o mode=0711 wcb-state "$DIR/state"
  mount -t tmpfs -o mode=0711 wcb-runc "$DIR/runc"
  truncate -s 8G "$DIR/root.img"
  # Inode tables written now, not by a background thread during the runs.
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$DIR/root.img"
  mount -o loop "$DIR/root.img" "$DIR/root"
}

bench_one() {
  local ver=$1 dir started=$SECONDS
  dir=$("$ROOT/test/fetch-debian.sh" "$ver" | sed -n "s/^$ver=//p")
  [ -n "$dir" ] || die "test/fetch-debian.sh $ver printed no directory"
  BIN=$dir/usr/bin
  [ -x "$BIN/containerd-shim-runc-v2" ] || die "containerd $ver package has no containerd-shim-runc-v2"
  RAW=$OUT/raw/$ver
  rm -rf "$RAW"
  mkdir -p "$RAW"

  DIR=$(mktemp -d /tmp/wcb.XXXXXX)
  ADDR=$DIR/c.sock
  IDS_FILE=$DIR/ids
  : >"$IDS_FILE"
  mkdir -p "$DIR/cache" "$DIR/fifo" "$DIR/runc" "$DIR/bin" "$DIR/state" "$DIR/root"
  host_like_filesystems
  # The throughput ceiling's runtime: a shim whose tasks do nothing (test/examples/null_shim.rs).
  cp "$NULL_SHIM" "$DIR/bin/containerd-shim-wcnull-v1"
  write_config "$ver"
  log "containerd $ver: starting a private instance in $DIR"
  mkdir -p "$CTRD_CGROUP"
  # In a cgroup of its own (its shims and their runc calls follow it), for the CPU figures.
  # The shim config file: absent (defaults) except for the grouped memory figure.
  PATH="$SHIM_BIN:$ROOT/target/release:$DIR/bin:$BIN:$PATH" WASMCELL_CACHE_DIR="$DIR/cache" WASMCELL_CONFIG="$DIR/wasmcell.toml" \
    bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CTRD_CGROUP" \
    "$BIN/containerd" --config "$DIR/config.toml" </dev/null >"$DIR/containerd.log" 2>&1 &
  CTRD_PID=$!
  local i
  for i in $(seq 200); do
    "$BIN/ctr" --address "$ADDR" version >/dev/null 2>&1 && break
    kill -0 "$CTRD_PID" 2>/dev/null || { tail -30 "$DIR/containerd.log" >&2; die "containerd $ver exited"; }
    [ "$i" -lt 200 ] || { tail -30 "$DIR/containerd.log" >&2; die "containerd $ver did not answer in 20 s"; }
    sleep 0.1
  done
  ctr_ image import --all-platforms "$DEMO_TAR" >/dev/null
  ctr_ image import "$BUILD/native-image.tar" >/dev/null
  # grep -x without -q: an early exit would SIGPIPE ctr and fail the pipeline (pipefail).
  ctr_ image ls -q | grep -x "$NATIVE_IMAGE" >/dev/null || die "$NATIVE_IMAGE not imported: $(ctr_ image ls -q)"

  {
    printf '{"containerd": "%s", "containerd_line": "%s", "runc": "%s", ' \
      "$("$BIN/containerd" --version | awk '{print $3}')" "$ver" "$RUNC_VERSION"
    printf '"kernel": "%s", "cpus": %s, "loadavg_start": "%s", ' \
      "$(uname -r)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf '"wasmcell_commit": "%s", "iterations": %s, "warmup": %s}\n' \
      "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      "$BENCH_ITERATIONS" "$BENCH_WARMUP"
  } >"$RAW/meta.json"

  # 1. latency
  log "containerd $ver: latency, $BENCH_WARMUP warm-up + $BENCH_ITERATIONS paired runs each"
  printf 'phase\tpair\trun\truntime\tus\n' >"$RAW/latency.tsv"
  local us first second
  for i in $(seq "$BENCH_WARMUP"); do
    us=$(run_once wasmcell "warm-wasmcell-$i")
    printf 'warmup\t%s\t1\twasmcell\t%s\n' "$i" "$us" >>"$RAW/latency.tsv"
    us=$(run_once runc "warm-runc-$i")
    printf 'warmup\t%s\t2\trunc\t%s\n' "$i" "$us" >>"$RAW/latency.tsv"
  done
  for i in $(seq "$BENCH_ITERATIONS"); do
    if [ $((i % 2)) -eq 1 ]; then first=wasmcell second=runc; else first=runc second=wasmcell; fi
    us=$(run_once "$first" "lat-$first-$i")
    printf 'measure\t%s\t1\t%s\t%s\n' "$i" "$first" "$us" >>"$RAW/latency.tsv"
    us=$(run_once "$second" "lat-$second-$i")
    printf 'measure\t%s\t2\t%s\t%s\n' "$i" "$second" "$us" >>"$RAW/latency.tsv"
  done

  # 8. cold start after import (every release line: the demo image runs on 1.6 too)
  log "containerd $ver: first run after import, $BENCH_COLD_RUNS runs each"
  cold_after_import

  # The first release line gets every figure; the others (1.6: DESIGN's baselines) the
  # latency and memory figures only, which keeps `make bench` short.
  local full=0
  [ "$ver" = "${BENCH_CONTAINERD%% *}" ] && full=1
  # 3. validation: reject from the config vs compile (done first: nothing else is running).
  # containerd 1.6 cannot run artifacts (it unpacks only tar layers), so it has no figure.
  if [ "$full" = 1 ] && [ "$ver" != 1.6 ]; then
  log "containerd $ver: rejecting a $BENCH_BIG_MIB MiB artifact vs compiling it, $BENCH_REJECT_RUNS runs each"
  # --no-compile: the cold run below is the figure (and the refusal must not find it compiled).
  "$WASMCELL" import --address "$ADDR" -n "$NS" --ctr "$BIN/ctr" --cache-dir "$DIR/cache" \
    --no-compile "$BUILD/big.tar" >/dev/null
  "$WASMCELL" import --address "$ADDR" -n "$NS" --ctr "$BIN/ctr" --cache-dir "$DIR/cache" \
    --no-compile "$BUILD/big-kv.tar" >/dev/null
  printf 'kind\trun\tus\n' >"$RAW/reject.tsv"
  local t0 t1
  for i in $(seq "$BENCH_REJECT_RUNS"); do
    echo "reject-$i" >>"$IDS_FILE"
    t0=$(now_us)
    if ctr_ run --rm --runtime "$WASM_RUNTIME" --platform wasip2/wasm "$BIG_KV_IMAGE" \
      "reject-$i" big-kv.wasm >"$DIR/out" 2>&1; then
      die "the keyvalue artifact ran"
    fi
    t1=$(now_us)
    grep -q "checked before reading the wasm layer" "$DIR/out" || die "unexpected refusal: $(cat "$DIR/out")"
    printf 'reject\t%s\t%s\n' "$i" $((t1 - t0)) >>"$RAW/reject.tsv"
    rm -rf "$DIR/cache" && mkdir -p "$DIR/cache"
    echo "cold-$i" >>"$IDS_FILE"
    t0=$(now_us)
    ctr_ run --rm --runtime "$WASM_RUNTIME" --platform wasip2/wasm "$BIG_IMAGE" "cold-$i" big.wasm \
      >"$DIR/out" 2>&1 || die "the big artifact failed: $(cat "$DIR/out")"
    t1=$(now_us)
    printf 'cold\t%s\t%s\n' "$i" $((t1 - t0)) >>"$RAW/reject.tsv"
    echo "warm-$i" >>"$IDS_FILE"
    t0=$(now_us)
    ctr_ run --rm --runtime "$WASM_RUNTIME" --platform wasip2/wasm "$BIG_IMAGE" "warm-$i" big.wasm \
      >"$DIR/out" 2>&1 || die "the big artifact failed: $(cat "$DIR/out")"
    t1=$(now_us)
    printf 'warm\t%s\t%s\n' "$i" $((t1 - t0)) >>"$RAW/reject.tsv"
  done
  printf '%s\n' "$(stat -c %s "$BUILD/big.wasm")" >"$RAW/big-bytes"
  # The cold runs left the big program's optimized compile running in the background (idle
  # priority, in containerd's cgroup): it would be counted as per-task CPU below and take the
  # slack the throughput runs leave. It is a one-off cost, measured above, so it ends here.
  wait_for_background_compiles
  fi

  if [ "$full" = 1 ]; then
  # 4. signals
  log "containerd $ver: SIGTERM/SIGKILL to exit, $BENCH_SIGNAL_RUNS runs each"
  printf 'runtime\tsignal\trun\tus\tkiller_us\tstatus\n' >"$RAW/signals.tsv"
  local sig kind result
  for sig in SIGTERM SIGKILL; do
    for i in $(seq "$BENCH_SIGNAL_RUNS"); do
      for kind in wasmcell runc; do
        result=$(signal_latency "$kind" "$sig" "sig-$kind-$sig-$i")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$sig" "$i" ${result} >>"$RAW/signals.tsv"
      done
    done
  done

  # 5. throughput: through the API (templates made by ctr), then one ctr process per task
  # The signal runs may have been the demo's first start since the cache was emptied: its
  # optimized compile (idle priority, in containerd's cgroup) must not be counted per task.
  wait_for_background_compiles
  printf 'runtime\tclient\tparallel\ttasks\tus\tround\n' >"$RAW/throughput.tsv"
  printf 'runtime\tparallel\ttasks\tcontainerd_us\tshim_guest_us\tmachine_us\tround\n' \
    >"$RAW/cpu.tsv"
  local before after
  ctr_ container create --runtime "$WASM_RUNTIME" "$WASM_IMAGE" tpl-wasmcell /demo-app.wasm echo hello
  # containerd 1.6's `ctr container create` has no --runc-root; runc then keeps its state under
  # containerd's default root, and every task is deleted all the same.
  local runc_root=()
  ctr_ container create --help 2>&1 | grep -- --runc-root >/dev/null && runc_root=(--runc-root "$DIR/runc")
  ctr_ container create --runtime "$RUNC_RUNTIME" "${runc_root[@]}" "$NATIVE_IMAGE" tpl-runc /hello hello
  for i in $(seq 0 $((BENCH_THROUGHPUT_TASKS - 1))); do echo "stress-$i" >>"$IDS_FILE"; done
  # The ceiling: the same tasks under the null shim, whose tasks do nothing. It is built on the
  # containerd-shim crate's `start`, which answers with task API v3: containerd 2.x only.
  local kinds="wasmcell runc"
  if [ "${ver%%.*}" -ge 2 ]; then
    ctr_ container create --runtime "$NULL_RUNTIME" "$NATIVE_IMAGE" tpl-null /hello hello
    kinds="wasmcell runc null"
  fi
  # wasmcell again with `group = "namespace"`: one shim serves every task, so a task costs no
  # shim server start (the shim config is read by `start`, i.e. per task).
  ctr_ container create --runtime "$WASM_RUNTIME" "$WASM_IMAGE" tpl-grouped /demo-app.wasm echo hello
  kinds="$kinds grouped"
  echo "wasmcell-namespace-$NS" >>"$IDS_FILE"
  # wasmcell again with `sync_rootfs = true`: the rootfs overlay mounted as containerd gives it
  # (not `volatile`), so every task's unmount syncs containerd's filesystem, as runc's does.
  ctr_ container create --runtime "$WASM_RUNTIME" "$WASM_IMAGE" tpl-synced /demo-app.wasm echo hello
  kinds="$kinds synced"
  # A command that imports no wasi:sockets (demo-p3, WASI 0.3): its guests share the starter's
  # empty network namespace instead of each making one. Compiled (and optimized) first; read
  # against the ceiling, so on 2.x only.
  if [ "${ver%%.*}" -ge 2 ]; then
    ctr_ image import --all-platforms "$DEMO_P3_TAR" >/dev/null
    echo "warm-p3" >>"$IDS_FILE"
    ctr_ run --rm --null-io --runtime "$WASM_RUNTIME" --platform wasip2/wasm \
      localhost/wasmcell/demo-p3:latest warm-p3 /demo-p3.wasm echo hello >/dev/null
    wait_for_background_compiles
    ctr_ container create --runtime "$WASM_RUNTIME" localhost/wasmcell/demo-p3:latest \
      tpl-networkless /demo-p3.wasm echo hello
    kinds="$kinds networkless"
  fi
  # The kinds read against the ceiling run interleaved, BENCH_THROUGHPUT_ROUNDS rounds of one
  # run each, and the report takes each one's median: every run leaves the next a filesystem
  # with more recently deleted inodes to step over (ext4 without a journal skips them for
  # minutes), so a kind's place in a fixed order would otherwise be part of its figure. Every
  # other round runs in reverse order (A B C D, D C B A, ...): this VM's speed drifts within a
  # round too, and with an even number of rounds a steady drift then favours no kind. It also
  # drifts by up to a quarter within a minute, more than what is measured: many short rounds,
  # each kind read against the null shim's run of its own round, keep that out of the figure
  # (wasmcell and the null shim run next to each other in every order). runc's
  # runs, many times longer and the heaviest on the filesystem, come once, after the rounds.
  local par round kind order
  for par in $BENCH_PARALLEL; do
    for round in $(seq "$BENCH_THROUGHPUT_ROUNDS"); do
      order=$kinds
      if [ $((round % 2)) = 0 ]; then order=$(printf '%s\n' $kinds | tac | tr '\n' ' '); fi
      for kind in $order; do
        [ "$kind" = runc ] || api_throughput "$kind" "$par" "$round"
      done
    done
    api_throughput runc "$par" 1
    for kind in wasmcell runc; do
      log "containerd $ver: throughput, $BENCH_THROUGHPUT_TASKS $kind containers, $par at a time, ctr run"
      us=$(throughput "$kind" "$par")
      printf '%s\tctr\t%s\t%s\t%s\t1\n' "$kind" "$par" "$BENCH_THROUGHPUT_TASKS" "$us" \
        >>"$RAW/throughput.tsv"
    done
  done
  ctr_ container delete tpl-wasmcell tpl-runc tpl-grouped tpl-synced >/dev/null
  if [ "${ver%%.*}" -ge 2 ]; then ctr_ container delete tpl-null tpl-networkless >/dev/null; fi

  # 7. HTTP
  [ "$BENCH_HTTP_SECONDS" -gt 0 ] && http_bench
  fi

  # 2. memory
  local n kind
  for n in $BENCH_COUNTS; do
    for kind in wasmcell runc; do
      log "containerd $ver: PSS, $n running $kind container(s)"
      if [ "$kind" = wasmcell ]; then warm_starter "pss-warm-$n"; fi
      start_many "$kind" "$n"
      sleep 2 # let start-up allocations settle
      # wasmcell's starter outlives wasmcell's runs (it leaves after a minute idle): it is
      # wasmcell's, not the runc containers'.
      python3 "$ROOT/bench/pss.py" "$ADDR" "$kind" >"$RAW/pss-$kind-$n.json"
      stop_all
    done
  done
  # 2b. memory with one shim for the whole namespace (`group = "namespace"`)
  if [ "$full" = 1 ]; then
    echo 'group = "namespace"' >"$DIR/wasmcell.toml"
    echo "wasmcell-namespace-$NS" >>"$IDS_FILE"
    for n in 10 50; do
      log "containerd $ver: PSS, $n running wasmcell containers, one shim for the namespace"
      warm_starter "grouped-warm-$n"
      start_many wasmcell "$n"
      sleep 2
      python3 "$ROOT/bench/pss.py" "$ADDR" >"$RAW/grouped-pss-$n.json"
      stop_all
    done
    rm -f "$DIR/wasmcell.toml"
  fi
  sed -i "s/}\$/, \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"seconds\": $((SECONDS - started))}/" "$RAW/meta.json"
  cleanup
  log "containerd $ver: done in $((SECONDS - started)) s"
}

# 6. A pod of BENCH_POD_CONTAINERS sleeping containers through CRI (containerd 2.1, its own
# private instance and registry, started by the test harness with the release shim).
pod_pss() {
  local kind
  mkdir -p "$OUT/raw/pod"
  for kind in wasmcell runc; do
    log "containerd 2.1 with CRI: a pod of $BENCH_POD_CONTAINERS $kind containers"
    if [ "$kind" = wasmcell ]; then
      WASMCELL_BIN_DIR=$SHIM_BIN "$CRI_POD_PSS" wasmcell "$DEMO_TAR" "$BUILD/pause-image.tar" \
        "$BENCH_POD_CONTAINERS" "$OUT/raw/pod/pss-wasmcell.json" -- /demo-app.wasm sleep 600
    else
      WASMCELL_BIN_DIR=$SHIM_BIN "$CRI_POD_PSS" runc "$BUILD/native-image.tar" "$BUILD/pause-image.tar" \
        "$BENCH_POD_CONTAINERS" "$OUT/raw/pod/pss-runc.json" -- /sleep 600
    fi
  done
  # The cold CRI figure: one container, PullImage → CreateContainer → StartContainer, on an
  # empty compile cache (nothing compiled ahead: CRI pulls without wasmcell).
  for kind in wasmcell runc; do
    log "containerd 2.1 with CRI: one $kind container, pulled and started cold"
    if [ "$kind" = wasmcell ]; then
      WASMCELL_BIN_DIR=$SHIM_BIN "$CRI_POD_PSS" wasmcell "$DEMO_TAR" "$BUILD/pause-image.tar" \
        1 "$OUT/raw/pod/cold-wasmcell.json" -- /demo-app.wasm sleep 600
    else
      WASMCELL_BIN_DIR=$SHIM_BIN "$CRI_POD_PSS" runc "$BUILD/native-image.tar" "$BUILD/pause-image.tar" \
        1 "$OUT/raw/pod/cold-runc.json" -- /sleep 600
    fi
  done
}

rm -rf "$OUT/report.md" "$OUT/report.json" "$OUT/raw" "$OUT/pss.png"
for ver in $BENCH_CONTAINERD; do
  bench_one "$ver"
done
if [ "$BENCH_POD_CONTAINERS" -gt 0 ]; then
  pod_pss
fi
# shellcheck disable=SC2086
"$PLOT_PYTHON" "$ROOT/bench/report.py" "$OUT" $BENCH_CONTAINERD
log "wrote $OUT/report.md and $OUT/report.json (raw data in $OUT/raw/) in $SECONDS s"
