# shellcheck shell=sh
# `SUDO_PREFIX...`: how apt gets root: prints root, sudo, nosudo, or `refused WHAT_SUDO_SAID`.
if [ "$(id -u)" = 0 ]; then echo root; exit 0; fi
[ $# -gt 0 ] || { echo nosudo; exit 0; }
if said=$("$@" apt-get --version 2>&1 >/dev/null); then echo sudo; else printf 'refused %s\n' "$said"; fi
