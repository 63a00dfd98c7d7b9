#!/usr/bin/env bash
# Writes usersd(8) in roff to stdout, generated from `usersd --help` and
# `usersd --version` so that the man page never disagrees with the binary.
#   packaging/manpage.sh path/to/usersd > usersd.8
set -euo pipefail
binary="${1:?usage: manpage.sh path/to/usersd}"
version="$("$binary" --version | awk '{print $2}')"
help="$("$binary" --help)"
date="$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)"

# roff-escape: backslashes, and lines starting with . or ' (control characters).
escape() { sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\([.']\)/\\\\\&\1/"; }

cat <<ROFF
.TH USERSD 8 "$date" "usersd $version" "System Administration"
.SH NAME
usersd \- user directory served over FastCGI behind nginx
.SH SYNOPSIS
.B usersd
.RB [ serve | migrate | check | "backup \fIPATH\fP" ]
.RI [ options ]
.SH DESCRIPTION
.B usersd
stores users and background tasks in SQLite and answers HTTP requests that nginx
passes to it over FastCGI on a unix socket. Under systemd it is started by
.B usersd.socket
(socket activation), keeps its database in
.IR /var/lib/usersd/users.sqlite3 ,
and logs one logfmt line per event to the journal.
.PP
The text below is the output of
.BR "usersd \-\-help" .
Every option can also be given as the environment variable shown in brackets,
for example in
.IR /etc/default/usersd .
.PP
.nf
.ft CR
$(printf '%s\n' "$help" | escape)
.ft R
.fi
.SH SIGNALS
.TP
.B SIGTERM, SIGINT
stop accepting, finish in-flight requests, let running tasks finish or re-queue
them, exit 0.
.TP
.B SIGHUP
re-read USERSD_LOG_LEVEL from the environment file; the socket stays open.
.SH EXIT STATUS
0 on success, 64 for a bad setting (one line on standard error), 1 for other
failures.
.SH FILES
.TP
.I /lib/systemd/system/usersd.socket, /lib/systemd/system/usersd.service
systemd units; the socket is
.IR /run/usersd/usersd.sock .
.TP
.I /etc/default/usersd
settings read at start (USERSD_* lines).
.TP
.I /etc/nginx/sites-available/usersd
nginx site in front of the socket.
.TP
.I /var/lib/usersd/users.sqlite3
the database (DynamicUser: really under /var/lib/private/usersd).
.SH EXAMPLES
.nf
systemctl enable \-\-now usersd.socket
usersd check \-\-nginx /etc/nginx/sites\-available/usersd
usersd backup /root/users\-\$(date +%F).sqlite3 \-\-db /var/lib/usersd/users.sqlite3
journalctl \-u usersd
.fi
.SH SEE ALSO
.BR nginx (8),
.BR systemd.socket (5),
.BR systemd.exec (5),
.I /usr/share/doc/usersd/deploy.md
ROFF
