"""Shared helpers for the integration tests: error codes, assertions, a small
HTTP client for threads and raw sockets, and parsers for timestamps, logs and
Prometheus text.

Standard library only. The `stack` fixture (conftest.py) is the way the tests
reach the service; the client here is for what that fixture cannot do:
keep-alive connections per thread and byte-exact raw requests.
"""

import datetime as dt
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.parse
import uuid as uuidlib

import pytest

# The engine the stacks run on: SQLite files (the default), or, with
# WALLET_TEST_DB=postgres, a fresh database per stack on the PostgreSQL server
# whose conninfo is in WALLET_TEST_POSTGRES (`make test-postgres`).
POSTGRES_SERVER = os.environ.get("WALLET_TEST_POSTGRES") if os.environ.get("WALLET_TEST_DB") == "postgres" else None


def sqlite_only(reason):
    """Marks a test of what only an SQLite file has (its bytes, its pragmas, a
    file backup), skipped when the stacks run on PostgreSQL."""
    return pytest.mark.skipif(POSTGRES_SERVER is not None, reason=f"SQLite only: {reason}")

# --- The contract's error codes -------------------------------------------
# The contract fixes the first five; the others are the project's choice (align
# them here if the implementation names them differently).
INVALID_AMOUNT = "invalid_amount"
BALANCE_OVERFLOW = "balance_overflow"
INVALID_SCHEDULED_FOR = "invalid_scheduled_for"
NOT_CANCELABLE = "not_cancelable"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"

INVALID_JSON = "invalid_json"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
PAYLOAD_TOO_LARGE = "payload_too_large"
METHOD_NOT_ALLOWED = "method_not_allowed"
NOT_FOUND = "not_found"
INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
INVALID_QUERY = "invalid_query"

# --- The contract's limits ---------------------------------------------------
AMOUNT_MAX = 10 ** 15
BALANCE_MAX = 2 ** 63 - 1
BODY_BYTES_MAX = 16 * 1024
IDEMPOTENCY_KEY_LENGTH_MAX = 255
LIMIT_MAX = 500
LIMIT_DEFAULT = 50

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
UTC_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SNAKE_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

TRANSACTION_KEYS = {
    "id", "wallet", "type", "amount", "status", "scheduled_for", "executed_at",
    "created_at", "attempts", "failure_reason", "idempotency_key", "reference",
}
WALLET_KEYS = {"uuid", "balance", "created_at", "updated_at"}

# What must never reach a client: stack traces, SQL, file paths.
LEAK_PATTERNS = [
    re.compile(p, re.IGNORECASE) for p in (
        r"traceback", r"stack trace", r"fatal error", r"\bsqlite", r"\bselect\s+.+\s+from\b",
        r"\binsert\s+into\b", r"\bupdate\s+\w+\s+set\b", r"\bdelete\s+from\b",
        r"\bbegin\s+immediate\b", r"constraint failed", r"\.swift\b", r"/Sources/", r"/usr/",
        r"/home/", r"/tmp/", r"/var/", r"\.build/", r"wallet\.db", r"\bsegmentation\b",
    )
]


# --- Time ----------------------------------------------------------------------

def utc_now():
    return dt.datetime.now(dt.timezone.utc)


