"""``flowbreaker keys``: Ed25519 command signing keys (streams/clients/signing.py).

- ``flowbreaker keys new FILE [--id KID]``: a signer's key file with one fresh
  private key, active (mode 600; refuses to overwrite), and its verifiers' file
  ``FILE.pub`` (``--public PUB`` to name it).
- ``flowbreaker keys add FILE [--id KID] [--activate]``: rotation, step 1: a
  fresh private key added to a signer's file (not active unless
  ``--activate``); the public file is written again with every public key.
- ``flowbreaker keys activate FILE KID``: rotation, step 2: new signatures use
  ``KID``.
- ``flowbreaker keys public FILE [--out PUB]``: the verifiers' file (public
  keys only) derived from a signer's file: printed, or written to ``PUB``.

Processes that hold a key file reload it when it changes (or on SIGHUP), so
no step restarts anything. Exit 2 with one line for a file that cannot be
used, an id that exists or is malformed, or a file that would be overwritten.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> main(["new", str(d / "k.toml"), "--id", "k1"], out=open(os.devnull, "w"))
0
>>> from streams.clients.signing import KeyRing
>>> KeyRing.from_file(d / "k.toml").can_sign, KeyRing.from_file(d / "k.toml.pub").can_sign
(True, False)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from detector.errors import UsageError

__all__ = ["configure_parser", "run", "main"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    n = sub.add_parser("new", help="a signer's key file with a fresh active key, and its public file",
                       description="a signer's key file with a fresh active Ed25519 key (mode 600), and its public "
                                   "file for verifiers")
    n.add_argument("file", metavar="FILE")
    n.add_argument("--id", dest="kid", metavar="KID", help="key id (default: k<date>-<random>)")
    n.add_argument("--public", metavar="PUB", help="the verifiers' file to write (default: FILE.pub)")
    a = sub.add_parser("add", help="rotation: add a fresh private key to a signer's file",
                       description="rotation, step 1: add a fresh private key to a signer's file (not active "
                                   "unless --activate) and write its public file again")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--id", dest="kid", metavar="KID", help="key id (default: k<date>-<random>)")
    a.add_argument("--activate", action="store_true", help="make the new key the active one at once")
    a.add_argument("--public", metavar="PUB", help="the verifiers' file to write (default: FILE.pub)")
    c = sub.add_parser("activate", help="rotation: sign with another key of the file",
                       description="rotation, step 2: new signatures use KID")
    c.add_argument("file", metavar="FILE")
    c.add_argument("kid", metavar="KID")
    u = sub.add_parser("public", help="the verifiers' file (public keys only) of a signer's file",
                       description="the verifiers' key file (public keys only) derived from a key file")
    u.add_argument("file", metavar="FILE")
    u.add_argument("--out", metavar="PUB", help="write it here (default: print it)")


def _write(path: Path, text: str, mode: int, *, replace: bool) -> None:
    """Write ``text`` whole or not at all (a temporary file renamed over): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace and path.exists():
        raise UsageError(f"{path} exists: not overwritten (flowbreaker keys add {path} adds a key to it)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pub_path(file: Path, public: str | None) -> Path:
    return Path(public) if public else file.with_name(file.name + ".pub")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.clients.signing import KeyRing, SigningKeyError, _fresh_kid, _KID, key_file_text, new_key_file

    out = out or sys.stdout
    file = Path(args.file)
    try:
        if args.keys_command == "new":
            text = new_key_file(args.kid)
            _write(file, text, 0o600, replace=False)
            ring = KeyRing.from_file(file)
            pub = _pub_path(file, args.public)
            _write(pub, ring.file_text(public_only=True), 0o644, replace=True)
            print(f"wrote {file} (private, active key {ring.active}) and {pub} (public: for guards, actuators, "
                  f"gateways)", file=out)
            return 0
        ring = KeyRing.from_file(file)
        if args.keys_command == "public":
            text = ring.file_text(public_only=True)
            if args.out:
                _write(Path(args.out), text, 0o644, replace=True)
                print(f"wrote {args.out} ({', '.join(ring.ids)})", file=out)
            else:
                out.write(text)
            return 0
        private, public, active = ring._state
        if args.keys_command == "add":
            kid = args.kid or _fresh_kid()
            if not _KID.match(kid):
                raise UsageError(f"key id {kid!r} must be 1-32 characters of letters, digits and ._-")
            if kid in public:
                raise UsageError(f"{file}: key id {kid!r} exists")
            key = Ed25519PrivateKey.generate()
            keys = {k: (private.get(k), public[k]) for k in public}
            keys[kid] = (key, key.public_key())
            active = kid if args.activate or active is None else active
            _write(file, key_file_text(keys, active), 0o600, replace=True)
            pub = _pub_path(file, args.public)
            _write(pub, KeyRing.from_file(file).file_text(public_only=True), 0o644, replace=True)
            print(f"added {kid} to {file} (active: {active}); wrote {pub}: give it to every verifier", file=out)
            return 0
        # activate
        if args.kid not in private:
            raise UsageError(f"{file}: no private key {args.kid!r} (keys: {', '.join(sorted(private)) or 'none'})")
        _write(file, key_file_text({k: (private.get(k), public[k]) for k in public}, args.kid), 0o600,
               replace=True)
        print(f"{file}: active key {args.kid}", file=out)
        return 0
    except SigningKeyError as err:
        raise UsageError(str(err)) from None


def main(argv: list[str], *, prog: str = "flowbreaker keys", out: TextIO | None = None) -> int:
    """The command on its own (``python -m streams.clients.signing``, doctests): exit 2 with one line on misuse."""

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            print(f"{self.prog}: {message}", file=sys.stderr)
            raise SystemExit(2)

    p = _Parser(prog=prog)
    configure_parser(p)
    try:
        args = p.parse_args(argv)
        return run(args, out=out)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
