# `env-upload.sh PATH`: stdin written to a new private file PATH (the new .env, or SQL holding
# a password verifier, on its way to the runner), whole or not at all.
umask 077
mkdir -p "${1%/*}" && cat > "$1.tmp" && mv -f "$1.tmp" "$1"