def parse_rfc3339(text):
    """Parses an RFC 3339 timestamp with an explicit offset; returns an aware datetime."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text)
    assert m, f"not an RFC 3339 timestamp with an offset: {text!r}"
    base = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = m.group(2) or ""
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    offset = m.group(3)
    if offset == "Z":
        tz = dt.timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    return base.replace(microsecond=micro, tzinfo=tz)


def assert_utc_z(text, near=None, tolerance_seconds=120):
    """Asserts `text` is an RFC 3339 UTC timestamp ending in Z; optionally near a time."""
    assert isinstance(text, str), f"timestamp is not a string: {text!r}"
    assert UTC_Z_RE.match(text), f"timestamp is not RFC 3339 UTC with Z: {text!r}"
    value = parse_rfc3339(text)
    if near is not None:
        delta = abs((value - near).total_seconds())
        assert delta <= tolerance_seconds, f"timestamp {text} is {delta:.1f} s away from {near.isoformat()}"
    return value


def iso_z(moment):
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def future(seconds=3600):
    return iso_z(utc_now() + dt.timedelta(seconds=seconds))


# --- Shapes --------------------------------------------------------------------------

def assert_no_leak(body_bytes):
    text = body_bytes.decode("utf-8", "replace")
    for pattern in LEAK_PATTERNS:
        assert not pattern.search(text), f"response body leaks internals ({pattern.pattern}): {text[:500]!r}"


def assert_request_id(resp):
    rid = resp.headers.get("x-request-id")
    assert rid, f"no X-Request-Id on a {resp.status} response; headers: {resp.headers}"
    return rid


def assert_error(resp, status, code=None, field=None, codes=None):
    """Asserts status, the JSON error shape, and optionally the code and field."""
    body_text = resp.body[:400]
    assert resp.status == status, f"expected {status}, got {resp.status}: {body_text!r}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", \
        f"error {status} has Content-Type {ctype!r}: {body_text!r}"
    try:
        doc = json.loads(resp.body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {body_text!r}")
    assert isinstance(doc, dict) and set(doc) == {"error"}, f"error body is not {{'error': ...}}: {doc!r}"
    err = doc["error"]
    assert isinstance(err, dict), f"error member is not an object: {doc!r}"
    assert isinstance(err.get("code"), str) and SNAKE_RE.match(err["code"]), f"bad error code: {doc!r}"
    assert isinstance(err.get("message"), str) and err["message"].strip(), f"bad error message: {doc!r}"
    assert set(err) <= {"code", "message", "field"}, f"unexpected members in error: {doc!r}"
    if code is not None:
        assert err["code"] == code, f"expected code {code!r}, got {err['code']!r}: {doc!r}"
    if codes is not None:
        assert err["code"] in codes, f"expected a code in {codes}, got {err['code']!r}: {doc!r}"
    if field is not None:
        assert err.get("field") == field, f"expected field {field!r}, got {err.get('field')!r}: {doc!r}"
    assert_request_id(resp)
    assert_no_leak(resp.body)
    return err


def assert_json_ok(resp, status):
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.body[:400]!r}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", f"Content-Type {ctype!r}"
    assert_request_id(resp)
    return json.loads(resp.body)


def assert_wallet(doc, balance=None):
    assert isinstance(doc, dict), doc
    assert set(doc) == WALLET_KEYS, f"wallet members {sorted(doc)} != {sorted(WALLET_KEYS)}"
    assert UUID_RE.match(doc["uuid"]), f"bad uuid {doc['uuid']!r}"
    assert isinstance(doc["balance"], int) and not isinstance(doc["balance"], bool), doc
    if balance is not None:
        assert doc["balance"] == balance, f"balance {doc['balance']} != {balance}"
    assert_utc_z(doc["created_at"])
    assert_utc_z(doc["updated_at"])
    return doc


def assert_transaction(doc, **expected):
    assert isinstance(doc, dict), doc
    assert set(doc) == TRANSACTION_KEYS, f"transaction members {sorted(doc)} != {sorted(TRANSACTION_KEYS)}"
    assert isinstance(doc["id"], int) and not isinstance(doc["id"], bool), doc
    assert doc["type"] in ("DEPOSIT", "WITHDRAWAL"), doc
    assert doc["status"] in ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELED"), doc
    assert doc["failure_reason"] in (None, "insufficient_funds", "bank_rejected", "bank_unreachable",
                                     "canceled", "bank_outcome_unknown"), doc
    assert isinstance(doc["attempts"], int), doc
    for name in ("created_at",):
        assert_utc_z(doc[name])
    for name in ("scheduled_for", "executed_at"):
        if doc[name] is not None:
            assert_utc_z(doc[name])
    for key, value in expected.items():
        assert doc[key] == value, f"transaction {key} = {doc[key]!r}, expected {value!r}: {doc}"
    return doc


def random_uuid():
    return str(uuidlib.uuid4())


# --- API shortcuts over the `stack` fixture -----------------------------------

def create_wallet(stack, headers=None):
    resp = stack.request("POST", "/wallets/", headers=headers)
    doc = assert_json_ok(resp, 201)
    return assert_wallet(doc, balance=0)


def get_wallet(stack, wallet_uuid):
    resp = stack.request("GET", f"/wallets/{wallet_uuid}/")
    return assert_json_ok(resp, 200)


def deposit(stack, wallet_uuid, amount, headers=None):
    resp = stack.request("POST", f"/wallets/{wallet_uuid}/deposit", body={"amount": amount}, headers=headers)
    return assert_json_ok(resp, 200)


def withdraw(stack, wallet_uuid, amount, scheduled_for=None, headers=None):
    body = {"amount": amount}
    if scheduled_for is not None:
        body["scheduled_for"] = scheduled_for
    resp = stack.request("POST", f"/wallets/{wallet_uuid}/withdraw", body=body, headers=headers)
    return assert_json_ok(resp, 201)


def list_all_transactions(stack, wallet_uuid, query="", limit=None):
    """Walks the cursor pagination; returns every transaction and the pages' sizes."""
    results, sizes, cursor, seen_cursors = [], [], None, set()
    while True:
        params = urllib.parse.parse_qsl(query)
        if limit is not None:
            params.append(("limit", str(limit)))
        if cursor is not None:
            params.append(("cursor", cursor))
        qs = urllib.parse.urlencode(params)
        resp = stack.request("GET", f"/wallets/{wallet_uuid}/transactions/" + (f"?{qs}" if qs else ""))
        doc = assert_json_ok(resp, 200)
        assert set(doc) == {"results", "next_cursor"}, doc
        results.extend(doc["results"])
        sizes.append(len(doc["results"]))
        cursor = doc["next_cursor"]
        if cursor is None:
            return results, sizes
        assert isinstance(cursor, str) and cursor, f"next_cursor {cursor!r}"
        assert cursor not in seen_cursors, f"cursor {cursor!r} repeats: pagination loops"
        seen_cursors.add(cursor)
        assert len(sizes) < 10_000, "pagination does not end"


