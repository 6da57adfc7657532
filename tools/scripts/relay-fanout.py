#!/usr/bin/env python3
"""Relay fan-out benchmark: one UDP publisher at a fixed rate, N TCP subscribers.

Starts `ringport serve` with a relay listener (TCP and UDP, one port per shard),
connects N subscribers spread round-robin over the shards' ports, all on one
topic, then publishes over UDP at RATE messages/s for SECS seconds from one
source (so all publishes land on shard 0 and reach the other shards over the
mesh). Subscribers count bytes received; every delivery is a fixed-size MESSAGE
frame, so deliveries = bytes / frame size, exactly. Server CPU is the
task-clock of the whole server process over the publishing window (perf stat).

usage: tools/scripts/relay-fanout.py [--subs 100] [--rate 5000] [--secs 5]
       [--shards 2] [--server-cpus 0-1] [--payload 32]
Prints one line: published, delivered, expected, deliveries/s, server CPU us per
delivery, and the server's drop counters from its final totals.
"""
import argparse
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--subs", type=int, default=100)
ap.add_argument("--rate", type=int, default=5000)
ap.add_argument("--secs", type=float, default=5.0)
ap.add_argument("--shards", type=int, default=2)
ap.add_argument("--server-cpus", default="0-1")
ap.add_argument("--payload", type=int, default=32)
ap.add_argument("--port", type=int, default=27400)
args = ap.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
binary = os.path.join(here, "..", "..", "target", "release", "ringport")
if not os.path.exists(binary):
    sys.exit("build first: cargo build --release")

topic = b"plant/1/temp"
first, last = args.port, args.port + args.shards - 1
spec = f"127.0.0.1:{first}-{last}" if last > first else f"127.0.0.1:{first}"
server = subprocess.Popen(
    [binary, "serve", "--shards", str(args.shards), "--cpus", args.server_cpus,
     "--listen", f"relay@tcp:{spec}", "--listen", f"relay@udp:{spec}",
     "--drain-timeout", "2"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
time.sleep(1.0)

def frame(kind, topic, payload=b""):
    return struct.pack(">BBI", kind, len(topic), len(payload)) + topic + payload

subs = []
for i in range(args.subs):
    s = socket.create_connection(("127.0.0.1", first + i % args.shards))
    s.sendall(frame(0x01, topic) + frame(0x04, b"", b"ready"))
    subs.append(s)
# Wait for every PONG so that all subscriptions are active.
pong = frame(0x83, b"", b"ready")
for s in subs:
    got = b""
    while len(got) < len(pong):
        got += s.recv(len(pong) - len(got))
    assert got == pong, got
    s.setblocking(False)

msg_len = 6 + len(topic) + args.payload
received = [0]
stop = threading.Event()

def reader():
    sel = selectors.DefaultSelector()
    for s in subs:
        sel.register(s, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            received[0] += len(data)

t = threading.Thread(target=reader)
t.start()

perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock", "-p", str(server.pid)],
                        stderr=subprocess.PIPE, text=True)
time.sleep(0.2)
pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * args.payload
datagram = frame(0x03, topic, payload)
total = int(args.rate * args.secs)
start = time.monotonic()
for i in range(total):
    due = start + i / args.rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    pub.sendto(datagram, ("127.0.0.1", first))
elapsed = time.monotonic() - start
expected_bytes = total * args.subs * msg_len
deadline = time.monotonic() + 10
while received[0] < expected_bytes and time.monotonic() < deadline:
    time.sleep(0.05)
perf.send_signal(signal.SIGINT)
_, perf_err = perf.communicate()
stop.set()
t.join()
task_ms = 0.0
for line in perf_err.splitlines():
    if "task-clock" in line:
        task_ms = float(line.split(",")[0])
for s in subs:
    s.close()
server.send_signal(signal.SIGTERM)
out, _ = server.communicate(timeout=30)
totals = [l for l in out.splitlines() if l.startswith("total:")]
delivered = received[0] // msg_len
print(f"subs={args.subs} shards={args.shards} rate={args.rate}/s published={total} "
      f"delivered={delivered} expected={total * args.subs} "
      f"deliveries_per_s={delivered / elapsed:.0f} "
      f"server_cpu_us_per_delivery={task_ms * 1000 / max(delivered, 1):.3f} "
      f"server_cpu_s={task_ms / 1000:.2f}")
print(totals[0] if totals else out[-500:])
