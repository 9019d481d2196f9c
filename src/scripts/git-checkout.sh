# ctops: `git checkout -q -B BRANCH COMMIT` in the checkout. When the checkout is shared with
# a group (`ctops setup` sets core.sharedRepository=group), what it creates keeps the group's
# write bit whatever the login's umask: a folder a new release adds must be replaceable by
# the next operator's deploy, not only by this login's.
set -u
branch=$1; commit=$2
case $(git config --get core.sharedRepository 2>/dev/null) in
    group | true | 1 | all | world | everybody | 2)
        umask "$(printf '%04o' $(( $(umask) & 0707 )))" ;;
esac
exec git checkout -q -B "$branch" "$commit"
