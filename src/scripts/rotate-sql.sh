# `rotate-sql.sh FILE PSQL...`: PSQL (psql in the postgres service) fed FILE on stdin. FILE
# is private (0600) and holds `ALTER ROLE ... PASSWORD '<verifier>'`: the verifier stays off
# every command line and out of the runner's script.
f=$1; shift
"$@" < "$f"
