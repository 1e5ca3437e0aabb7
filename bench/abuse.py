"""Abuse probes against a running auth-jit: the table of the README's
security section, measured on this machine. Run by bench/abuse.sh.

Usage: abuse.py connections|guesses BASE_URL PID CLIENT_ID
Prints one JSON object with each probe's result. Guessing locks the
source address for the rest of the minute, so it runs last.
"""
import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request


def rss_kib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def health(base):
    try:
        with urllib.request.urlopen(base + "/api/health", timeout=20) as r:
            return r.status
    except Exception as e:  # noqa: BLE001 - any failure is "not served"
        return str(e)


def slow_heads(host, port, n, wait):
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Ty")
        socks.append(s)
    time.sleep(wait)
    closed = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            data = s.recv(1024)
            # A 408 answer or an empty read: the server let go.
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                closed += 1
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except socket.timeout:
            pass
        s.close()
    return closed


def idle_flood(host, port, n):
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((host, port)))
        except OSError:
            break
    return socks


def guesses(base, client_id, n):
    statuses = {}
    for _ in range(n):
        req = urllib.request.Request(
            base + "/api/token",
            data=json.dumps({"audience": "bench-api"}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic "
                + base64.b64encode(f"{client_id}:ajs_wrong".encode()).decode(),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        statuses[code] = statuses.get(code, 0) + 1
    return statuses


def main():
    mode, base, pid, client_id = sys.argv[1:5]
    pid = int(pid)
    host, port = base.split("//")[1].split(":")
    port = int(port)
    if mode == "guesses":
        print(json.dumps({
            "wrong_secret_statuses_of_120": guesses(base, client_id, 120),
            "unknown_id_statuses_of_120": guesses(base, "no-such-client", 120),
        }))
        return
    out = {"rss_start_kib": rss_kib(pid, "VmRSS")}
    out["slow_heads_closed_of_1000_after_7s"] = slow_heads(host, port, 1000, 7)
    before = rss_kib(pid)
    flood = idle_flood(host, port, 3000)
    t0 = time.time()
    out["health_during_idle_flood"] = health(base)
    out["health_latency_s"] = round(time.time() - t0, 2)
    time.sleep(1)
    out["idle_connections_opened"] = len(flood)
    out["peak_rss_kib_before_flood"] = before
    out["peak_rss_kib_after_flood"] = rss_kib(pid)
    for s in flood:
        s.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
