#!/usr/bin/python3
"""Flask-Limiter in front of a slow echo, for bench/conformance.sh.

  /usr/bin/python3 flask_app.py --limit "20 per 1 second" \
      [--strategy fixed-window|moving-window] [--port P] [--latency MS]

POST /v1/echo is limited by Flask-Limiter (Debian's python3-flask-limiter 3.3,
limits 2.8) with memory storage and headers enabled: X-RateLimit-Limit,
-Remaining, -Reset (epoch seconds) and Retry-After (delta seconds). An
accepted request is answered after --latency ms (default 50). The server's
own truth, unlimited:
  GET /stats  {"accepted", "rejected", "requests", "first_accept_ms",
               "last_accept_ms"}  (epoch ms, fractional)
  GET /log    one line per /v1 request, "DECIDED_MS STATUS ARRIVAL_MS"
              (epoch ms), in the order decided: DECIDED is the limiter's own
              clock reading for the request (the time.time() its storage
              used), ARRIVAL when the WSGI server handed the request to the
              app. Under load a thread can wait for the GIL for tens of ms
              between the two, so requests are decided out of arrival order;
              DECIDED is the time the limiter's algorithm saw.
Served by werkzeug's threaded server (one thread per connection, HTTP/1.1
keep-alive). Prints
"listening on 127.0.0.1:PORT" once bound (--port 0 picks a port).
"""

import argparse
import json
import sys
import threading
import time

import limits.storage.memory
from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


class _RecordingClock:
    """Stands in for the `time` module inside limits' memory storage and
    remembers, per thread, the last time.time() it handed out: after the
    limiter's hit() that is the instant the algorithm decided by (for a fixed
    window the window start or the expiry check, for a moving window the new
    entry's time). The limiter behaves exactly as before."""

    def __init__(self) -> None:
        self.local = threading.local()

    def time(self) -> float:
        t = time.time()
        self.local.t = t
        return t

    def __getattr__(self, name):
        return getattr(time, name)


CLOCK = _RecordingClock()
limits.storage.memory.time = CLOCK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", required=True, help='e.g. "20 per 1 second"')
    parser.add_argument("--strategy", default="fixed-window",
                        choices=["fixed-window", "moving-window"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=50.0, help="ms")
    args = parser.parse_args()

    lock = threading.Lock()
    stats = {"accepted": 0, "rejected": 0, "requests": 0,
             "first_accept_ms": None, "last_accept_ms": None}
    log = []

    app = Flask(__name__)
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://",
                      strategy=args.strategy, headers_enabled=True)

    strategy = limiter.limiter  # the limits RateLimiter doing the counting
    hit = strategy.hit

    def recorded_hit(*a, **k):
        CLOCK.local.t = None
        ok = hit(*a, **k)
        request.environ["conformance.decided_ms"] = (CLOCK.local.t or time.time()) * 1000.0
        return ok

    strategy.hit = recorded_hit

    inner = app.wsgi_app

    def stamped(environ, start_response):
        # Before Flask and the limiter see the request.
        environ["conformance.arrival_ms"] = time.time() * 1000.0
        return inner(environ, start_response)

    app.wsgi_app = stamped

    @app.post("/v1/echo")
    @limiter.limit(args.limit)
    def echo():
        arrival = request.environ["conformance.arrival_ms"]
        decided = request.environ.get("conformance.decided_ms", arrival)
        with lock:
            stats["requests"] += 1
            stats["accepted"] += 1
            n = stats["accepted"]
            if stats["first_accept_ms"] is None or decided < stats["first_accept_ms"]:
                stats["first_accept_ms"] = decided
            if stats["last_accept_ms"] is None or decided > stats["last_accept_ms"]:
                stats["last_accept_ms"] = decided
            log.append(f"{decided:.3f} 200 {arrival:.3f}")
        body = request.get_json(silent=True)
        time.sleep(args.latency / 1000.0)
        return {"echo": body, "n": n}

    @app.errorhandler(429)
    def rejected(error):
        arrival = request.environ.get("conformance.arrival_ms", time.time() * 1000.0)
        decided = request.environ.get("conformance.decided_ms", arrival)
        with lock:
            stats["requests"] += 1
            stats["rejected"] += 1
            log.append(f"{decided:.3f} 429 {arrival:.3f}")
        return Response(json.dumps({"error": "rate_limited", "description": str(error.description)}),
                        status=429, mimetype="application/json")

    @app.get("/stats")
    @limiter.exempt
    def get_stats():
        with lock:
            return dict(stats)

    @app.get("/log")
    @limiter.exempt
    def get_log():
        with lock:
            text = "".join(line + "\n" for line in log)
        return Response(text, mimetype="text/plain")

    import logging
    from werkzeug.serving import make_server
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    # ThreadedWSGIServer: a thread per connection, HTTP/1.1 keep-alive; 40
    # concurrent keep-alive clients are served in parallel (checked: 40 at
    # once answer within ~60 ms at 50 ms latency), so it does not serialize.
    server = make_server(args.host, args.port, app, threaded=True)
    port = server.server_port

    print(f"listening on {args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
