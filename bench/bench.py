"""`make bench`: auth-jit against a bare axum ceiling, in one interleaved run.

Starts auth-jit (embedded store; and a second auth-jit on Redis when
redis-server is installed) and the reference (examples/reference.rs), then
runs ROUNDS rounds of every endpoint with wrk and reports the medians: rps,
p50, p99, server CPU per request (from /proc, also as a multiple of the
reference GET's in the same round), peak RSS (VmHWM, reset before each
run) and the ratio to the ceiling's rps. Verification uses tokens never
verified before (minted by examples/mint.rs with the server's key).

The reference also measures the physical limits: `GET /health` sends the
same answer as `/api/health` (body and headers), `POST /sign` is an HTTP
POST plus one Ed25519 signature, `POST /verify` an HTTP POST plus one
verification (of the same tokens, with auth-jit's public key). The column
"CPU × limit" divides a row's CPU by its limit's in the same round: what
auth-jit's own work (client authentication, policy, store, audit, metrics)
costs on top of what no token service can avoid.

Usage: bench.py [SECONDS] [CONNECTIONS] [ROUNDS]
Writes the table to the terminal and to bench/results.md.
"""
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/auth-jit")
REFERENCE = os.path.join(ROOT, "target/release/examples/reference")
MINT = os.path.join(ROOT, "target/release/examples/mint")
HZ = os.sysconf("SC_CLK_TCK")
CEILING = "reference GET / (ceiling)"
HEALTH_LIMIT = "reference GET /health (limit: health's answer)"
SIGN_LIMIT = "reference POST /sign (limit: JSON + 1 signature)"
VERIFY_LIMIT = "reference POST /verify (limit: JSON + 1 verification)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, log):
    for _ in range(400):
        text = open(log).read()
        m = re.search(r"listening on (http://[0-9.:]+)", text)
        if m:
            return m.group(1)
        if proc.poll() is not None:
            sys.exit(f"bench: server exited: {text}")
        time.sleep(0.05)
    sys.exit(f"bench: server did not start: {open(log).read()}")


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(pid, url, seconds, connections, script=None, env=None):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    reset_peak(pid)
    before = cpu_ticks(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    after = cpu_ticks(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    reused = re.search(r"reused_passes=(\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99": ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "cpu_us": (after - before) / HZ * 1e6 / max(requests, 1),
        "rss_mb": peak_rss_mb(pid),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "reused": int(reused.group(1)) if reused else 0,
    }


def start(cmd, env, log):
    handle = open(log, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=handle)
    return proc, wait_listening(proc, log)


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for tool in (BIN, REFERENCE, MINT):
        if not os.path.exists(tool):
            sys.exit(f"bench: {tool} missing: run make bench (it builds them)")
    work = tempfile.mkdtemp(prefix="auth-jit-bench-")
    procs = []
    try:
        base_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "AUTH_JIT_PORT": "0",
            "AUTH_JIT_RATE_LIMIT": "0",
            "AUTH_JIT_LOG_LEVEL": "warn,auth_jit=info",
            "AUTH_JIT_DRAIN_SECS": "0",
            # Fixed: the port is picked at start, and minted tokens need the
            # server's issuer.
            "AUTH_JIT_ISSUER": "http://auth-jit.bench",
        }
        def instance(name, extra):
            env = {**base_env, "AUTH_JIT_DATA_DIR": f"{work}/{name}", **extra}
            run = lambda *a: subprocess.run([BIN, *a], env=env, capture_output=True, text=True, check=True).stdout.strip()
            caller = run("client", "add", "bench-caller", "--audience", "bench-api", "--scope", "read")
            receiver = run("client", "add", "bench-api", "--audience", "unused")
            proc, url = start([BIN, "serve"], env, f"{work}/{name}.log")
            procs.append(proc)
            return env, proc, url, caller, receiver

        env, srv, url, caller, receiver = instance("embedded", {})
        # The reference verifies with auth-jit's key, so both check the
        # same tokens.
        with urllib.request.urlopen(f"{url}/.well-known/jwks.json", timeout=10) as r:
            x = next(k["x"] for k in json.load(r)["keys"] if k.get("crv") == "Ed25519")
        ref, ref_url = start([REFERENCE], {**base_env, "REFERENCE_VERIFY_X": x}, f"{work}/reference.log")
        procs.append(ref)
        b64 = lambda s: base64.b64encode(s.encode()).decode()
        per_round = int(40_000 * seconds)

        def mint(env, count, once=False):
            path = f"{work}/tokens-{time.time_ns()}.txt"
            with open(path, "w") as f:
                subprocess.run([MINT, "bench-caller", "bench-api", str(count)] + (["once"] if once else []),
                               env=env, stdout=f, check=True)
            return path

        redis = None
        if shutil.which("redis-server"):
            port = free_port()
            redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                      "--appendonly", "no", "--dir", work],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(redis)
            time.sleep(0.5)
            kek = base64.b64encode(os.urandom(32)).decode()
            renv, rsrv, rurl, rcaller, rreceiver = instance(
                "redis", {"AUTH_JIT_STORE_URL": f"redis://127.0.0.1:{port}/0", "AUTH_JIT_KEY_ENCRYPTION_KEY": kek})

        runs = {}
        # The reference GET's CPU per request in the current round: every
        # row's CPU is also given as a multiple of it, which the machine's
        # drift between rounds moves far less than the µs themselves.
        round_ref = {}

        def record(name, result, limit=None):
            """`limit`: the reference row whose CPU this one's is divided by."""
            round_ref[name] = max(result["cpu_us"], 1e-9)
            result["cpu_x"] = result["cpu_us"] / round_ref[CEILING]
            result["limit_x"] = result["cpu_us"] / round_ref[limit or name]
            runs.setdefault(name, []).append(result)

        issue_body = '{"audience":"bench-api","scope":"read"}'
        form = "grant_type=client_credentials&audience=bench-api&scope=read"
        for _ in range(rounds):
            post = os.path.join(ROOT, "bench/post.lua")
            verify_many = os.path.join(ROOT, "bench/verify_many.lua")
            record(CEILING, wrk(ref.pid, f"{ref_url}/", seconds, connections))
            record(HEALTH_LIMIT, wrk(ref.pid, f"{ref_url}/health", seconds, connections))
            record("reference POST /echo (JSON)", wrk(ref.pid, f"{ref_url}/echo", seconds, connections,
                   post, {"BENCH_AUTH": "", "BENCH_BODY": issue_body}))
            record(SIGN_LIMIT, wrk(ref.pid, f"{ref_url}/sign", seconds, connections,
                   post, {"BENCH_AUTH": "", "BENCH_BODY": issue_body}))
            record("GET /api/health", wrk(srv.pid, f"{url}/api/health", seconds, connections), HEALTH_LIMIT)
            record("POST /api/token", wrk(srv.pid, f"{url}/api/token", seconds, connections,
                   post, {"BENCH_AUTH": b64(f"bench-caller:{caller}"), "BENCH_BODY": issue_body}), SIGN_LIMIT)
            record("POST /oauth/token", wrk(srv.pid, f"{url}/oauth/token", seconds, connections,
                   os.path.join(ROOT, "bench/form.lua"),
                   {"BENCH_AUTH": b64(f"bench-caller:{caller}"), "BENCH_FORM": form}), SIGN_LIMIT)
            tokens = mint(env, per_round)
            # The limit verifies the same tokens, never one it saw before.
            record(VERIFY_LIMIT, wrk(ref.pid, f"{ref_url}/verify", seconds, connections, verify_many,
                   {"BENCH_AUTH": "", "BENCH_TOKENS": tokens, "BENCH_AUDIENCE": "bench-api", "BENCH_PATH": "/verify"}))
            record("POST /api/token/verify (distinct)", wrk(srv.pid, f"{url}/api/token/verify", seconds, connections,
                   verify_many,
                   {"BENCH_AUTH": b64(f"bench-api:{receiver}"), "BENCH_TOKENS": tokens, "BENCH_AUDIENCE": "bench-api"}),
                   VERIFY_LIMIT)
            os.remove(tokens)
            if redis:
                tokens = mint(renv, per_round, once=True)
                record("verify single-use (Redis)", wrk(rsrv.pid, f"{rurl}/api/token/verify", seconds, connections,
                       verify_many,
                       {"BENCH_AUTH": b64(f"bench-api:{rreceiver}"), "BENCH_TOKENS": tokens, "BENCH_AUDIENCE": "bench-api"}),
                       VERIFY_LIMIT)
                os.remove(tokens)

        ceiling = statistics.median(r["rps"] for r in runs[CEILING])
        ceiling_p99 = statistics.median(r["p99"] for r in runs[CEILING])
        head = (f"auth-jit on {os.cpu_count()} cores, wrk -t2 -c{connections} -d{seconds}s, "
                f"{rounds} interleaved rounds, medians")
        lines = [head, "",
                 "| endpoint | rps | p50 ms | p99 ms | server CPU µs/req | CPU × ceiling's | CPU × limit | peak RSS MB | × ceiling | non-2xx | reused tokens |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        medians = {}
        for name, results in runs.items():
            m = {k: statistics.median(r[k] for r in results) for k in results[0]}
            medians[name] = m
            lines.append(f"| {name} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu_us']:.1f} | {m['cpu_x']:.2f} | {m['limit_x']:.2f} | "
                         f"{m['rss_mb']:.1f} | {m['rps'] / ceiling:.3f} | {sum(r['errors'] for r in results)} | "
                         f"{sum(r['reused'] for r in results)} |")
        issue = medians["POST /api/token"]
        verify = medians["POST /api/token/verify (distinct)"]
        health = medians["GET /api/health"]
        targets = [
            ("issuance ≤ 35 µs CPU per token", issue["cpu_us"] <= 35),
            ("issuance ≥ 0.40 × ceiling", issue["rps"] >= 0.40 * ceiling),
            ("verification ≤ 80 µs CPU", verify["cpu_us"] <= 80),
            ("verification ≥ 0.22 × ceiling", verify["rps"] >= 0.22 * ceiling),
            ("/api/health ≥ 0.75 × ceiling", health["rps"] >= 0.75 * ceiling),
            ("issuance p99 ≤ 2 × ceiling p99", issue["p99"] <= 2 * ceiling_p99),
            ("peak RSS ≤ 30 MB", max(m["rss_mb"] for n, m in medians.items() if "reference" not in n) <= 30),
        ]
        lines += ["", "Targets (issue 10):"] + [f"- {'met' if ok else 'NOT met'}: {t}" for t, ok in targets]
        sign, check, same = medians[SIGN_LIMIT], medians[VERIFY_LIMIT], medians[HEALTH_LIMIT]
        lines += ["", "The limits themselves, against the same targets (bare axum, no auth-jit code):",
                  f"- health's answer: {same['cpu_us']:.1f} µs, {same['rps'] / ceiling:.3f} × ceiling; "
                  f"auth-jit's health adds {health['cpu_us'] - same['cpu_us']:+.1f} µs",
                  f"- POST + 1 signature: {sign['cpu_us']:.1f} µs, {sign['rps'] / ceiling:.3f} × ceiling; "
                  f"auth-jit's issuance adds {issue['cpu_us'] - sign['cpu_us']:+.1f} µs",
                  f"- POST + 1 verification: {check['cpu_us']:.1f} µs, {check['rps'] / ceiling:.3f} × ceiling; "
                  f"auth-jit's verification adds {verify['cpu_us'] - check['cpu_us']:+.1f} µs"]
        text = "\n".join(lines)
        print(text)
        with open(os.path.join(ROOT, "bench/results.md"), "w") as f:
            f.write(text + "\n")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
