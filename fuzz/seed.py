#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from tests/fixtures (run from anywhere)."""
import os, struct, pathlib, hashlib

root = pathlib.Path(__file__).resolve().parent.parent
fx = root / "tests" / "fixtures"
corpus = root / "fuzz" / "corpus"


def put(target, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


emls = [p for p in fx.rglob("*") if p.is_file() and p.suffix in (".eml", ".txt", "")]
for p in emls:
    data = p.read_bytes()[: 256 * 1024]
    put("dsn_analyze", data)

for a in [b"prvs=1123abcdef=alice@ours.example", b"prvs=0000000000=x@y", b"alice@ours.example",
          b"PRVS=9999ffffff=bob@Example.COM", b"prvs==@"]:
    put("batv_tag", a)

put("config_parse", (root / "milter.toml").read_bytes())
for p in (root / "tests").glob("*.rs"):
    pass

put("signature_verify", b"v=1; k=1; m=0123456789abcdef\0<id@ours.example>\0Mon, 1 Jan 2024 00:00:00 +0000")


def pkt(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def z(*parts):
    return b"".join(p + b"\0" for p in parts)


def session(msg, sender=b"<>", rcpt=b"<alice@ours.example>", client=b"mx.remote.example"):
    s = b""
    s += pkt(b"C", z(client)[:-1] + b"\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.7\0")
    s += pkt(b"D", b"M" + z(b"i", b"ABC123"))
    s += pkt(b"M", z(sender))
    s += pkt(b"R", z(rcpt))
    s += pkt(b"T")
    head, _, body = msg.replace(b"\r\n", b"\n").partition(b"\n\n")
    for line in head.split(b"\n"):
        if b":" in line and not line[:1].isspace():
            n, _, v = line.partition(b":")
            s += pkt(b"L", z(n, v.strip()))
    s += pkt(b"N")
    for i in range(0, len(body), 65535):
        s += pkt(b"B", body[i : i + 65535])
    s += pkt(b"E")
    s += pkt(b"Q")
    return s


# The first byte chooses: even = the harness sends the negotiation first.
for p in sorted(emls)[:40]:
    put("milter_session", b"\0" + session(p.read_bytes()[:32 * 1024]))
put("milter_session", b"\0" + session(b"From: a@ours.example\nSubject: hi\n\nhello\n",
                                      sender=b"<a@ours.example>", rcpt=b"<b@remote.example>",
                                      client=b"localhost"))
