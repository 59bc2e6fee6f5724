#!/usr/bin/env python3
"""Several `leanlm serve` replicas on one machine behind one HAProxy.

  scripts/cluster.py [-n 2] [-m MODEL] [--port 8080] [--routing session|leastconn|roundrobin]
                     [--kv-mem MiB] [--maxconn 16] [--ready-file F] [-- extra `leanlm serve` flags]

Each replica gets its share of the cores (pinned with taskset, as many threads as cores), a port of
its own (--port + 1 + i) and --kv-mem MiB of KV. HAProxy listens on --port with the configuration
rendered from deploy/haproxy/haproxy.cfg.in (session-affine consistent hashing with bounded load,
least connections for requests without a session, health checks on /health, a queue in front of a
per-replica connection limit, retries on another replica). A replica that exits is started again;
Ctrl-C or SIGTERM drains the replicas (they finish what they run) and stops everything.

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


def healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


class Replica:
    def __init__(self, i, port, cores, args):
        self.i, self.port, self.cores, self.args = i, port, cores, args
        self.proc = None
        self.starts = 0

    def start(self, log_dir):
        cmd = ["taskset", "-c", ",".join(map(str, self.cores))] if shutil.which("taskset") else []
        cmd += [os.path.join(ROOT, "build", "leanlm"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "-t", str(len(self.cores))] + self.args
        log = open(os.path.join(log_dir, f"replica{self.i}.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1


def render(template, a, replicas, stats_port):
    session = "\n".join(f"    server r{r.i} 127.0.0.1:{r.port} check" for r in replicas)
    load = "\n".join(f"    server r{r.i} 127.0.0.1:{r.port} check" for r in replicas)
    fields = {
        "@BIND@": f"{a.host}:{a.port}",
        "@STATS_BIND@": f"127.0.0.1:{stats_port}",
        "@MAXCONN@": str(a.maxconn),
        "@SESSION_ROUTING@": "" if a.routing == "session" else "FALSE",
        "@LOAD_BALANCE@": "roundrobin" if a.routing == "roundrobin" else "leastconn",
        "@SESSION_SERVERS@": session,
        "@LOAD_SERVERS@": load,
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
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--routing", choices=["session", "leastconn", "roundrobin"], default="session")
    ap.add_argument("--kv-mem", type=int, default=0, help="KV MiB per replica (0: leanlm's default)")
    ap.add_argument("--maxconn", type=int, default=16, help="requests in flight per replica; more wait in HAProxy")
    ap.add_argument("--cores", default="", help="cores to use, e.g. 0-3 (default: all)")
    ap.add_argument("--ready-file", default="")
    a = ap.parse_args(argv)
    if a.replicas < 1:
        ap.error("-n must be at least 1")
    if not shutil.which("haproxy"):
        sys.exit("cluster: haproxy is not installed (scripts/setup.sh installs it)")
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
    serve_args = (["-m", a.model] if a.model else []) + (["--kv-mem", str(a.kv_mem)] if a.kv_mem else [])
    serve_args += ["--max-connections", str(a.maxconn + 4)] + extra
    replicas = [Replica(i, a.port + 1 + i, cores[i * share:(i + 1) * share], serve_args) for i in range(a.replicas)]

    work = tempfile.mkdtemp(prefix="leanlm-cluster-")
    stats_port = a.port + 1 + a.replicas
    with open(os.path.join(ROOT, "deploy", "haproxy", "haproxy.cfg.in")) as f:
        cfg = render(f.read(), a, replicas, stats_port)
    cfg_path = os.path.join(work, "haproxy.cfg")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", cfg_path], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit("cluster: HAProxy refused the configuration:\n" + check.stdout + check.stderr)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for r in replicas:
        r.start(work)
    haproxy_log = open(os.path.join(work, "haproxy.log"), "a")
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg_path], stdout=haproxy_log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    print(f"cluster: {a.replicas} replicas ({share} cores each) on ports {replicas[0].port}-{replicas[-1].port}, "
          f"HAProxy on {a.host}:{a.port} ({a.routing} routing), stats on 127.0.0.1:{stats_port}/stats; logs in {work}",
          file=sys.stderr)
    ready = False
    try:
        while not stopping:
            if haproxy.poll() is not None:
                sys.exit(f"cluster: HAProxy exited ({haproxy.returncode}); see {work}/haproxy.log")
            for r in replicas:
                if r.proc.poll() is not None:  # a replica died: start it again
                    print(f"cluster: replica {r.i} exited ({r.proc.returncode}); starting it again", file=sys.stderr)
                    time.sleep(0.5)
                    r.start(work)
                    if a.ready_file:
                        ready = False  # rewritten with the new process id once it answers
            if not ready and all(healthy(r.port) for r in replicas):
                ready = True
                if a.ready_file:
                    tmp = a.ready_file + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump({"port": a.port, "stats": f"http://127.0.0.1:{stats_port}/stats",
                                   "replicas": [{"port": r.port, "pid": r.proc.pid, "starts": r.starts}
                                                for r in replicas]}, f)
                    os.replace(tmp, a.ready_file)
            time.sleep(0.2)
    finally:
        # Replicas drain (finish what they run, answer 503 to new work) while HAProxy still routes
        # their streams; then HAProxy goes.
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            try:
                r.proc.wait(120)
            except subprocess.TimeoutExpired:
                r.proc.kill()
        haproxy.terminate()
        try:
            haproxy.wait(10)
        except subprocess.TimeoutExpired:
            haproxy.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
