#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/TARGET/, from real inputs.

    python3 fuzz/make_seeds.py      # rewrites every seed; commit what changed
    python3 fuzz/make_seeds.py mqtt_codec relay_wire   # only these targets

Each seed is in its harness's input format (see fuzz/src/*.rs): a few
settings bytes, then what the decoder reads: the spec's example frames,
documented listener specs and identity patterns, ringport.example.toml and
variants of it, ClientHellos of Python's ssl module (OpenSSL), kernel-shaped
control blocks and receive buffers. Fuzzing adds nothing here: stable.sh
keeps what it finds under fuzz/target/.
"""

import os
import shutil
import sys
import socket
import ssl
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, seeds):
    if sys.argv[1:] and target not in sys.argv[1:]:
        return
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def chunk(b):
    assert len(b) < 256
    return bytes([len(b)]) + b


# --- sockperf -----------------------------------------------------------------

def sockperf_frame(seq, flags, payload):
    return struct.pack(">QHI", seq, flags, 14 + len(payload)) + payload


ping = sockperf_frame(1, 0x3, b"x" * 50)  # a ping-pong request: CLIENT | PONG_REQUEST
under_load = sockperf_frame(2, 0x1, b"y" * 50)  # no reply asked
write("sockperf_stream", [
    ("ping-pong", b"\xff\xff\x00" + ping * 3),
    ("split", b"\x00\x80\x03\x04\x0c\x20" + ping + under_load + ping),
    ("too-long", b"\x00\x10\x00" + sockperf_frame(3, 3, b"z" * 40)),
])
write("sockperf_datagram", [
    ("ping-pong", b"\xff\xff" + ping),
    ("under-load", b"\xff\xff" + under_load),
    ("warmup", b"\xff\xff" + sockperf_frame(0, 0x7, b"")),
])

# --- relay --------------------------------------------------------------------

def relay(ty, topic, payload):
    return struct.pack(">BBI", ty, len(topic), len(payload)) + topic + payload


PUBLISH = relay(0x03, b"t/1", b"21.5")  # the spec's example
frames = [
    ("publish", PUBLISH),
    ("subscribe", relay(0x01, b"t/1", b"")),
    ("unsubscribe", relay(0x02, b"news", b"")),
    ("ping", relay(0x04, b"", b"p1")),
    ("message", relay(0x81, b"t/1", b"21.5")),
    ("lagged", relay(0x82, b"", struct.pack(">Q", 300))),
    ("pong", relay(0x83, b"", b"")),
]
write("relay_wire",
      [(n, b"\xff\xff" + f) for n, f in frames]
      + [("session", b"\xff\xff" + b"".join(f for _, f in frames)),
         ("small-max", b"\x00\x03" + PUBLISH),
         ("longest-topic", b"\xff\xff" + relay(0x03, b"z" * 255, b""))])


def built(kind, topic, payload=b""):
    # relay_plugin's built frame: [kind, topic index, payload chunk]
    return bytes([kind, topic]) + chunk(payload)


plugin = []
# One shard: subscribe, publish to itself, ping (the plugin's own script).
plugin.append(("one-shard", bytes([0x04, 0xff, 0x40])
               + b"\x00" + built(0, 0) + b"\x04\xff"
               + b"\x10" + built(2, 0, b"hello") + b"\x10" + built(4, 0, b"p1")
               + b"\x14\x07\x14\x20\x14\xff"))
# Two shards, a slow subscriber that lags, a full ring, a notice, the timer.
plugin.append(("lagged", bytes([0x12, 64, 10])
               + b"\x00" + built(0, 0) + b"\x04\xff" + b"\x07"
               + b"\x10" + built(2, 0, b"1") + b"\x10" + built(2, 0, b"2") + b"\x14\xff"
               + b"\x08" + b"\x05" + built(2, 0, b"udp") + b"\x09\x07\x08\x09"
               + b"\x06\x01\x00\x00\x05" + b"\x06\x00\x01" + chunk(b"from 1")))
# Three shards, disconnect_slow, this one the last.
plugin.append(("disconnect", bytes([0x6a, 255, 2])
               + b"\x00" + built(0, 2) + b"\x20" + built(0, 2) + b"\x04\xff\x24\xff\x27"
               + b"\x10" + built(3, 2, b"x" * 30) + b"\x14\xff\x08"
               + b"\x10" + built(3, 2, b"y") + b"\x14\xff\x0a\x09"))
# Raw bytes on a stream: a bad frame after good ones.
plugin.append(("bad-frame", bytes([0x01, 16, 0])
               + b"\x00\x05\x00\x00" + chunk(PUBLISH + b"\x07\x00\x00\x00\x00\x00") + b"\x04\x02\x04\xff"))
write("relay_plugin", plugin)

# --- TLS ----------------------------------------------------------------------

def record_ops(mode, ops):
    return bytes([mode, 200, 9]) + b"".join(ops)


app = b"\x03" + chunk(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
alert = b"\x01" + chunk(b"\x01\x00")  # close_notify
key_update = b"\x02" + chunk(b"\x18\x00\x00\x01\x00")
full = b"\x13" + struct.pack(">H", 16384)
tampered = b"\x23" + chunk(relay(0x03, b"t/1", b"21.5")) + b"\x00\x03\x01"
replayed = b"\x43" + chunk(b"once")
garbage = b"\x80" + chunk(b"\x17\x03\x03\x00\x13" + b"\x00" * 19)
write("tls_record", [
    ("tls13-aes", record_ops(0x01, [app, alert, key_update, full])),
    ("tls13-chacha", record_ops(0x03, [app, tampered, replayed])),
    ("tls12-aes", record_ops(0x00, [app, tampered, alert, full])),
    ("tls12-chacha", record_ops(0x02, [key_update, replayed, garbage])),
    ("ccs13", record_ops(0x01, [b"\x00" + chunk(b"\x01"), app])),
    ("limit", bytes([0x01, 1, 0]) + app + app),
])


def client_hello(**kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if "version" in kw:
        ctx.minimum_version = ctx.maximum_version = kw["version"]
    if "alpn" in kw:
        ctx.set_alpn_protocols(kw["alpn"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(inc, out, server_hostname=kw.get("sni"))
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


hello13 = client_hello(sni="localhost", version=ssl.TLSVersion.TLSv1_3)
hello12 = client_hello(sni="localhost", version=ssl.TLSVersion.TLSv1_2, alpn=["mqtt"])
hello_any = client_hello(alpn=["h2", "http/1.1"])
write("tls_handshake", [
    ("hello13", b"\x00\x00" + hello13),
    ("hello13-split", b"\x00\x03\x00\x04\x40" + hello13),
    ("hello12-alpn", b"\x01\x00" + hello12),
    ("hello-mutual", b"\x02\x00" + hello_any),
    ("hello-audit", b"\x03\x01\x10" + hello13),
    ("hello-then-junk", b"\x00\x00" + hello13 + b"\x16\x03\x03\x00\x05hello"),
    ("plaintext", b"\x00\x00GET / HTTP/1.1\r\n\r\n"),
    ("too-large", b"\x80\x00" + hello13[:5] + b"\x00" * 64),
])

# --- identities, specs, config ------------------------------------------------

def patterns(pats, sans):
    out = bytes([len(pats)]) + b"".join(chunk(p.encode()) for p in pats)
    for kind, text in sans:
        out += chunk(bytes([kind]) + text.encode())
    return out


write("identity_pattern", [
    ("spiffe-prefix", patterns(["spiffe://prod.example/sensor/*"],
                               [(0, "spiffe://prod.example/sensor/7")])),
    ("spiffe-exact", patterns(["spiffe://prod.example/sensor/7"],
                              [(0, "spiffe://prod.example/sensor/70")])),
    ("dns", patterns(["dns:gw.prod.example"], [(1, "GW.prod.example")])),
    ("dns-under", patterns(["dns:*.prod.example"], [(1, "a.b.prod.example"), (1, "prod.example")])),
    ("mixed", patterns(["spiffe://a/*", "dns:x.test", "sensor-7", "dns:*"],
                       [(2, "spiffe://a/b"), (3, "x.test")])),
])

write("listener_spec", [(f"spec{i}", s.encode()) for i, s in enumerate([
    "sockperf@udp:127.0.0.1:11111-11114",
    "echo@tcp:127.0.0.1:9000-9063",
    "echo@tcp:[::1]:9000",
    "relay@tls:127.0.0.1:7400-7403",
    "echo@tcp:::1:9000",
    "echo@tcp:127.0.0.1:9063-9000",
    "mqtt_v5@udp:[fe80::1]:0",
])])

with open(os.path.join(ROOT, "ringport.example.toml"), "rb") as f:
    example = f.read()
tls_config = b"""listen = ["echo@tls:127.0.0.1:9443"]
tls_cert = "/etc/ringport/cert.pem"
tls_key = "/etc/ringport/key.pem"
tls_client_ca = "/etc/ringport/ca.pem"
tls_allow_identity = ["spiffe://prod.example/sensor/*", "dns:gw.prod.example"]
tls_min_version = "1.2"
tls_alpn = ["mqtt"]
tls_handshake_timeout = 10
admin = "127.0.0.1:9900"
"""
listener_table = b"""[[listener]]
spec = "relay@udp:127.0.0.1:7400-7401"
allow = ["10.0.0.0/8"]
max_datagram = 512
conn_rate = 0
alert_source_denials = 0

