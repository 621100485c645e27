#!/bin/sh
# The image's entry point: svcluster's CLI, and every other program of the image as it is.
#
#   docker run IMAGE demo --out /data/demo      ->  svcluster demo --out /data/demo
#   docker run IMAGE --help                     ->  svcluster --help
#   docker run IMAGE prefect flow-run execute   ->  prefect flow-run execute   (the docker work pool)
#   docker run IMAGE python -c '...'            ->  python -c '...'            (also dask, sh, ...)
#
# The first argument goes to svcluster when it is an option or one of svcluster's commands
# (even if a program of that name exists); else, when it names an executable file (on PATH or
# by a path), that program runs with the arguments; anything else goes to svcluster, which
# says what is wrong. POSIX sh (dash in the image); tests/test_dockerfile.py runs it.

# svcluster's commands (`svcluster --help`); the test checks this list against the CLI.
SVCLUSTER_COMMANDS="assign cluster compare demo embed export fetch ingest lake names report run runs search similar sql"

# Whether $1 names an executable file, by a path or found on PATH as `exec` would find it (a
# shell builtin of the same name, e.g. echo or printf, does not hide /usr/bin's program).
is_program() {
    case "$1" in
        "" | -*) return 1 ;;
        */*) [ -f "$1" ] && [ -x "$1" ]; return ;;
    esac
    saved_ifs=$IFS
    IFS=:
    for dir in $PATH; do
        if [ -n "$dir" ] && [ -f "$dir/$1" ] && [ -x "$dir/$1" ]; then
            IFS=$saved_ifs
            return 0
        fi
    done
    IFS=$saved_ifs
    return 1
}

set -f  # is_program splits PATH on ':'; no glob expansion of its entries
if [ "$#" -gt 0 ]; then
    case " $SVCLUSTER_COMMANDS " in
        *" $1 "*) ;;
        *) if is_program "$1"; then exec "$@"; fi ;;
    esac
fi
exec svcluster "$@"
