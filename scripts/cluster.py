#!/usr/bin/env python3
"""Several `leanlm serve` replicas on one machine behind one HAProxy.

  scripts/cluster.py [-n 2] [-m MODEL] [--port 8080] [--routing sticky|session|leastconn|roundrobin]
                     [--kv-mem MiB] [--maxconn 16] [--ready-file F] [--router haproxy|sglang]
                     [-- extra `leanlm serve` flags]

Each replica gets its share of the cores (pinned with taskset, as many threads as cores), a port of
its own (--port + 1 + i) and --kv-mem MiB of KV. HAProxy listens on --port with the configuration
rendered from deploy/haproxy/haproxy.cfg.in (every turn of a conversation to one replica: by a stick
table, or by consistent hashing with bounded load; least connections for requests without a
session; health checks on /health, a queue in front of a per-replica connection limit, retries on
another replica). A replica that exits is started again;
Ctrl-C or SIGTERM drains the replicas (they finish what they run) and stops everything.

--router sglang puts SGLang's router (PyPI sglang-router, run with --sglang-python) in front instead
of HAProxy, with its cache-aware policy (--routing roundrobin: its round_robin); see docs/scale-out.md.

--ready-file: written once HAProxy and every replica answer, as JSON: the port, the stats page, and
each replica's port and process id (tests read it).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port_range(n):
    """A base port b with b .. b+n-1 all free on loopback now (for --port 0)."""
    import random
    import socket
    for _ in range(200):
        base = random.randint(20000, 50000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit("cluster: no free range of ports")


BACKENDS = ("by_session", "by_session_table", "by_load")  # deploy/haproxy/haproxy.cfg.in


def haproxy_all_up(stats_port, n):
    """True when HAProxy's statistics show every replica UP in every backend (it routes to them)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as r:
            rows = [line.split(",") for line in r.read().decode().splitlines() if line and not line.startswith("#")]
    except Exception:  # noqa: BLE001 - not up (yet)
        return False
    up = [row for row in rows if len(row) > 17 and row[0] in BACKENDS and row[1].startswith("r")
          and row[17].startswith("UP")]
    return len(up) == len(BACKENDS) * n


