#!/bin/sh
# Prepares DIR, a db_text database (kamailio.cfg's DB_URL, text://DIR), before
# every Kamailio start: the tables where Kamailio keeps its dialogs and its
# caller guards over a restart. Rows Kamailio wrote at its last shutdown are
# kept. The dialog tables' definitions come from Debian's kamailio package;
# callers and dialogs are htables. With --started, once Kamailio is up (it has
# read the tables): notes the tables as that start read them.
#   deploy/kamailio/dialog-db.sh DIR             before every start
#   deploy/kamailio/dialog-db.sh --started DIR   after every start that came up
set -eu
if [ $# -eq 2 ] && [ "$1" = --started ]; then
  # Noted only by a start that read the tables: one that failed before (a
  # config error, then systemd's Restart= or the operator's next start) read
  # nothing, and the dialogs its last clean shutdown wrote are still up.
  stat -c %y "$2/callers" > "$2/.callers-at-start"
  exit 0
fi
[ $# -eq 1 ] || { echo "usage: $0 [--started] DIR" >&2; exit 2; }
dir=$1
schema=/usr/share/kamailio/dbtext/kamailio
mkdir -p "$dir"
# A crash writes nothing: the tables are still those the last start read, their
# dialogs over since. Read again, each would come back answered, and the
# connector would take it up as a live call (once Tessera has forgotten it,
# metered anew from its old answer: its ID billed and kept busy). A clean
# shutdown always rewrites callers (htable deletes its rows and writes them
# again), so its modification time, to the nanosecond, as the last start that
# came up read it (--started) tells a crash from a shutdown: the tables are
# emptied then, as a crash loses every dialog anyway.
if [ -f "$dir/.callers-at-start" ] && [ "$(stat -c %y "$dir/callers")" = "$(cat "$dir/.callers-at-start")" ]; then
  echo "$0: $dir not written since the last start (a crash): its dialogs are dropped" >&2
  for t in dialog dialog_vars; do cp "$schema/$t" "$dir/$t"; done
  for t in callers dialogs; do cp "$schema/htable" "$dir/$t"; done
fi
for t in dialog dialog_vars; do
  [ -s "$dir/$t" ] || cp "$schema/$t" "$dir/$t"
done
for t in callers dialogs; do
  [ -s "$dir/$t" ] || cp "$schema/htable" "$dir/$t"
done
# The guards of calls whose dialogs were not kept (a call still ringing, or one
# up across a second restart: the dialog module writes only the dialogs made
# since it started) would outlive them for the htables' 12 h, counted as live:
# only the Call-IDs of the dialogs kept keep their guards, and their counts are
# made anew from those dialogs. A db_text field escapes ':' and '\' with '\'.
perl -e '
  my ($dir) = @ARGV;
  my $field = qr/((?:[^:\\\n]|\\.)*)(?::|\n?$)/;
  my %dialogs;
  open my $d, "<", "$dir/dialog" or die "$dir/dialog: $!";
  <$d>;
  while (<$d>) { my @c = /\G$field/g; $dialogs{$c[3]}++ if @c > 3 }
  open my $in, "<", "$dir/callers" or die "$dir/callers: $!";
  my ($head, @rows) = <$in>;
  my @kept = grep { @$_ > 5 && exists $dialogs{$_->[1]} } map { [/\G$field/g] } @rows;
  for my $t ("callers", "dialogs") {
    open my $out, ">", "$dir/$t.new" or die "$dir/$t.new: $!";
    print $out $head;
    my $n = 0;
    # callers: id, Call-ID, key and value types, the caller tag, expiry; dialogs: the count instead of the tag.
    for my $c (@kept) {
      my $value = $t eq "callers" ? "0:$c->[4]" : "1:$dialogs{$c->[1]}";
      print $out join(":", ++$n, $c->[1], 0, $value, $c->[5]), "\n";
    }
    close $out or die;
    rename "$dir/$t.new", "$dir/$t" or die;
  }' "$dir"
for t in callers dialogs; do
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
