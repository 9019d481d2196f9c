# shellcheck shell=sh
# Prints `required` and the packages that asked for it when the host needs a reboot.
if [ -e /var/run/reboot-required ]; then
    echo required; sort -u /var/run/reboot-required.pkgs 2>/dev/null
fi; true
