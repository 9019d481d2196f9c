# The announcement of a new version, a step of the deploy runner (`journal` is the runner's).
# Set above this text by remote::assign: NOTIFY_CURL (curl config naming the URL, empty: no
# POST), NOTIFY_HOST (the URL's host, all the journal may name), NOTIFY_PAYLOAD (the JSON
# body), NOTIFY_NOTES (the CHANGELOG section), NOTIFY_RUN (1: run the function
# notify_command, defined above this text: the configured notify_command in the service).
# The URL often holds a token: it reaches curl on stdin (printf is a builtin), never argv.
if [ -n "$NOTIFY_CURL" ]; then
    printf '%s\n' "$NOTIFY_CURL" |
        curl -fsS -m 10 -X POST -H 'Content-Type: application/json' --data-binary "$NOTIFY_PAYLOAD" -K - >/dev/null ||
        journal note "notification failed: POST to $NOTIFY_HOST did not succeed"
fi
if [ -n "$NOTIFY_RUN" ]; then
    printf '%s' "$NOTIFY_NOTES" | notify_command || journal note "notification failed: notify_command exited $?"
fi
true
