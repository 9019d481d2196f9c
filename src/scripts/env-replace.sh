# `env-replace.sh SRC ENV BEFORE [SHA256]`: the new file SRC put in place of ENV atomically,
# with ENV's mode and owner; the current file kept as BEFORE (for the undo) until the gate
# passed. With SHA256, ENV must still be the file the change was built from (exit 75).
src=$1; env=$2; before=$3; want=${4:-}
if [ -n "$want" ]; then
    now=$(sha256sum < "$env" | cut -d' ' -f1) || exit 1
    [ "$now" = "$want" ] || { echo ".env changed since it was read; run again" >&2; exit 75; }
fi
# BEFORE exists only as a complete copy: the undo moves it over ENV, so a copy cut short
# (disk full) must never carry that name.
if ! { cp -p "$env" "$before.tmp" && mv -f "$before.tmp" "$before"; }; then
    rm -f "$before.tmp"
    exit 1
fi
cp "$src" "$env.ctops-new" && chmod --reference="$env" "$env.ctops-new" || exit 1
chown --reference="$env" "$env.ctops-new" 2>/dev/null || true
sync "$env.ctops-new" 2>/dev/null
mv -f "$env.ctops-new" "$env"
