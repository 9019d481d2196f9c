# shellcheck shell=sh
# `COMMAND...` with stdin closed, so nothing can wait for an answer.
exec "$@" </dev/null
