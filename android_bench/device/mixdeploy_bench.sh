#!/bin/sh
# shellcheck disable=SC2015  # `A && B || fail ...`: fail when either fails, as meant
# mixdeploy's device side: everything `mixdeploy bench --device` runs on an Android phone.
#
# POSIX sh only: it runs under Android's mksh with toybox tools, and under dash and busybox sh
# (tests/test_device_script.py). The host pushes it into the phone's cache under its sha256
# and runs `sh SCRIPT ACTION ARGS...`. Every path comes as an argument (the script names no
# folder of its own), so the same script runs in the test's emulated phone. Arguments, exit
# codes and the version rule: android_bench/README.md.
#
#   --version                       print "mixdeploy_bench.sh VERSION"
#   start RUN_DIR STALE_S           make the run folder and its detached reaper
#   touch RUN_DIR                   the host is still there (resets the reaper's clock)
#   bench RUN_DIR BINARY MODEL [--threads N] [--delegate D] [--runs N] [--warmup N]
#         [--cpu-mask HEX] [--op-profile]
#                                   one timed benchmark_model run, its output on stdout
#   parity RUN_DIR BINARY MODEL --input-layer NAME --input-shape D,D,.. [--threads N]
#         [--delegate D] [--cpu-mask HEX] INPUT...
#                                   one run per INPUT file (the input tensor's raw bytes);
#                                   its raw outputs land in INPUT.out
#   stop RUN_DIR                    kill the tool the run is waiting on, if any
#   clean RUN_DIR                   stop, then remove the run folder
#   reap RUN_DIR STALE_S            (started by `start`, records its pid in RUN_DIR/reaper)
#                                   remove the folder once stale

# Bump with any change to the arguments, the exit codes or what lands in the run folder, and
# bump mixdeploy/bench/device_script.py's SCRIPT_VERSION with it: the host refuses another.
VERSION=1

# The script's own failures (sysexits.h numbers); any other non-zero code is the tool's own
# (benchmark_model's, or taskset's when no core of the mask is online), passed through.
EX_USAGE=64        # bad arguments: host and script disagree
EX_NOINPUT=66      # the run folder, the binary, the model or an input file is missing
EX_UNAVAILABLE=69  # a tool the phone should have is missing (taskset, setsid)
EX_CANTCREAT=73    # the run folder cannot be made

REAPER_TICK_S=1

script=$0

fail() {  # fail CODE MESSAGE...
    code=$1
    shift
    echo "mixdeploy_bench.sh: $*" >&2
    exit "$code"
}

need_count() {  # need_count NAME VALUE: a whole number
    case $2 in
        '' | *[!0-9]*) fail $EX_USAGE "$1 takes a whole number, not '$2'" ;;
    esac
}

need_run_dir() {
    [ -d "$1" ] || fail $EX_NOINPUT "run folder $1 does not exist (removed by its reaper after the host went quiet?)"
}

delegate_flag() {  # the benchmark_model flag that picks a delegate; cpu = TFLite builtin kernels
    case $1 in
        xnnpack) echo --use_xnnpack=true ;;
        cpu) echo --use_xnnpack=false ;;
        gpu) echo --use_gpu=true ;;
        nnapi) echo --use_nnapi=true ;;
        *) fail $EX_USAGE "unknown delegate '$1': xnnpack, cpu, gpu or nnapi" ;;
    esac
}

escape_colons() {  # sets `escaped`: benchmark_model reads `name:path` items with ':' in either as '::'
    rest=$1
    escaped=
    while :; do
        case $rest in
            *:*)
                escaped="$escaped${rest%%:*}::"
                rest=${rest#*:}
                ;;
            *)
                escaped="$escaped$rest"
                return
                ;;
        esac
    done
}

stop_tool() {  # kill the tool whose pid the run recorded; the file exists only while it runs
    if [ -f "$1/pid" ]; then
        kill -9 "$(cat "$1/pid")" 2>/dev/null
    fi
    return 0
}

run_tool() {  # run_tool RUN_DIR TOOL ARGS...: pinned when $cpu_mask is set, pid in RUN_DIR/pid
    dir=$1
    shift
    if [ -n "$cpu_mask" ]; then
        set -- taskset "$cpu_mask" "$@"
    fi
    # A child shell records its own pid, then becomes the tool (taskset execs it too): the pid
    # is the tool's, so `stop` and the reaper kill exactly it.
    sh -c 'echo $$ > "$1"; shift; exec "$@"' sh "$dir/pid" "$@"
    status=$?
    rm -f "$dir/pid"
    return $status
}

# --- the options of bench and parity -------------------------------------------------------------

threads=1
delegate=xnnpack
runs=50
warmup=5
cpu_mask=
op_profile=
input_layer=
input_shape=

parse_run_args() {  # sets run_dir binary model and the options above; `shifted` = words consumed
    [ $# -ge 3 ] || fail $EX_USAGE "$action needs RUN_DIR BINARY MODEL"
    run_dir=$1 binary=$2 model=$3
    shift 3
    shifted=3
    while [ $# -gt 0 ]; do
        case $1 in
            --op-profile) op_profile=1; shift; shifted=$((shifted + 1)); continue ;;
            --threads | --delegate | --runs | --warmup | --cpu-mask | --input-layer | --input-shape)
                [ $# -ge 2 ] || fail $EX_USAGE "$1 needs a value" ;;
            --*) fail $EX_USAGE "unknown option $1" ;;
            *) break ;;
        esac
        case $1 in
            --threads) need_count "$1" "$2"; threads=$2 ;;
            --delegate) delegate=$2 ;;
            --runs) need_count "$1" "$2"; runs=$2 ;;
            --warmup) need_count "$1" "$2"; warmup=$2 ;;
            --cpu-mask)
                case $2 in
                    '' | *[!0-9a-fA-F]*) fail $EX_USAGE "--cpu-mask takes a hex mask without 0x (c0), not '$2'" ;;
                esac
                cpu_mask=$2 ;;
            --input-layer) input_layer=$2 ;;
            --input-shape) input_shape=$2 ;;
        esac
        shift 2
        shifted=$((shifted + 2))
    done
    delegate_flag "$delegate" >/dev/null
}