# --- A small HTTP client (thread-local keep-alive) --------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


# The API key of each running stack, by its HTTP port: every request helper
# sends it as `Authorization: Bearer <key>` unless the request names its own
# Authorization header (a value of None sends none at all).
API_KEYS = {}


def with_api_key(port, headers):
    """`headers` (a dict) with the stack's key added unless it names Authorization."""
    hdrs = dict(headers or {})
    named = [k for k in hdrs if k.lower() == "authorization"]
    if not named and port in API_KEYS:
        hdrs["Authorization"] = f"Bearer {API_KEYS[port]}"
    for k in named:
        if hdrs[k] is None:
            del hdrs[k]
    return hdrs


def host_port(url):
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or 80


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after errors. Not thread-safe:
    one per thread."""

    def __init__(self, base_url, timeout=30):
        self.host, self.port = host_port(base_url)
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, raw_body=None):
        hdrs = with_api_key(self.port, headers)
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            r = self.conn.getresponse()
            payload = r.read()
            headers_out = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.close()
            return Response(r.status, headers_out, payload)
        except Exception:
            self.close()
            raise


# --- Raw sockets -----------------------------------------------------------------------

def raw_exchange(url, data, timeout=5.0, shutdown_write=False):
    """Sends raw bytes, reads until the server closes or the timeout; returns the bytes read."""
    host, port = host_port(url)
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shutdown_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_responses(data):
    """Splits a byte stream into HTTP responses; returns a list of Response (body by
    Content-Length or chunked). Stops at the first thing it cannot parse."""
    out = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            break
        head = data[:head_end].decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3})", head[0])
        if not m:
            break
        headers = {}
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        rest = data[head_end + 4:]
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, pos = b"", 0
            while True:
                line_end = rest.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(rest[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                body += rest[pos:pos + size]
                pos += size + 2
                if size == 0:
                    break
            data = rest[pos:]
        else:
            body, data = rest, b""
        out.append(Response(int(m.group(1)), headers, body))
    return out


def raw_request(url, method, path, headers=(), body=b"", timeout=10.0):
    """A byte-exact HTTP/1.1 request with Connection: close; returns one Response."""
    host, port = host_port(url)
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1") if isinstance(path, str) else
             method.encode() + b" " + path + b" HTTP/1.1",
             f"Host: {host}:{port}".encode(), b"Connection: close"]
    headers = list(headers)
    named = [n for n, _ in headers if (n.decode("latin-1") if isinstance(n, bytes) else n).lower() == "authorization"]
    if not named and port in API_KEYS:
        headers.append(("Authorization", f"Bearer {API_KEYS[port]}"))
    for name, value in headers:
        if value is None:
            continue
        name = name.encode("latin-1") if isinstance(name, str) else name
        value = value.encode("latin-1") if isinstance(value, str) else value
        lines.append(name + b": " + value)
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    responses = parse_responses(raw_exchange(url, data, timeout=timeout))
    assert responses, f"no HTTP response to {method} {path!r}"
    return responses[0]


# --- Logs ----------------------------------------------------------------------------------

def flatten_values(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from flatten_values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from flatten_values(v)
    else:
        yield obj


def json_log_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def log_lines_with(stack, value, name="wallet-fcgi.log", wait_seconds=5.0):
    """JSON lines of a log that carry `value` as one of their values (polls a little:
    the log may be written after the response)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        lines = [d for d in json_log_lines(stack.logs(name)) if value in list(flatten_values(d))]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


