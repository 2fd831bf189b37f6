#!/usr/bin/env bash
# Regenerates deploy/frys-rollback.yaml from the chart (tests/integration/chart.rs checks it):
# the file's header and Namespace are kept, the rendered chart replaces the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM:-helm}
out=deploy/frys-rollback.yaml
header=$(awk '/^kind: Namespace/ {found=1} found && /^---/ {exit} {print}' "$out")
{
	printf '%s\n' "$header"
	"$helm" template frys-rollback charts/frys-rollback -n frys-system | sed '/^# Source:/d'
} >"$out.new"
mv "$out.new" "$out"
