"""A real SMTP server (aiosmtpd) for Conveyor's end-to-end tests.

Every accepted message is written to DIR as <start>-<n>.eml (<start> the server's
start time in ns, so a restarted server on the same DIR never overwrites a message).
Behaviour for fault tests:
  --reject SUBSTR   answer 550 to RCPT TO addresses containing SUBSTR, quoting the
                    address as Postfix does ("550 5.1.1 <addr>: Recipient address
                    rejected: ...")
  --defer SUBSTR    answer 450 (a greylisting or throttling deferral) to RCPT TO
                    addresses containing SUBSTR
  --delay SECONDS   wait this long before accepting DATA (a slow server)
  --tempfail N      answer 451 to the first N DATA commands
Prints "ready <port>" on stdout once it listens; stops on SIGTERM.
"""
import argparse
import asyncio
import itertools
import os
import time
import signal

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, directory, reject, delay, tempfail, defer=""):
        self.directory = directory
        self.reject = reject
        self.defer = defer
        self.delay = delay
        self.tempfail = tempfail
        self.counter = itertools.count(1)
        self.started = time.time_ns()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject and self.reject in address:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.defer and self.defer in address:
            return "450 4.2.1 The user you are trying to contact is receiving mail too quickly"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.tempfail > 0:
            self.tempfail -= 1
            return "451 4.3.0 Try again later"
        n = next(self.counter)
        path = os.path.join(self.directory, f"{self.started:020}-{n:06}.eml")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, path)
        return "250 OK queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--reject", default="")
    parser.add_argument("--defer", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--tempfail", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Handler(args.dir, args.reject, args.delay, args.tempfail, args.defer)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port, data_size_limit=None)
    controller.start()
    print(f"ready {args.port}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
