"""Latency of one authenticated read, request after request, on an idle hub: what the
per-request credential check costs. Usage: python3 bench/auth_latency.py DIR [DIR ...],
each DIR holding an `aihub` binary; runs three alternating rounds of 5,000 requests
(after 500 unrecorded) against a fresh database each, with NATS at AIHUB__NATS__URL.
See docs/benchmarks.md."""
import http.client, json, os, subprocess, sys, time, statistics, uuid, socket

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run(binary, n):
    db = "authbench_" + uuid.uuid4().hex[:10]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"create database {db}"], check=True)
    port = free_port()
    env = dict(os.environ,
        AIHUB__DATABASE__URL=f"postgres://postgres@127.0.0.1:5432/{db}",
        AIHUB__NATS__URL=os.environ.get("AIHUB__NATS__URL", "nats://127.0.0.1:4222"),
        AIHUB__NATS__STREAM_PREFIX=f"AB{db[-10:]}_", AIHUB__NATS__SUBJECT_PREFIX=f"ab{db[-10:]}",
        AIHUB__SERVER__PORT=str(port), RUST_LOG="warn")
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    hub = subprocess.Popen([binary, "all"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/ready"); r = c.getresponse(); r.read()
                if r.status == 200: break
            except OSError: pass
            if time.time() > deadline: raise SystemExit("not ready")
            time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("POST", "/api/auth/register", json.dumps({"email": "a@example.com", "password": "correct horse 1"}), {"content-type": "application/json"})
        token = json.loads(c.getresponse().read())["token"]
        h = {"authorization": f"Bearer {token}"}
        lat = []
        for i in range(n + 500):
            t = time.perf_counter(); c.request("GET", "/api/credits/balance", headers=h); r = c.getresponse(); r.read()
            if r.status != 200: raise SystemExit(f"status {r.status}")
            if i >= 500: lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        return statistics.mean(lat), lat[len(lat)//2], lat[int(len(lat)*0.99)]
    finally:
        hub.terminate(); hub.wait()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"drop database {db}"])

for rnd in range(3):
    for folder in sys.argv[1:]:
        m, p50, p99 = run(os.path.join(folder, "aihub"), 5000)
        print(f"{folder} round {rnd+1}: mean {m:.0f} us, p50 {p50:.0f} us, p99 {p99:.0f} us", flush=True)
