#!/usr/bin/env bash
# Runs every fuzz target of the repository, one after the other, for
# FUZZTIME each (default 30s), and prints the executions of each.
#
# Targets are discovered with `go test -list`, so a new Fuzz function is
# picked up without touching this script. FUZZ (a regular expression,
# default ^Fuzz) narrows the targets and FUZZ_PKGS (default ./...) the
# packages; FUZZFLAGS is passed to `go test`. All targets run even when one
# fails; the script then exits 1. A failing input is written by go test to
# testdata/fuzz/<Target>/ in its package: commit it as a regression seed.
#
#   FUZZTIME=5m FUZZ='FuzzClassify|FuzzParseTokenQuery' FUZZ_PKGS=./pkg/imds hack/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
fuzztime=${FUZZTIME:-30s}
match=${FUZZ:-^Fuzz}
read -r -a pkgs <<<"${FUZZ_PKGS:-./...}"
read -r -a flags <<<"${FUZZFLAGS:-}"

# `go test -list` prints the matching names of a package, then its "ok" line.
targets=()
names=()
while read -r first second _; do
	case $first in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do targets+=("$second $n"); done
		names=()
		;;
	FAIL)
		echo "fuzz: listing the targets of $second failed" >&2
		exit 1
		;;
	*) names=() ;;
	esac
done < <("$GO" test -list "$match" "${pkgs[@]}")

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no target matches $match in ${pkgs[*]}" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, $fuzztime each"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
failed=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	echo "=== $pkg $name"
	if "$GO" test "${flags[@]}" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"; then
		result=ok
	else
		result=FAIL
		failed=1
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	summary+=("$(printf '%-4s %12s execs  %s %s' "$result" "${execs:-?}" "$pkg" "$name")")
done

echo
echo "fuzz: executions per target ($fuzztime each)"
printf '%s\n' "${summary[@]}"
exit $failed