check_run_files() {
    need_run_dir "$run_dir"
    [ -f "$binary" ] && [ -x "$binary" ] || fail $EX_NOINPUT "no executable benchmark binary at $binary"
    [ -f "$model" ] || fail $EX_NOINPUT "no model file at $model"
    if [ -n "$cpu_mask" ]; then
        command -v taskset >/dev/null 2>&1 || fail $EX_UNAVAILABLE "taskset is missing: cannot pin to cores $cpu_mask"
    fi
    touch "$run_dir/alive"
    cd "$run_dir" || fail $EX_NOINPUT "cannot enter the run folder $run_dir"
}

# --- actions ---------------------------------------------------------------------------------------

action=$1
[ $# -ge 1 ] && shift
case $action in
    --version)
        echo "mixdeploy_bench.sh $VERSION"
        ;;
    start)
        [ $# -eq 2 ] || fail $EX_USAGE "start needs RUN_DIR STALE_S"
        need_count STALE_S "$2"
        [ -f "$script" ] || fail $EX_USAGE "run it as 'sh SCRIPT start ...' (the reaper runs the script again)"
        command -v setsid >/dev/null 2>&1 || fail $EX_UNAVAILABLE "setsid is missing: the reaper cannot be detached"
        mkdir -p "$1" && touch "$1/alive" || fail $EX_CANTCREAT "cannot make the run folder $1"
        # Detached (own session, no terminal, no pipes to the host): it outlives this adb
        # command and a host that goes away, and so cleans up after either. Wait until it runs
        # in its own session: a child not yet detached would die with this command's group.
        (setsid sh "$script" reap "$1" "$2" </dev/null >/dev/null 2>&1 &)
        # a deadline by the clock, not a count of sleeps: a sleep without fractions sleeps 1 s
        deadline=$(( $(date +%s) + 10 ))
        until [ -s "$1/reaper" ]; do
            [ "$(date +%s)" -lt $deadline ] || fail $EX_UNAVAILABLE "the reaper did not start within 10 s (setsid, sh)"
            sleep 0.05 2>/dev/null || sleep 1
        done
        ;;
    reap)
        [ $# -eq 2 ] || fail $EX_USAGE "reap needs RUN_DIR STALE_S"
        need_count STALE_S "$2"
        echo $$ > "$1/reaper"      # now detached: `start` may return
        while [ -d "$1" ]; do
            sleep $REAPER_TICK_S
            seen=$(stat -c %Y "$1/alive" 2>/dev/null || echo 0)
            if [ $(($(date +%s) - seen)) -gt "$2" ]; then
                stop_tool "$1"
                rm -rf "$1"
            fi
        done
        ;;
    touch)
        [ $# -eq 1 ] || fail $EX_USAGE "touch needs RUN_DIR"
        need_run_dir "$1"
        touch "$1/alive"
        ;;
    bench)
        parse_run_args "$@"
        shift $shifted
        [ $# -eq 0 ] || fail $EX_USAGE "bench takes no INPUT files (given: $*)"
        check_run_files
        set -- "$binary" "--graph=$model" "--num_threads=$threads" "--num_runs=$runs" \
            "--warmup_runs=$warmup" --report_peak_memory_footprint=true "$(delegate_flag "$delegate")"
        if [ -n "$op_profile" ]; then
            set -- "$@" --enable_op_profiling=true
        fi
        run_tool "$run_dir" "$@"
        ;;
    parity)
        parse_run_args "$@"
        shift $shifted
        [ $# -ge 1 ] || fail $EX_USAGE "parity needs at least one INPUT file"
        [ -n "$input_layer" ] && [ -n "$input_shape" ] || fail $EX_USAGE "parity needs --input-layer and --input-shape"
        check_run_files
        for input in "$@"; do
            [ -f "$input" ] || fail $EX_NOINPUT "no parity input file at $input"
        done
        # benchmark_model reads --input_layer_value_files only for layers also named in
        # --input_layer (with --input_layer_shape); the file must be exactly the tensor's bytes.
        escape_colons "$input_layer"
        layer_item=$escaped
        for input in "$@"; do
            touch "$run_dir/alive"
            escape_colons "$input"
            run_tool "$run_dir" "$binary" "--graph=$model" "--num_threads=$threads" --num_runs=1 \
                --warmup_runs=0 --report_peak_memory_footprint=true "$(delegate_flag "$delegate")" \
                "--input_layer=$input_layer" "--input_layer_shape=$input_shape" \
                "--input_layer_value_files=$layer_item:$escaped" "--output_filepath=$input.out" >/dev/null || exit $?
        done
        ;;
    stop)
        [ $# -eq 1 ] || fail $EX_USAGE "stop needs RUN_DIR"
        stop_tool "$1"
        ;;
    clean)
        [ $# -eq 1 ] || fail $EX_USAGE "clean needs RUN_DIR"
        stop_tool "$1"
        rm -rf "$1"
        ;;
    *)
        fail $EX_USAGE "unknown action '$action': --version, start, touch, bench, parity, stop, clean"
        ;;
esac
