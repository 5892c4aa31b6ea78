"""Addon serving against nginx serving the same bytes, in one run: `make bench-addons`.

Starts a stack (Redis and the controller: granian, `SEMANTEST_CONTROLLER_WORKERS` processes,
rate limits off as every benchmark here) and an nginx on loopback serving the bytes the
controller answers for `GET /api/v1/addons/sandbox`, then runs the same wrk (`-t1 -c50
-d<seconds>s`) against both, for a 200 and for a 304 (`If-None-Match`), and prints requests per
second and the ratio. The target is ≥ 25% of nginx. nginx: `apt-get install nginx-light` (or
`nginx`); wrk: `make setup`. Bounded: 4 runs of `--seconds` (8) plus start-up, loopback only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from semantest.config import Settings
from semantest.stack import Stack, free_port

PATH = "/api/v1/addons/sandbox"
NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type text/javascript;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {tmp}/www;
    etag on;
    location / {{ add_header Cache-Control no-cache; }}
  }}
}}
"""


def wrk(url: str, seconds: int, headers: dict[str, str]) -> tuple[float, int]:
    """Requests per second and non-2xx/3xx answers of one `wrk -t1 -c50` run."""
    argv = ["wrk", "-t1", "-c50", f"-d{seconds}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(rate.group(1)), int(bad.group(1)) if bad else 0


def start_nginx(tmp: Path, body: bytes, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving `body` at the same path, on a free loopback port."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx is not installed: apt-get install nginx-light (or nginx)")
    tmp.chmod(0o755)  # nginx's workers run as another user when started by root
    www = tmp / "www" / PATH.lstrip("/")
    www.parent.mkdir(parents=True)
    www.write_bytes(body)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, workers=workers))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}{PATH}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(url).content == body:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
            sys.exit(f"nginx did not serve {url}:\n{log}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="each wrk run (8)")
    parser.add_argument(
        "--rate-limits",
        action="store_true",
        help="keep rate limits on (every GET takes from Redis; the anonymous addon bucket is "
        "raised so that wrk is never refused)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: make setup (apt-get install wrk)")
    settings = Settings()
    workers = settings.controller_workers
    load = os.getloadavg()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"at start, {datetime.datetime.now().isoformat(timespec='seconds')}; controller: granian, "
        f"{workers} worker process(es), rate limits {'on' if args.rate_limits else 'off'}; "
        f"nginx: {workers} worker process(es)"
    )
    with tempfile.TemporaryDirectory(prefix="semantest-addons-") as tmp_dir:
        tmp = Path(tmp_dir)
        settings = settings.model_copy(
            update={
                "redis_url": None,
                "data_dir": tmp / "data",
                "port": free_port(),
                "sandbox_port": free_port(),
                "rate_limits": args.rate_limits,
                "log_level": "WARNING",
            }
        )
        if args.rate_limits:  # wrk's one address must never be refused: raise its bucket
            settings = settings.model_copy(
                update={
                    "rate_limit_plans": Settings.model_validate(
                        {
                            "rate_limit_plans": {
                                "standard": {"endpoints": {"addons": {"count": 10**7}}}
                            }
                        }
                    ).rate_limit_plans
                }
            )
        with Stack(settings, agents=0, persist_redis=False) as stack:
            ours = stack.url + PATH
            first = httpx.get(ours)
            first.raise_for_status()
            nginx, theirs = start_nginx(tmp, first.content, workers)
            try:
                nginx_etag = httpx.get(theirs).headers["etag"]
                rows = []
                for label, url, headers in (
                    ("nginx 200", theirs, {}),
                    ("semantest 200", ours, {}),
                    ("nginx 304", theirs, {"If-None-Match": nginx_etag}),
                    ("semantest 304", ours, {"If-None-Match": first.headers["etag"]}),
                ):
                    rate, bad = wrk(url, args.seconds, headers)
                    rows.append((label, rate, bad))
                    print(f"  {label:<14} {rate:>10,.0f} req/s  ({bad} non-2xx/3xx)", flush=True)
            finally:
                nginx.terminate()
                nginx.wait(10)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    by = {label: rate for label, rate, _ in rows}
    print(f"\nbody: {len(first.content):,} bytes; wrk -t1 -c50 -d{args.seconds}s, same run")
    for kind in ("200", "304"):
        ratio = by[f"semantest {kind}"] / by[f"nginx {kind}"]
        print(
            f"{kind}: semantest {by[f'semantest {kind}']:,.0f} req/s vs nginx "
            f"{by[f'nginx {kind}']:,.0f} req/s = {ratio:.1%} (target >= 25%)"
        )
    return 0 if all(bad == 0 for _, _, bad in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
