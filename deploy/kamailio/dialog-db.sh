#!/bin/sh
# Prepares DIR, a db_text database (kamailio.cfg's DB_URL, text://DIR), before
# every Kamailio start: the tables where Kamailio keeps its dialogs and its
# caller guards over a restart. Rows Kamailio wrote at its last shutdown are
# kept. The dialog tables' definitions come from Debian's kamailio package;
# callers and dialogs are htables.
#   deploy/kamailio/dialog-db.sh DIR
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
schema=/usr/share/kamailio/dbtext/kamailio
mkdir -p "$dir"
for t in dialog dialog_vars; do
  [ -s "$dir/$t" ] || cp "$schema/$t" "$dir/$t"
done
for t in callers dialogs; do
  [ -s "$dir/$t" ] || cp "$schema/htable" "$dir/$t"
  # htable writes a table back at shutdown only if it loaded a row from it at
  # start: an empty one would never keep the guards of the next restart.
  [ "$(wc -l < "$dir/$t")" -gt 1 ] || echo '0:-:0:0:-:0' >> "$dir/$t"
done
if [ ! -s "$dir/version" ]; then
  {
    head -n 1 "$schema/version"
    grep -E '^[0-9]+:(dialog|dialog_vars):' "$schema/version"
    printf '0:callers:2\n0:dialogs:2\n'
  } > "$dir/version"
fi
