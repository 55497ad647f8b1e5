"""The installed production nginx site over TLS, with the real responder.

`make install DESTDIR=...` (with the already-built binaries of the session:
no release build) lays out nginx/wallet.conf, wallet-locations.conf and
wallet-tls.conf as on a real host. The test then points the installed copies
at this machine's test world, changing only what must change and checking
that each change applies exactly where expected:
  - wallet.conf: `listen 443 ssl http2` and `listen 80` become loopback ports,
    the snippet paths the DESTDIR's, the responder socket a development
    stack's (scripts/stack.sh runs the real wallet-fcgi), the logs a temp dir;
  - wallet-tls.conf, the one file that names the certificate: the snakeoil
    pair becomes a server certificate signed by a CA the test makes with
    `openssl` (so clients can verify it; the snakeoil pair cannot be).
It wraps wallet.conf in an nginx.conf with Debian's http-level TLS defaults
(TLSv1 and TLSv1.1 on, ssl_prefer_server_ciphers on) that the site must
override, checks it with `nginx -t`, starts nginx once, and runs every check
against that one nginx.

Plain HTTP answers API paths with the JSON 403 https_required, browsers'
paths with a 301 to https://, and /healthz and /metrics from loopback only.
"Elsewhere" is a client bound to 127.0.0.2: still this machine, but not the
127.0.0.1 the site trusts.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from .conftest import REPO, free_port, stop_process, wait_until
from .test_install import make

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
SNAKEOIL_CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
SNAKEOIL_KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"
HSTS = "max-age=63072000"
# A source address on this machine that is not the site's loopback 127.0.0.1.
ELSEWHERE = "127.0.0.2"

pytestmark = pytest.mark.skipif(not (os.access(NGINX, os.X_OK) and OPENSSL and CURL),
                                reason="nginx, openssl or curl is not installed (make deps)")


def run(args, timeout=30, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def replace(text, old, new, count=1):
    """text with `old` replaced by `new`, which must occur exactly `count`
    times (the installed file changed shape otherwise: update this test)."""
    assert text.count(old) == count, f"expected {count} × {old!r}, found {text.count(old)}"
    return text.replace(old, new)


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1 and localhost signed by
    it (EC P-256: quick to make). Returns (ca.pem, server.pem, server.key)."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=wallet test CA"],
        ["req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
    ):
        result = run([OPENSSL, *args])
        assert result.returncode == 0, result.stderr
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                          "basicConstraints = critical, CA:FALSE\n"
                          "keyUsage = critical, digitalSignature\n"
                          "extendedKeyUsage = serverAuth\n")
    result = run([OPENSSL, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "2", "-extfile", extensions])
    assert result.returncode == 0, result.stderr
    return ca, cert, key


class Site:
    """The installed site, running: http_port (plain), https_port, ca (the
    CA file clients verify with), stack (the responder's stack)."""

    def __init__(self, stack, directory):
        self.stack = stack
        self.dir = directory
        self.http_port = free_port()
        self.https_port = free_port()
        while self.https_port == self.http_port:
            self.https_port = free_port()
        self.proc = None

    # -- clients ----------------------------------------------------------------------

    def context(self, alpn=None):
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def request(self, method, path, scheme="https", body=None, headers=None, source=None):
        """One request on a new connection; returns (status, {lower-case
        header: value}, body bytes). source: the client's address."""
        source_address = (source, 0) if source else None
        if scheme == "https":
            conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=10, context=self.context(),
                                               source_address=source_address)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10,
                                              source_address=source_address)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = dict(headers or {})
            if scheme == "https":
                # The stack's API key over HTTPS (where a key belongs); plain HTTP
                # requests carry one only when a test says so.
                hdrs.setdefault("Authorization", f"Bearer {self.stack.api_key}")
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            elif method == "POST":
                hdrs.setdefault("Content-Length", "0")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def s_client(self, *args):
        """openssl s_client against the HTTPS port, verifying with the CA;
        returns the CompletedProcess (exit 0 only for a verified handshake)."""
        return run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{self.https_port}", "-servername", "localhost",
                    "-CAfile", str(self.ca), "-verify_return_error", *args], timeout=15)

    # -- setup ------------------------------------------------------------------------

    def install(self):
        """make install into DESTDIR, then the test world's paths and ports
        in the installed copies."""
        destdir = self.dir / "root"
        make("install", destdir, RELEASE_BIN_DIR=self.stack.bin_dir)
        self.destdir = destdir
        snippets = destdir / "etc/nginx/snippets"
        self.ca, cert, key = make_certificates(self.dir)

        # The one TLS snippet: the certificate pair, named nowhere else.
        tls = snippets / "wallet-tls.conf"
        text = tls.read_text()
        assert re.findall(r"(?m)^\s*ssl_certificate\s+(\S+);", text) == [SNAKEOIL_CERT]
        assert re.findall(r"(?m)^\s*ssl_certificate_key\s+(\S+);", text) == [SNAKEOIL_KEY]
        text = replace(text, f" {SNAKEOIL_CERT};", f" {cert};")
        text = replace(text, f" {SNAKEOIL_KEY};", f" {key};")
        tls.write_text(text)

        site = destdir / "etc/nginx/sites-available/wallet.conf"
        text = site.read_text()
        for other in (text, (snippets / "wallet-locations.conf").read_text()):
            assert not re.search(r"(?m)^\s*ssl_", other), "ssl_ directives belong in wallet-tls.conf alone"
        text = replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;")
        text = replace(text, "listen 80;", f"listen 127.0.0.1:{self.http_port};")
        text = replace(text, "include /etc/nginx/snippets/", f"include {snippets}/", count=3)
        text = replace(text, "unix:/run/wallet/fcgi.sock;", f"unix:{self.stack.run_dir}/fcgi.sock;")
        text = replace(text, "_log /var/log/nginx/", f"_log {self.dir}/", count=4)
        # certbot's webroot: somewhere that surely has no challenge file.
        text = replace(text, "root /var/www/letsencrypt;", f"root {self.dir}/webroot;")
        site.write_text(text)

        self.conf = self.dir / "nginx.conf"
        (self.dir / "tmp").mkdir()
        self.conf.write_text(f"""
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    # Debian's /etc/nginx/nginx.conf at http level, which the site overrides.
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    client_body_temp_path {self.dir}/tmp/client_body;
    fastcgi_temp_path {self.dir}/tmp/fastcgi;
    proxy_temp_path {self.dir}/tmp/proxy;
    uwsgi_temp_path {self.dir}/tmp/uwsgi;
    scgi_temp_path {self.dir}/tmp/scgi;
    include {site};
}}
""")

    def nginx(self, *args):
        return [NGINX, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", f"{self.dir}/nginx-error.log", *args]

    def start(self):
        self.proc = subprocess.Popen(self.nginx(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "nginx.stderr", "wb"), start_new_session=True)

        def up():
            assert self.proc.poll() is None, f"nginx exited:\n{(self.dir / 'nginx-error.log').read_text()}"
            try:
                return self.request("GET", "/healthz", scheme="http")[0] == 200
            except OSError:
                return False

        wait_until(up, 10, "the installed site to answer /healthz")

    def stop(self):
        if self.proc:
            stop_process(self.proc, signal.SIGQUIT)


@pytest.fixture
def site(stack):
    """The installed site on loopback ports, TLS with the test's CA, in front
    of a development stack's responder; nginx is stopped before the stack."""
    directory = stack.base_dir / "tls"
    directory.mkdir()
    os.chmod(directory, 0o755)
    s = Site(stack, directory)
    s.install()
    yield s
    s.stop()


def error_code(body):
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) >= {"code", "message"}, doc
    return doc["error"]["code"]


