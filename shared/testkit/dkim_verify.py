"""Verifies the DKIM signature of one message with dkimpy, an implementation
independent of Conveyor's, for the signing tests. No DNS is queried: the key record
is given on the command line.

  python3 dkim_verify.py RECORD [NAME] < message.eml

RECORD is the TXT value (v=DKIM1; k=...; p=...). With NAME (selector._domainkey.domain)
a lookup of any other name finds nothing, so the signature's d= and s= are checked
too. Exit status 0: the signature is valid; 1: it is not (the reason on stderr);
2: wrong usage. Needs PYTHONPATH=.dev/py (scripts/services ensure_dkim_verifier).
"""
import logging
import sys

import dkim


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    record = sys.argv[1].encode()
    expected = sys.argv[2].rstrip(".").lower() if len(sys.argv) == 3 else None
    lookups = []

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        lookups.append(name)
        if expected is not None and name.rstrip(".").lower() != expected:
            return None
        return record

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="dkimpy: %(message)s")
    logger = logging.getLogger("dkim_verify")
    message = sys.stdin.buffer.read()
    # RFC 8301: RSA keys under 2048 bits are not to be trusted any more.
    valid = dkim.verify(message, logger=logger, dnsfunc=dnsfunc, minkey=2048)
    if valid:
        print("valid")
        return 0
    print(f"invalid (looked up: {', '.join(lookups) or 'nothing'})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