# --- Prometheus text -------------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Returns a list of (name, labels dict, float value); asserts every non-comment
    line is a well-formed sample."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line.strip())
        assert m, f"malformed Prometheus line: {line!r}"
        labels = dict(LABEL_RE.findall(m.group(3) or ""))
        raw = m.group(4)
        value = float("inf") if raw == "+Inf" else float(raw)
        samples.append((m.group(1), labels, value))
    return samples


def bank_rows(data):
    """The rows of a mock bank TSV file (ledger or calls), whatever form the fixture returns."""
    if data is None:
        return []
    if isinstance(data, bytes):
        data = data.decode()
    if isinstance(data, str):
        return [line.split("\t") for line in data.splitlines() if line.strip()]
    return [row if isinstance(row, (list, tuple)) else str(row).split("\t") for row in data]


class Soft:
    """Collects failed cases so one test run reports all of them at once."""

    def __init__(self):
        self.problems = []
        self.count = 0

    def check(self, label, fn, *args, **kwargs):
        self.count += 1
        try:
            return fn(*args, **kwargs)
        except AssertionError as e:
            self.problems.append(f"{label}: {e}")
        return None

    def done(self):
        assert self.count, "no case was checked"
        assert not self.problems, f"{len(self.problems)} of {self.count} cases failed:\n" + "\n".join(self.problems)


def expect(condition, message):
    """An assertion usable inside lambdas (for Soft.check)."""
    if not condition:
        raise AssertionError(message)


def ledger_amount_column(stack):
    """The ledger's signed-delta column (`amount` in the brief, `delta` in the schema)."""
    if stack.is_postgres:
        columns = [row[0] for row in stack.sqlite("SELECT column_name FROM information_schema.columns WHERE table_name = 'ledger'")]
    else:
        columns = [row[1] for row in stack.sqlite("PRAGMA table_info(ledger)")]
    for name in ("amount", "delta"):
        if name in columns:
            return name
    raise AssertionError(f"ledger has no amount/delta column: {columns}")


def ledger_sums(stack):
    """{wallet uuid: (wallets.balance, sum of its ledger deltas)} straight from the database."""
    column = ledger_amount_column(stack)
    rows = stack.sqlite(
        f"SELECT w.uuid, w.balance, COALESCE((SELECT SUM(l.{column}) FROM ledger l WHERE l.wallet_id = w.id), 0) "
        "FROM wallets w")
    return {row[0]: (row[1], row[2]) for row in rows}


# --- walletctl and database copies ---------------------------------------------------------

def ctl_json(stack, *args, expect_rc=0, **kwargs):
    """Runs `walletctl ARGS --json`, checks the exit status and parses stdout."""
    result = stack.walletctl(*args, "--json", **kwargs)
    assert expect_rc is None or result.returncode == expect_rc, (
        f"walletctl {' '.join(map(str, args))} --json exited {result.returncode}, expected {expect_rc}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"walletctl {' '.join(map(str, args))} --json printed no JSON: {result.stdout[:1000]!r}")


def copy_database(stack, target):
    """A consistent copy of the stack's database at `target` (SQLite's online backup)."""
    import sqlite3
    src = sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True, timeout=10)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return target


# --- ledger checkpoints (docs/CHECKPOINTS.md) ---------------------------------------------------

GENESIS = "0" * 64

LEDGER_ROW = "SELECT id, wallet_id, transaction_id, kind, delta, balance_after, created_at FROM ledger"


def checkpoint_step(previous, row):
    """c(n) from c(n-1) and row n (LEDGER_ROW's columns); also a row's own hash,
    from the hash it chains from."""
    id_, wallet, transaction, kind, delta, balance_after, created_at = row
    text = f"{previous}|{id_}|{wallet}|{transaction}|{kind}|{delta}|{balance_after}|{created_at}"
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_of(conn_rows, through):
    """The checkpoint through row `through`, from the rows' contents (the definition)."""
    value = GENESIS
    for row in conn_rows:
        if row[0] > through:
            break
        value = checkpoint_step(value, row)
    return value
