#!/usr/bin/env bash
# Gate a checkpoint on a committed gapscope baseline: extract a fixed probe set with the
# checkpoint, analyse it with bootstrap intervals, and compare it with the baseline.
#
#   examples/ci/gate.sh CHECKPOINT [BASELINE]
#
# Exit status is gapscope check's: 0 every metric passed, 1 a metric regressed (or failed a
# threshold), 2 bad input (e.g. no baseline yet, a baseline of a schema this version cannot
# read), 3 a crash of gapscope itself. Needs gapscope[extract] (open_clip) for the extraction.
#
# Promote a checkpoint (then commit the baseline) by running with UPDATE_BASELINE=1: the
# report replaces the baseline when it passes the gate (FORCE=1: even when it does not); the
# first run writes the first baseline:
#
#   UPDATE_BASELINE=1 examples/ci/gate.sh checkpoints/good.pt ci/gapscope-baseline.json
#
# Tolerances, thresholds and --significant come from gapscope.toml (or [tool.gapscope.check]
# in pyproject.toml) in the current directory (see examples/ci/gapscope.toml); without them the
# default gate applies.
#
# Environment, with defaults:
#   PROBE_IMAGES    image folder of the probe set         probe/images
#   PROBE_CAPTIONS  its captions (CSV, TSV or JSONL)       probe/captions.csv
#   MODEL           open_clip architecture                 ViT-B-32
#   DEVICE          auto, cpu, cuda                        auto
#   BOOTSTRAP       resamples for the intervals            200
#   OUT             folder for the store, report, JUnit    gapscope-gate
#   EXTRACT_OPTIONS more gapscope extract options          (none)
#   GAPSCOPE        the gapscope command                   gapscope
set -euo pipefail

checkpoint=${1:?usage: gate.sh CHECKPOINT [BASELINE]}
baseline=${2:-gapscope-baseline.json}
probe_images=${PROBE_IMAGES:-probe/images}
probe_captions=${PROBE_CAPTIONS:-probe/captions.csv}
model=${MODEL:-ViT-B-32}
device=${DEVICE:-auto}
bootstrap=${BOOTSTRAP:-200}
out=${OUT:-gapscope-gate}
gapscope=${GAPSCOPE:-gapscope}
extract_options=${EXTRACT_OPTIONS:-}
update=${UPDATE_BASELINE:-0}
force=${FORCE:-0}

# Fail before the slow part when there is nothing to compare with.
if [[ "$update" != "1" && ! -f "$baseline" ]]; then
    echo "Error: no baseline at $baseline; make one with UPDATE_BASELINE=1 $0 GOOD_CHECKPOINT" >&2
    exit 2
fi

mkdir -p "$out"

# A fresh store each run: the probe set is fixed, the checkpoint is what changes.
# shellcheck disable=SC2086  # the command and the extra options are split on purpose
$gapscope extract --images "$probe_images" --captions "$probe_captions" \
    --model "$model" --pretrained "$checkpoint" --device "$device" $extract_options \
    --out "$out/store" --overwrite --quiet

$gapscope analyze "$out/store" --bootstrap "$bootstrap" --device "$device" \
    --format json --output "$out/report.json" --quiet

options=(--junit "$out/junit.xml")
if [[ "$update" == "1" ]]; then
    options+=(--update-baseline)
    if [[ "$force" == "1" ]]; then
        options+=(--force)
    fi
fi
$gapscope check "$out/report.json" --baseline "$baseline" "${options[@]}"