def healthy(port, path="/health"):
    """True when the server on port answers path with 200 (a replica's /health, SGLang's /readiness)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


class Replica:
    def __init__(self, i, port, cores, args):
        self.i, self.port, self.cores, self.args = i, port, cores, args
        self.proc = None
        self.starts = 0
        self.started_at = 0.0
        self.log_path = ""

    def start(self, log_dir):
        cmd = ["taskset", "-c", ",".join(map(str, self.cores))]
        cmd += [os.path.join(ROOT, "build", "leanlm"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "-t", str(len(self.cores))] + self.args
        self.log_path = os.path.join(log_dir, f"replica{self.i}.log")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.started_at = time.time()


SGLANG_POLICY = {"session": "cache_aware", "sticky": "cache_aware", "roundrobin": "round_robin",
                 "leastconn": "power_of_two"}


def sglang_router_cmd(a, replicas):
    policy = SGLANG_POLICY[a.routing]
    return [a.sglang_python, "-m", "sglang_router.launch_router", "--host", a.host, "--port", str(a.port),
            "--worker-urls"] + [f"http://127.0.0.1:{r.port}" for r in replicas] + [
            "--policy", policy, "--health-check-endpoint", "/health", "--log-level", "warn"] + (
            ["--balance-abs-threshold", str(a.sglang_balance_abs)] if a.sglang_balance_abs is not None else [])


def render(template, a, replicas, stats_port):
    servers = "\n".join(f"    server r{r.i} 127.0.0.1:{r.port} check" for r in replicas)
    fields = {
        "@BIND@": f"{a.host}:{a.port}",
        "@STATS_BIND@": f"127.0.0.1:{stats_port}",
        "@STATS_SOCKET@": a.stats_socket,
        "@MAXCONN@": str(a.maxconn),
        "@BALANCE_FACTOR@": str(a.balance_factor),
        "@SESSION_ROUTING@": "" if a.routing in ("session", "sticky") else "FALSE",
        "@SESSION_BACKEND@": "by_session_table" if a.routing == "sticky" else "by_session",
        "@LOAD_BALANCE@": "roundrobin" if a.routing == "roundrobin" else "leastconn",
        "@SERVERS@": servers,
    }
    for k, v in fields.items():
        template = template.replace(k, v)
    return template


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--replicas", type=int, default=2)
    ap.add_argument("-m", "--model", default="")
    ap.add_argument("--host", default="127.0.0.1", help="address HAProxy listens on")
    ap.add_argument("--port", type=int, default=8080, help="HAProxy's port (0: any free range; see --ready-file)")
    ap.add_argument("--routing", choices=["sticky", "session", "leastconn", "roundrobin"], default="sticky",
                    help="sticky: a new conversation to the least busy replica, then kept there (a stick table); "
                         "session: consistent hashing with bounded load (stateless: for several HAProxy processes)")
    ap.add_argument("--kv-mem", type=int, default=0, help="KV MiB per replica (0: leanlm's default)")
    ap.add_argument("--balance-factor", type=int, default=150,
                    help="HAProxy's hash-balance-factor: a conversation moves off a replica carrying more than this "
                         "percentage of the average load (>= 100)")
    ap.add_argument("--maxconn", type=int, default=16, help="requests in flight per replica; more wait in HAProxy")
    ap.add_argument("--cores", default="", help="cores to use, e.g. 0-3 (default: all)")
    ap.add_argument("--shutdown-grace", type=int, default=110,
                    help="seconds a draining replica finishes its requests before cancelling them")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--router", choices=["haproxy", "sglang"], default="haproxy")
    ap.add_argument("--sglang-python", default=sys.executable,
                    help="a Python with sglang-router installed (for --router sglang)")
    ap.add_argument("--sglang-balance-abs", type=int, default=None,
                    help="SGLang's --balance-abs-threshold (requests of imbalance before it balances by load)")
    a = ap.parse_args(argv)
    if a.replicas < 1:
        ap.error("-n must be at least 1")
    if a.balance_factor < 100:
        ap.error("--balance-factor must be at least 100")
    for tool in ("haproxy", "taskset") if a.router == "haproxy" else ("taskset",):
        if not shutil.which(tool):
            sys.exit(f"cluster: {tool} is not installed (scripts/setup.sh installs it)")
    if a.cores:
        cores = []
        for part in a.cores.split(","):
            lo, _, hi = part.partition("-")
            cores += list(range(int(lo), int(hi or lo) + 1))
    else:
        cores = sorted(os.sched_getaffinity(0))
    if len(cores) < a.replicas:
        sys.exit(f"cluster: {a.replicas} replicas need at least {a.replicas} cores; {len(cores)} available")
    share = len(cores) // a.replicas
    if a.port == 0:
        a.port = free_port_range(a.replicas + 2)
    serve_args = (["-m", a.model] if a.model else []) + (["--kv-mem", str(a.kv_mem)] if a.kv_mem else [])
    # Both backends may send a replica up to maxconn requests each.
    serve_args += ["--max-connections", str(2 * a.maxconn + 4), "--shutdown-grace", str(a.shutdown_grace)] + extra
    replicas = [Replica(i, a.port + 1 + i, cores[i * share:(i + 1) * share], serve_args) for i in range(a.replicas)]

    work = tempfile.mkdtemp(prefix="leanlm-cluster-")
    stats_port = a.port + 1 + a.replicas
    a.stats_socket = os.path.join(work, "haproxy.sock")
    # The balancer: HAProxy with the rendered configuration, or SGLang's router (started, watched and
    # stopped alike).
    if a.router == "haproxy":
        with open(os.path.join(ROOT, "deploy", "haproxy", "haproxy.cfg.in")) as f:
            cfg = render(f.read(), a, replicas, stats_port)
        cfg_path = os.path.join(work, "haproxy.cfg")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        check = subprocess.run(["haproxy", "-c", "-q", "-f", cfg_path], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit("cluster: HAProxy refused the configuration:\n" + check.stdout + check.stderr)
        balancer_cmd = ["haproxy", "-db", "-f", cfg_path]
    else:
        balancer_cmd = sglang_router_cmd(a, replicas)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    balancer = None
    ready = False
    quick_exits = [0] * len(replicas)
    try:
        for r in replicas:
            r.start(work)
        with open(os.path.join(work, f"{a.router}.log"), "a") as balancer_log:
            balancer = subprocess.Popen(balancer_cmd, stdout=balancer_log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        where = (f"HAProxy on {a.host}:{a.port} ({a.routing} routing), stats on 127.0.0.1:{stats_port}/stats, "
                 f"runtime API on {a.stats_socket}" if a.router == "haproxy" else
                 f"SGLang's router on {a.host}:{a.port} ({SGLANG_POLICY[a.routing]} policy)")
        print(f"cluster: {a.replicas} replicas ({share} cores each) on ports {replicas[0].port}-{replicas[-1].port}, "
              f"{where}; logs in {work}", file=sys.stderr)
        while not stopping:
            if balancer.poll() is not None:
                sys.exit(f"cluster: {a.router} exited ({balancer.returncode}); see {work}/{a.router}.log")
            for i, r in enumerate(replicas):
                if r.proc.poll() is None:
                    continue
                # A replica died: start it again, unless it keeps failing right after starting.
                quick_exits[i] = quick_exits[i] + 1 if time.time() - r.started_at < 10 else 1
                if quick_exits[i] > 5:
                    with open(r.log_path) as f:
                        tail = f.read()[-2000:]
                    sys.exit(f"cluster: replica {r.i} keeps exiting ({r.proc.returncode}):\n{tail}")
                print(f"cluster: replica {r.i} exited ({r.proc.returncode}); starting it again", file=sys.stderr)
                time.sleep(0.5)
                r.start(work)
                ready = False  # the ready file is rewritten (new process id) once HAProxy routes to it
            balancer_up = (haproxy_all_up(stats_port, len(replicas)) if a.router == "haproxy"
                           else healthy(a.port, "/readiness"))
            if not ready and all(healthy(r.port) for r in replicas) and balancer_up:
                ready = True
                if a.ready_file:
                    tmp = a.ready_file + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump({"port": a.port, "stats": f"http://127.0.0.1:{stats_port}/stats",
                                   "socket": a.stats_socket,
                                   "replicas": [{"port": r.port, "pid": r.proc.pid, "starts": r.starts}
                                                for r in replicas]}, f)
                    os.replace(tmp, a.ready_file)
            time.sleep(0.2)
    finally:
        # Replicas drain (finish what they run for up to --shutdown-grace s, answer 503 to new work)
        # while HAProxy still routes their streams; then HAProxy goes.
        for r in replicas:
            if r.proc and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + a.shutdown_grace + 10
        for r in replicas:
            if not r.proc:
                continue
            try:
                r.proc.wait(max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
        if balancer:
            balancer.terminate()
            try:
                balancer.wait(10)
            except subprocess.TimeoutExpired:
                balancer.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
