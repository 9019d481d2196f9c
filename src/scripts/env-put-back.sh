# `env-put-back.sh BEFORE ENV`: the previous file back, if the replace got as far as keeping a
# complete copy of it (BEFORE is only ever a complete copy: see env-replace.sh).
before=$1; env=$2
if [ -f "$before" ]; then mv -f "$before" "$env"; fi
