# `env-check.sh ENV SHA256 [FILE...]`: refuses (exit 75) when ENV no longer has the checksum
# of the file ctops built its change from (another change finished between the read and now:
# writing over it would silently undo it), removing the FILEs uploaded for the change (nothing
# else will: a run that changed nothing has nothing to undo). Run under the host lock, first.
env=$1; want=$2; shift 2
now=$(sha256sum < "$env" | cut -d' ' -f1) || exit 1
if [ "$now" != "$want" ]; then
    rm -f "$@"
    echo ".env changed since it was read; run again" >&2
    exit 75
fi
