#!/usr/bin/env bash
# Release checks, for CI (called from .ci/run) and before a release (docs/release.md):
#   1. the documentation site builds with `mkdocs build --strict`;
#   2. mypy with django-stubs passes on the package;
#   3. `python -m build` makes a wheel and an sdist, and `twine check --strict` passes;
#   4. the wheel, installed in a clean virtual environment and run from outside the
#      source tree, migrates, sends and renders (scripts/wheel_smoke.py);
#   5. the compatibility matrix (noxfile.py): all nine cells on SQLite and the newest
#      pair on PostgreSQL (`nox -s tests postgresql`), or what NOX_ARGS says (e.g.
#      NOX_ARGS="-t ci" for the quick subset of five). With CI_DEADLINE (a time, in
#      seconds since the epoch) the cells run one by one, the quick subset's first,
#      while the next one is expected to end before then (each is expected to take as
#      long as the longest so far, at first CI_CELL_ESTIMATE seconds); the cells left
#      out are listed, and a release runs them all (docs/release.md).
# Needs .venv with the [test] extra (what `make test` installs); adds [docs,release].
# Every step runs even when an earlier one failed; each prints its time, and the script
# exits non-zero when any failed.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
venv=$root/.venv
python=$venv/bin/python
NOX_ARGS=${NOX_ARGS:--s tests postgresql}

if [ ! -x "$python" ]; then
  echo "release checks: $python is missing: run 'make test' (or its install step) first" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nt-release-XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
timings=()

# step LABEL COMMAND...: run one check, print its time, remember a failure.
step() {
  local label=$1 begin=$SECONDS rc
  shift
  printf '\n===== release checks: %s =====\n' "$label"
  set +e
  "$@" </dev/null
  rc=$?
  set -e
  local took=$((SECONDS - begin))
  if [ "$rc" -ne 0 ]; then
    failed+=("$label")
    timings+=("$(printf '%-34s FAILED (exit %s) %5ss' "$label" "$rc" "$took")")
    printf '===== %s: FAILED (exit %s) in %ss =====\n' "$label" "$rc" "$took"
  else
    timings+=("$(printf '%-34s passed %14ss' "$label" "$took")")
    printf '===== %s: passed in %ss =====\n' "$label" "$took"
  fi
}

install_tools() {
  "$python" -m pip install -qq -e ".[test,docs,release]"
}

build_docs() {
  NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict --site-dir "$work/site"
}

type_check() {
  "$venv/bin/mypy"
}

build_packages() {
  "$python" -m build --outdir "$work/dist" &&
    "$venv/bin/twine" check --strict "$work"/dist/*
}

# The wheel in a virtual environment of its own, run from outside the source tree.
wheel_smoke() {
  local wheel
  wheel=$(find "$work/dist" -name '*.whl' | head -n 1)
  [ -n "$wheel" ] || { echo "no wheel was built" >&2; return 1; }
  "$python" -m venv "$work/wheel-venv" &&
    "$work/wheel-venv/bin/python" -m pip install -qq "$wheel" &&
    (cd "$work" && "$work/wheel-venv/bin/python" "$root/scripts/wheel_smoke.py" \
      --wheel "$wheel" --example-project "$root/example_project")
}

compat_matrix() {
  if [ -z "${CI_DEADLINE:-}" ]; then
    # shellcheck disable=SC2086  # NOX_ARGS is a list of arguments
    "$venv/bin/nox" $NOX_ARGS
    return
  fi
  local cells cell begin took longest=${CI_CELL_ESTIMATE:-600} rc=0 left_out=()
  # The quick subset first (every Python and every Django), then PostgreSQL, then the rest.
  mapfile -t cells < <("$venv/bin/nox" -l --json 2>/dev/null | "$python" -c '
import json, sys
cells = json.load(sys.stdin)
order = lambda c: (0 if "ci" in c["tags"] else 1 if c["name"] == "postgresql" else 2)
print("\n".join(c["session"] for c in sorted(cells, key=order)))')
  [ ${#cells[@]} -gt 0 ] || { echo "nox listed no session" >&2; return 1; }
  for cell in "${cells[@]}"; do
    if [ $(($(date +%s) + longest)) -gt "$CI_DEADLINE" ]; then
      left_out+=("$cell")
      continue
    fi
    begin=$SECONDS
    "$venv/bin/nox" -s "$cell" || rc=1
    took=$((SECONDS - begin))
    [ "$took" -gt "$longest" ] && longest=$took
    printf '===== matrix cell %s: %ss =====\n' "$cell" "$took"
  done
  if [ ${#left_out[@]} -gt 0 ]; then
    printf '===== matrix: %s of %s cells NOT RUN, no time left before CI_DEADLINE: =====\n' \
      "${#left_out[@]}" "${#cells[@]}"
    printf '  %s\n' "${left_out[@]}"
  fi
  return $rc
}

step "install docs and release tools" install_tools
step "docs: mkdocs build --strict" build_docs
step "types: mypy" type_check
step "packages: build + twine check" build_packages
step "wheel: clean venv smoke test" wheel_smoke
step "compatibility matrix: nox $NOX_ARGS" compat_matrix

printf '\n===== release checks: summary =====\n'
printf '%s\n' "${timings[@]}"
printf 'release checks finished in %ss\n' $((SECONDS - started))
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
