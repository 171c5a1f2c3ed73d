"""funnel's local SMTP server (aiosmtpd): accepts mail on 127.0.0.1 and files each message into
a Maildir (one file per message in <maildir>/new, written to tmp/ first and renamed, so a reader
never sees half a message). Started by `funnel stack up`; tests and `funnel demo` read the
received mail back from the Maildir.

Fault injection, by the recipient's local part (so a test chooses per address what happens):
  tempfail-<n>-...@  the first <n> RCPTs for that address get 451 4.7.1 (try again later)
  bounce-...@        every RCPT gets 550 5.1.1 (mailbox unknown: a hard bounce)
Everything else is accepted. --no-store accepts and counts without writing (benchmarks).
"""
import argparse
import asyncio
import os
import re
import signal
import threading
import time

from aiosmtpd.controller import Controller

TEMPFAIL = re.compile(r"^tempfail-(\d+)-", re.I)


class Sink:
    def __init__(self, maildir, store):
        self.maildir = maildir
        self.store = store
        self.tries = {}
        self.lock = threading.Lock()
        self.counter = 0
        self.received = 0
        if store:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.lower().startswith("bounce-"):
            return "550 5.1.1 <%s>: recipient mailbox unknown" % address
        m = TEMPFAIL.match(local)
        if m:
            with self.lock:
                n = self.tries.get(address.lower(), 0) + 1
                self.tries[address.lower()] = n
            if n <= int(m.group(1)):
                return "451 4.7.1 <%s>: try again later (attempt %d)" % (address, n)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received += 1
        if not self.store:
            return "250 OK: discarded"
        with self.lock:
            self.counter += 1
            name = "%d.%d_%d.funnel" % (time.time_ns(), os.getpid(), self.counter)
        head = "".join("Delivered-To: %s\r\n" % r for r in envelope.rcpt_tos).encode()
        tmp = os.path.join(self.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.maildir, "new", name))
        return "250 OK: queued as %s" % name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=12525)
    ap.add_argument("--maildir", default="mail")
    ap.add_argument("--no-store", action="store_true")
    a = ap.parse_args()
    sink = Sink(a.maildir, not a.no_store)
    c = Controller(sink, hostname="127.0.0.1", port=a.port, enable_SMTPUTF8=True, decode_data=False, data_size_limit=64 * 1024 * 1024)
    c.start()
    print("smtp sink listening on 127.0.0.1:%d, maildir %s" % (a.port, a.maildir if sink.store else "(not stored)"), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    c.stop()


if __name__ == "__main__":
    main()