[[listener]]
spec = "echo@tls:127.0.0.1:9000"
tls_cert = "cert.pem"
tls_key = "key.pem"
"""
write("config", [
    ("example.toml", example),
    ("tls.toml", tls_config),
    ("listeners.toml", listener_table),
    ("limits.toml", b"tcp_bufs = 4096\nudp_bufs = 16\nring_entries = 8\nmax_outbound = 65536\n"
                    b"stats_interval = 0.5\ndrain_timeout = 0\nalert_factor = 0\ncpus = \"0,1\"\n"),
    ("bad.toml", b"shards = \"two\"\nmode = \"ring\"\n"),
    ("seconds.toml", b"stats_interval = 2.5e0\nidle_timeout = 0.25\nfirst_bytes_timeout = 1e1\n"
                     b"alert_source_window = 6e1\nalert_factor = 1.5\n"),
])

# --- UDP receive layouts ------------------------------------------------------

def cmsg(level, kind, data, pad=True):
    b = struct.pack("=Qii", 16 + len(data), level, kind) + data
    return b + b"\x00" * ((-len(b)) % 8 if pad else 0)


ovfl = cmsg(socket.SOL_SOCKET, 40, struct.pack("=I", 5))
gro = cmsg(17, 104, struct.pack("=i", 1200))
write("udp_cmsg", [
    ("ovfl", b"\x00" + bytes([len(ovfl)]) + ovfl),
    ("ovfl-gro", b"\x00" + bytes([len(ovfl + gro)]) + ovfl + gro),
    ("gro-tight", b"\x00\x14" + cmsg(17, 104, struct.pack("=i", 1472), pad=False)),
    ("pktinfo-ovfl", b"\x00\x30" + cmsg(0, 8, b"\x00" * 12) + ovfl),
    ("built", b"\x01" + b"\x02" + chunk(b"\x00" * 12) + b"\x00" + chunk(struct.pack("=I", 9))
     + b"\x01" + chunk(struct.pack("=i", 1400))),
])


def sockaddr_in(ip, port):
    return struct.pack("=H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(ip) + b"\x00" * 8


def sockaddr_in6(ip, port, flow=0, scope=0):
    return (struct.pack("=H", socket.AF_INET6) + struct.pack(">HI", port, flow)
            + socket.inet_pton(socket.AF_INET6, ip) + struct.pack("=I", scope))


v4 = sockaddr_in("127.0.0.1", 11111)
v6 = sockaddr_in6("fe80::1", 9000, 0x12345, 3)
write("sockaddr", [
    ("v4", b"\x00" + v4),
    ("v6", b"\x00" + v6),
    ("v4-in-storage", b"\x00" + v4 + b"\xaa" * 112),
    ("write-v6", b"\x01" + b"\x01" + socket.inet_pton(socket.AF_INET6, "::1") + b"\x23\x28\x00\x00\x00\x01\x00\x00\x00\x02"),
])


def recvmsg_buf(name, control, payload, flags=0, reported=None):
    reported = len(payload) if reported is None else reported
    head = struct.pack("=IIII", len(name), len(control), reported, flags)
    return head + name.ljust(28, b"\x00") + control.ljust(24, b"\x00") + payload


write("uring_recvmsg", [
    ("v4", b"\x00" + recvmsg_buf(v4, b"", ping)),
    ("v6-ovfl", b"\x00" + recvmsg_buf(v6, ovfl, PUBLISH)),
    ("truncated", b"\x00" + recvmsg_buf(v4, b"", b"x" * 40, flags=0x20, reported=2000)),
    ("empty", b"\x00" + recvmsg_buf(v4, b"", b"")),
    ("laid-out", b"\x01" + chunk(v4) + chunk(ovfl) + struct.pack(">I", 0) + b"\x00" + PUBLISH),
])


# --- MQTT ---------------------------------------------------------------------
# Packets of both versions as the specs lay them out (3.1.1 chapter 3, 5.0
# chapter 3), with the spec's examples ("a/b", packet identifier 10).

def varint(n):
    out = b""
    while True:
        n, d = n >> 7, n & 0x7f
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def mqtt(first, body):
    return bytes([first]) + varint(len(body)) + body


def s(b):
    return struct.pack(">H", len(b)) + b


def props(*ps):
    body = b"".join(ps)
    return varint(len(body)) + body


def user(k, v):
    return b"\x26" + s(k) + s(v)


def connect(level, flags, keep_alive, client_id, rest=b"", connect_props=None):
    p = b"" if connect_props is None else connect_props
    return mqtt(0x10, s(b"MQTT") + bytes([level, flags]) + struct.pack(">H", keep_alive)
                + p + s(client_id) + rest)


v311_session = (
    connect(4, 0xce, 10, b"id", s(b"will") + s(b"gone") + s(b"user") + s(b"pass"))
    + mqtt(0x82, b"\x00\x0a" + s(b"a/b") + b"\x01" + s(b"c/d") + b"\x02")
    + mqtt(0x30, s(b"a/b") + b"21.5")
    + mqtt(0x3b, s(b"a/b") + b"\x00\x0a" + b"hello")
    + mqtt(0x34, s(b"c/d") + b"\x00\x0b" + b"x" * 200)
    + mqtt(0x40, b"\x00\x0a") + mqtt(0x50, b"\x00\x0b") + mqtt(0x62, b"\x00\x0b")
    + mqtt(0x70, b"\x00\x0b")
    + mqtt(0xa2, b"\x00\x0c" + s(b"a/b") + s(b"c/d"))
    + mqtt(0xc0, b"") + mqtt(0xe0, b"")
)
v311_server = (
    mqtt(0x20, b"\x01\x00") + mqtt(0x90, b"\x00\x0a\x00\x01\x02\x80")
    + mqtt(0xb0, b"\x00\x0c") + mqtt(0xd0, b"")
)
v5_connect = connect(
    5, 0xd6, 60, b"",
    props(b"\x18\x00\x00\x00\x05", b"\x01\x01", b"\x02\x00\x00\x00\x3c", b"\x03" + s(b"text/plain"),
          b"\x08" + s(b"re/ply"), b"\x09" + s(b"\x01\x02"), user(b"w", b"1"))
    + s(b"will/t") + s(b"bye") + s(b"user") + s(b"pw"),
    props(b"\x11\x00\x00\x00\x0a", b"\x21\x00\x14", b"\x27\x00\x00\x10\x00", b"\x22\x00\x05",
          b"\x19\x01", b"\x17\x00", user(b"k", b"v"), b"\x15" + s(b"SCRAM-SHA-1"), b"\x16" + s(b"data")),
)
v5_session = (
    v5_connect
    + mqtt(0x82, b"\x00\x0a" + props(b"\x0b\x05", user(b"k", b"v")) + s(b"a/+") + b"\x2d"
           + s(b"$share/g/c/#") + b"\x02")
    + mqtt(0x30, s(b"a/b") + props() + b"21.5")
    + mqtt(0x32, s(b"a/b") + b"\x00\x0a"
           + props(b"\x01\x01", b"\x02\x00\x00\x00\x3c", b"\x23\x00\x03", b"\x08" + s(b"r"),
                   b"\x09" + s(b"x"), user(b"k", b"v"), user(b"k", b"w"), b"\x0b\x01",
                   b"\x0b\xac\x02", b"\x03" + s(b"t"))
           + b"hello")
    + mqtt(0x30, s(b"") + props(b"\x23\x00\x03") + b"by alias")
    + mqtt(0x40, b"\x00\x0a") + mqtt(0x50, b"\x00\x0b\x10")
    + mqtt(0x62, b"\x00\x0b\x92" + props(b"\x1f" + s(b"lost")))
    + mqtt(0x70, b"\x00\x0b\x00" + props(user(b"k", b"v")))
    + mqtt(0xa2, b"\x00\x0c" + props(user(b"k", b"v")) + s(b"a/+"))
    + mqtt(0xf0, b"\x18" + props(b"\x15" + s(b"SCRAM-SHA-1"), b"\x16" + s(b"more")))
    + mqtt(0xc0, b"")
    + mqtt(0xe0, b"\x04" + props(b"\x11\x00\x00\x00\x00", b"\x1f" + s(b"bye")))
)
v5_server = (
    mqtt(0x20, b"\x00\x00" + props(
        b"\x11\x00\x00\x00\x0a", b"\x21\x00\x14", b"\x24\x01", b"\x25\x00", b"\x27\x00\x00\x04\x00",
        b"\x12" + s(b"auto-1"), b"\x22\x00\x05", b"\x1f" + s(b"ok"), user(b"k", b"v"), b"\x28\x01",
        b"\x29\x00", b"\x2a\x01", b"\x13\x00\x1e", b"\x1a" + s(b"info"), b"\x1c" + s(b"other"),
        b"\x15" + s(b"m"), b"\x16" + s(b"d")))
    + mqtt(0x90, b"\x00\x0a" + props() + b"\x00\x01\x02\x80\xa2")
    + mqtt(0xb0, b"\x00\x0c" + props(b"\x1f" + s(b"x")) + b"\x00\x11")
    + mqtt(0xd0, b"")
    + mqtt(0xe0, b"\x8e")
    + mqtt(0xf0, b"")
)
write("mqtt_codec", [
    ("v311-session", b"\xff\xff" + v311_session),
    ("v311-server", b"\xff\xff" + v311_server),
    ("v5-session", b"\xff\xff" + v5_session),
    ("v5-server", b"\xff\xff" + v5_server),
    ("v5-connect-small-max", b"\x00\x40" + v5_connect),
    ("v31-connect", b"\xff\xff" + mqtt(0x10, s(b"MQIsdp") + b"\x03\x02\x00\x3c" + s(b"old"))),
    ("non-minimal-length", b"\xff\xff" + b"\xc0\x80\x00" + b"\x30\x85\x00" + s(b"t") + b"abc"),
])


# --- nats_codec ---------------------------------------------------------------
# Settings: control-line limit (x8, 0 = default), payload limit (0xffff =
# default), split point. Bytes: what nats-server 2.9.10 sent to a client
# (INFO as it writes it, with its trailing space), the spec's examples, errors.

nats_info = (b'INFO {"server_id":"NA5N6YFZA4WYR67BN6OGXHP2RLD6K5TJOBYLT7BP2H5HV2VG4TNNCTHS",'
             b'"server_name":"NA5N6YFZA4WYR67BN6OGXHP2RLD6K5TJOBYLT7BP2H5HV2VG4TNNCTHS",'
             b'"version":"2.9.10","proto":1,"go":"go1.19.8","host":"127.0.0.1","port":14999,'
             b'"headers":true,"max_payload":1048576,"client_id":4,"client_ip":"127.0.0.1"} \r\n')
nats_session = (nats_info
                + b"MSG a.b 1 r.1 5\r\nhello\r\n"
                + b"HMSG a.c 1 32 34\r\nNATS/1.0\r\nRingport-Origin: x\r\n\r\nhi\r\nPONG\r\nPING\r\n")
write("nats_codec", [
    ("server-session", b"\x00\xff\xff\x00\x80" + nats_session),
    ("spec-msg", b"\x00\xff\xff\x00\x05" + b"MSG FOO.BAR 9 INBOX.34 11\r\nHello World\r\n"),
    ("spec-hmsg", b"\x00\xff\xff\x00\x20"
     + b"HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n"),
    ("status-503", b"\x00\xff\xff\x00\x03" + b"HMSG _INBOX.x 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"),
    ("auth-error", b"\x00\xff\xff\x00\x07" + nats_info + b"-ERR 'Authorization Violation'\r\n"),
    ("small-limits", b"\x02\x00\x08\x00\x02" + b"MSG a 1 9\r\n123456789\r\n"),
    ("topic", b"\x00\xff\xff\x00\x00" + "sensors/room 1/$temp/é".encode()),
])
