# `env-tidy.sh FILE...`: the temporary copies and private files of an env change removed
# (with a copy's `.tmp` left by a failed write).
for f in "$@"; do rm -f "$f" "$f.tmp"; done