def test_installed_site_over_tls(site):
    stack = site.stack

    # --- the configuration -------------------------------------------------------------
    result = run(site.nginx("-t"))
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    # Its only warning: OCSP stapling skipped (the test certificate names
    # no OCSP responder; wallet-tls.conf explains the choice).
    warnings = [line for line in result.stderr.splitlines() if "[warn]" in line]
    assert all('"ssl_stapling" ignored' in line for line in warnings), result.stderr

    site.start()

    # --- HTTPS ----------------------------------------------------------------------------
    # Verified against the test CA, HSTS on every answer, the site's own headers kept.
    status, headers, body = site.request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}, body
    assert headers.get("strict-transport-security") == HSTS
    assert re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), headers
    assert headers.get("cache-control") == "no-store" and headers.get("x-content-type-options") == "nosniff"

    status, headers, body = site.request("POST", "/wallets/")
    assert status == 201, body
    wallet = json.loads(body)["uuid"]
    status, headers, body = site.request("POST", f"/wallets/{wallet}/deposit", body={"amount": 500})
    assert status == 200 and json.loads(body)["wallet"]["balance"] == 500, body
    assert headers.get("strict-transport-security") == HSTS

    # Error answers, nginx's and the responder's, carry HSTS too (`always`).
    status, headers, body = site.request("GET", "/no/such/path")
    assert status == 404 and error_code(body) == "not_found"
    assert headers.get("content-type") == "application/json" and headers.get("strict-transport-security") == HSTS
    status, headers, body = site.request("PUT", "/wallets/")
    assert status == 405 and error_code(body) == "method_not_allowed" and headers.get("allow") == "POST"
    assert headers.get("strict-transport-security") == HSTS
    status, headers, body = site.request("GET", "/wallets/not-a-uuid/")
    assert status == 404 and headers.get("strict-transport-security") == HSTS, body

    # /metrics: loopback only, over HTTPS as before.
    status, headers, body = site.request("GET", "/metrics")
    assert status == 200 and b"# TYPE" in body
    status, headers, body = site.request("GET", "/metrics", source=ELSEWHERE)
    assert status == 403 and error_code(body) == "forbidden"
    assert headers.get("strict-transport-security") == HSTS

    # HTTP/2: offered and chosen by ALPN, and a whole request over it (curl
    # verifies against the CA as well).
    with socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw:
        with site.context(alpn=["h2", "http/1.1"]).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
    with socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw:
        with site.context(alpn=["http/1.1"]).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
    result = run([CURL, "-sS", "--http2", "--cacert", str(site.ca), "-D", "-", "-o", "/dev/null",
                  "-H", f"Authorization: Bearer {stack.api_key}",
                  "-w", "version=%{http_version}", f"https://127.0.0.1:{site.https_port}/wallets/{wallet}/"],
                 env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/2 200") and result.stdout.endswith("version=2"), result.stdout
    assert re.search(rf"(?im)^strict-transport-security: {HSTS}\r?$", result.stdout), result.stdout

    # Protocol versions: 1.2 and 1.3 yes; 1.1 refused even to a client that
    # would take anything (SECLEVEL=0 lifts OpenSSL's own client-side floor).
    for version in ("-tls1_2", "-tls1_3"):
        result = site.s_client(version)
        assert result.returncode == 0, f"{version}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        assert "Verify return code: 0 (ok)" in result.stdout
    result = site.s_client("-tls1_2")
    assert re.search(r"Cipher is ECDHE-ECDSA-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)", result.stdout)
    result = site.s_client("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0 and "Cipher is (NONE)" in result.stdout, result.stdout
    assert "alert protocol version" in result.stderr, result.stderr
    # TLS 1.2 with a suite outside the list (CBC): refused as well.
    result = site.s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
    assert result.returncode != 0 and "Cipher is (NONE)" in result.stdout, result.stdout

    # --- plain HTTP -------------------------------------------------------------------------
    # API routes: the JSON 403, and nothing done.
    wallets = stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0]
    for method, path, body in (("POST", "/wallets/", None), ("POST", "/wallets", None),
                               ("GET", f"/wallets/{wallet}/", None),
                               ("POST", f"/wallets/{wallet}/deposit", {"amount": 7}),
                               ("GET", f"/wallets/{wallet}/transactions/", None),
                               ("DELETE", "/webhook-endpoints/1", None), ("GET", "/events", None),
                               ("PUT", "/wallets/", None), ("POST", "/anything/else", None)):
        status, headers, answer = site.request(method, path, scheme="http", body=body,
                                               headers={"Idempotency-Key": "plain-http"})
        assert status == 403 and error_code(answer) == "https_required", (method, path, status, answer)
        assert headers.get("content-type") == "application/json", headers
        assert re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), headers
        assert "strict-transport-security" not in headers, "HSTS means nothing over plain HTTP"
        assert "location" not in headers
    assert stack.sqlite("SELECT COUNT(*) FROM wallets")[0][0] == wallets, "a plain-HTTP POST created a wallet"
    status, _, body = site.request("GET", f"/wallets/{wallet}/")
    assert json.loads(body)["balance"] == 500, "a plain-HTTP deposit went through"

    # Local probes and the local scraper: served as before.
    for path in ("/healthz", "/healthz/", "/metrics"):
        status, headers, body = site.request("GET", path, scheme="http")
        assert status == 200, (path, status, body)
    status, headers, _ = site.request("HEAD", "/healthz", scheme="http")
    assert status == 200
    # ...including their JSON error pages (an internal redirect on this
    # server): a method outside the API.
    status, headers, body = site.request("PATCH", "/healthz", scheme="http")
    assert status == 405 and error_code(body) == "method_not_allowed" and headers.get("allow") == "GET, HEAD"
    # The same paths from elsewhere: the API's rule.
    for path in ("/healthz", "/metrics"):
        status, _, body = site.request("GET", path, scheme="http", source=ELSEWHERE)
        assert status == 403 and error_code(body) == "https_required", (path, body)

    # A browser: sent to the same URL on https://.
    for path in ("/", "/index.html", "/some/page?x=1&y=2"):
        for method in ("GET", "HEAD"):
            status, headers, _ = site.request(method, path, scheme="http", source=ELSEWHERE)
            assert status == 301 and headers.get("location") == f"https://127.0.0.1{path}", (method, path, headers)
    status, headers, _ = site.request("GET", "/", scheme="http", headers={"Host": "wallet.example"})
    assert status == 301 and headers.get("location") == "https://wallet.example/"
    # ...but not with credentials: they already went out in clear.
    status, headers, body = site.request("GET", "/", scheme="http", headers={"Authorization": "Bearer k"})
    assert status == 403 and error_code(body) == "https_required" and "location" not in headers

    # certbot's webroot challenges are served over plain HTTP (none here: 404).
    status, _, body = site.request("GET", "/.well-known/acme-challenge/token", scheme="http", source=ELSEWHERE)
    assert status == 404 and error_code(body) == "not_found"

    # A request nginx cannot parse still gets the JSON 400 on port 80.
    with socket.create_connection(("127.0.0.1", site.http_port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ") and b'"code": "bad_request"' in reply, reply

    # Nothing above was logged as an nginx error beyond the expected.
    log = (site.dir / "nginx-error.log").read_text()
    unexpected = [line for line in log.splitlines()
                  if not re.search(r'"ssl_stapling" ignored|SSL_do_handshake\(\) failed|client sent invalid header|'
                                   r'signal process started|using the "epoll"|start worker|'
                                   r'gracefully shutting down|exiting|exit$|signal \d+ \(SIGQUIT\)', line)]
    assert unexpected == [], "\n".join(unexpected)
