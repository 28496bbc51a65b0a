#!/bin/sh
# Review a pull request's DFD change in CI: `dfdwatch check` the new DFD, then `dfdwatch diff`
# it against the base branch's, writing a Markdown report (for a PR comment) and failing the job
# on changes of FAIL_ON severity or above.
#
#   BASE=origin/main DFD=approved-dfd FAIL_ON=high REPORT=dfd-review.md deploy/ci/dfd-review.sh
#
# Needs `dfdwatch` on PATH (or DFDWATCH=/path/to/dfdwatch) and a git checkout with BASE fetched.
set -eu

BASE=${BASE:-origin/main}
DFD=${DFD:-approved-dfd}
FAIL_ON=${FAIL_ON:-high}
REPORT=${REPORT:-dfd-review.md}
DFDWATCH=${DFDWATCH:-dfdwatch}

status=0
"$DFDWATCH" check "$DFD" || status=$?
if [ "$status" -ne 0 ]; then
    echo "dfd-review: dfdwatch check failed ($status)" >&2
    exit "$status"
fi

if git cat-file -e "$BASE:$DFD" 2>/dev/null; then
    "$DFDWATCH" diff "$BASE:$DFD" "$DFD" --format markdown --fail-on "$FAIL_ON" > "$REPORT" || status=$?
else
    # A new DFD: everything in it is a change.
    printf '### DFD changes\n\nNo DFD at %s:%s; the whole DFD is new.\n' "$BASE" "$DFD" > "$REPORT"
fi
cat "$REPORT"
if [ "$status" -eq 1 ]; then
    echo "dfd-review: changes of severity $FAIL_ON or above need a security review" >&2
fi
exit "$status"
