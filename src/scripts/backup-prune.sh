# ctops backup prune: `dir names...`, removes database backups with their manifest and
# verification mark.
dir=$1; shift
for n in "$@"; do rm -f "$dir/$n.manifest.json" "$dir/$n.verified" "$dir/$n" || exit 1; done
