#!/usr/bin/env python3
"""A single-threaded handoff generator, to tell the daemon's faults from handoff-load's:
   single_thread_generator.py SOCKET STREAMS RAMP_SECONDS
N streams over RAMP seconds to SOCKET, as the module does (a loopback TCP pair, a SEQPACKET
connect, one sendmsg with the server side attached, both closed), then every client read to
EOF. Prints each stream closed without a response, and a summary line. Loopback only."""
import json, selectors, socket, sys, time
sock_path, n, ramp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(4096)
addr = lst.getsockname()
sel = selectors.DefaultSelector()
got = {}  # client socket -> bytes received
empty = 0; done = 0; ok = 0; send_fail = 0
data = json.dumps({"prompt": "hello"}).encode()
start = time.monotonic(); i = 0
def pump(timeout):
    global empty, done, ok
    for key, _ in sel.select(timeout):
        c = key.fileobj
        try:
            b = c.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            b = b''
        if b:
            got[c] = got.get(c, 0) + len(b)
        else:
            if got.get(c, 0) == 0:
                empty += 1
                print(f"stream closed without a response at {time.monotonic()-start:.3f}s", flush=True)
            else:
                ok += 1
            done += 1
            sel.unregister(c); c.close(); got.pop(c, None)
while i < n:
    due = start + ramp * i / n
    now = time.monotonic()
    if now < due:
        pump(due - now); continue
    client = socket.create_connection(addr)
    server, _ = lst.accept()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    u.connect(sock_path)
    try:
        socket.send_fds(u, [data], [server.fileno()])
    except OSError as e:
        send_fail += 1; print("send failed", e, flush=True)
    u.close(); server.close()
    client.setblocking(False); sel.register(client, selectors.EVENT_READ)
    i += 1
    pump(0)
deadline = time.monotonic() + 30
while done < n - send_fail and time.monotonic() < deadline:
    pump(0.5)
print(f"streams {n} done {done} ok {ok} empty {empty} send_fail {send_fail} open {n-done-send_fail}", flush=True)
