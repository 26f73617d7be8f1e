"""Shared helpers for the capture-recording clients (scripts/captures/scenarios.py).

A Recorder keeps what the client itself saw: timestamped actions, exceptions pika raised (class,
message, errno), pika's own log records (which carry the underlying OSError of a lost stream), what
the broker sent in Connection.Start / Connection.Tune as pika decoded it, and the negotiated values.
Everything is written as one JSON document (client.json) that make_truth.py turns into
captures/NAME.truth.json.
"""

import datetime
import errno as errno_mod
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import traceback

import pika
import pika.channel
import pika.connection
import pika.frame
import pika.heartbeat
import pika.spec
from pika.adapters.utils import io_services_utils

HERE = os.path.dirname(os.path.abspath(__file__))
BROKER = os.path.join(os.path.dirname(HERE), "broker")
HOST = "127.0.0.1"
PORT = int(os.environ.get("AMQPSCOPE_BROKER_PORT", "5672"))
TLS_PORT = int(os.environ.get("AMQPSCOPE_BROKER_TLS_PORT", "5671"))
TLS_SNI = "localhost"  # the broker's throwaway certificate is for localhost and 127.0.0.1


def now():
    return time.time()


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")


def ssl_errno_info(code, text):
    """An ssl.SSLError's errno is an ssl.SSL_ERROR_* code (8 = SSL_ERROR_EOF), not an OS errno: kept apart."""
    try:
        name = ssl.SSLErrorNumber(code).name
    except ValueError:
        name = None
    return {"ssl_errno": code, "ssl_errno_name": name, "strerror": text}


def errno_info(exc):
    """errno/strerror of an OSError (ssl_errno/ssl_errno_name of an ssl.SSLError), or None."""
    if isinstance(exc, ssl.SSLError) and exc.errno is not None:
        return ssl_errno_info(exc.errno, exc.strerror)
    if isinstance(exc, OSError) and exc.errno is not None:
        return {
            "errno": exc.errno,
            "errno_name": errno_mod.errorcode.get(exc.errno),
            "strerror": exc.strerror,
        }
    return None


_ERRNO_IN_TEXT = re.compile(r"\b([A-Za-z]+Error)\((\d+), '([^']*)'\)")


def describe_exception(exc):
    """Class, message, args and errno of an exception, following __cause__/__context__."""
    d = {
        "class": type(exc).__name__,
        "module": type(exc).__module__,
        "qualified_class": type(exc).__module__ + "." + type(exc).__qualname__,
        "message": str(exc),
        "repr": repr(exc),
        "args": [a if isinstance(a, (int, float, str, type(None))) else repr(a) for a in exc.args],
        "mro": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)],
    }
    if isinstance(exc, ssl.SSLError):
        d["ssl_reason"] = exc.reason
        d["ssl_library"] = exc.library
    if isinstance(exc, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        d["reply_code"] = exc.reply_code
        d["reply_text"] = exc.reply_text
    e = errno_info(exc)
    if e:
        d.update(e)
        d["errno_source"] = "exception.errno"
    else:
        # pika's StreamLostError keeps only the repr of the OSError in its message, e.g.
        # "Stream connection lost: ConnectionResetError(104, 'Connection reset by peer')".
        m = _ERRNO_IN_TEXT.search(str(exc))
        if m and m.group(1).startswith("SSL"):
            d.update(ssl_errno_info(int(m.group(2)), m.group(3)))
            d["errno_source"] = "parsed from exception message (%s; an ssl.SSL_ERROR_* code)" % m.group(1)
        elif m:
            d["errno"] = int(m.group(2))
            d["errno_name"] = errno_mod.errorcode.get(int(m.group(2)))
            d["strerror"] = m.group(3)
            d["errno_source"] = "parsed from exception message (%s)" % m.group(1)
    chain = []
    c = exc.__cause__ or exc.__context__
    while c is not None and len(chain) < 5:
        chain.append({"class": type(c).__name__, "message": str(c), **(errno_info(c) or {})})
        c = c.__cause__ or c.__context__
    if chain:
        d["chain"] = chain
    return d


class _PikaLogHandler(logging.Handler):
    def __init__(self, recorder, level):
        super().__init__(level=level)
        self.recorder = recorder

    def emit(self, record):
        r = self.recorder
        entry = {
            "t": record.created,
            "time": iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage()[:600],
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["exception"] = {"class": type(exc).__name__, "message": str(exc), **(errno_info(exc) or {})}
            if errno_info(exc):
                # The OSError under a lost stream: recv() in _consume, send() in _produce.
                where = "recv" if "_consume" in entry["message"] else ("send" if "_produce" in entry["message"] else None)
                with r.lock:
                    r.data["os_errors"].append({
                        "t": record.created, "time": iso(record.created), "syscall": where,
                        "class": type(exc).__name__, **errno_info(exc),
                        "thread": record.threadName,
                        "source": "pika log record with exc_info: " + entry["message"][:120],
                    })
        with r.lock:
            if len(r.data["pika_log"]) < r.max_log:
                r.data["pika_log"].append(entry)
            else:
                r.data["pika_log_dropped"] += 1


class Recorder:
    def __init__(self, scenario, out_path, max_log=300, log_level=logging.INFO):
        self.lock = threading.Lock()
        self.out_path = out_path
        self.max_log = max_log
        self.data = {
            "scenario": scenario,
            "pika_version": pika.__version__,
            "python_version": sys.version.split()[0],
            "broker_address": "%s:%d" % (HOST, PORT),
            "started": iso(now()),
            "events": [],
            "connections": [],
            "exceptions": [],
            "os_errors": [],
            "pika_log": [],
            "pika_log_dropped": 0,
            # per client port: epoch times of heartbeat frames pika sent / received (pika hooks)
            "heartbeats": {},
            # per client port: [epoch, "sent"|"recv", frame type, channel, method name / body size]
            "frames": {},
        }
        logging.getLogger("pika").setLevel(logging.INFO)
        logging.getLogger("pika").addHandler(_PikaLogHandler(self, log_level))
        self._install_tune_hook()

    # --- what the broker sent, as pika decoded it -------------------------------------------
    def _install_tune_hook(self):
        rec = self
        orig_start = pika.connection.Connection._on_connection_start
        orig_tune = pika.connection.Connection._on_connection_tune

        def on_start(conn, method_frame):
            m = method_frame.method
            props = dict(m.server_properties or {})
            conn._amqpscope_start = {
                "t": now(),
                "version_major": m.version_major, "version_minor": m.version_minor,
                "mechanisms": _s(m.mechanisms), "locales": _s(m.locales),
                "product": _s(props.get("product")), "version": _s(props.get("version")),
                "platform": _s(props.get("platform")),
                "capabilities": {_s(k): v for k, v in (props.get("capabilities") or {}).items()},
            }
            return orig_start(conn, method_frame)

        def on_tune(conn, method_frame):
            m = method_frame.method
            requested = {"channel_max": conn.params.channel_max, "frame_max": conn.params.frame_max,
                         "heartbeat": conn.params.heartbeat if not callable(conn.params.heartbeat) else "callable"}
            result = orig_tune(conn, method_frame)
            conn._amqpscope_tune = {
                "t": now(),
                "server_proposed": {"channel_max": m.channel_max, "frame_max": m.frame_max, "heartbeat": m.heartbeat},
                "client_requested": requested,
                "negotiated": {"channel_max": conn.params.channel_max, "frame_max": conn.params.frame_max,
                               "heartbeat": conn.params.heartbeat},
                "source": "pika Connection._on_connection_tune (Connection.Tune as decoded by pika; "
                          "negotiated = values pika sent in Tune-Ok)",
            }
            return result

        pika.connection.Connection._on_connection_start = on_start
        pika.connection.Connection._on_connection_tune = on_tune

        # Close methods from the broker, with the class/method ids that pika's exceptions drop.
        orig_chan_close = pika.channel.Channel._on_close_from_broker
        orig_conn_close = pika.connection.Connection._on_connection_close_from_broker

        def on_chan_close(chan, method_frame):
            m = method_frame.method
            rec.event("received_channel_close", channel=chan.channel_number, reply_code=m.reply_code,
                      reply_text=_s(m.reply_text), class_id=m.class_id, method_id=m.method_id,
                      client_port=_port(chan.connection),
                      source="pika Channel._on_close_from_broker (Channel.Close as decoded by pika)")
            return orig_chan_close(chan, method_frame)

        def on_conn_close(conn, method_frame):
            m = method_frame.method
            rec.event("received_connection_close", reply_code=m.reply_code, reply_text=_s(m.reply_text),
                      class_id=m.class_id, method_id=m.method_id, client_port=_port(conn),
                      source="pika Connection._on_connection_close_from_broker (Connection.Close as decoded by pika)")
            return orig_conn_close(conn, method_frame)

        pika.channel.Channel._on_close_from_broker = on_chan_close
        pika.connection.Connection._on_connection_close_from_broker = on_conn_close

        # Heartbeat frames pika received (HeartbeatChecker.received is called for frame type 8 only)
        # and sent.
        orig_hb_received = pika.heartbeat.HeartbeatChecker.received
        orig_hb_send = pika.heartbeat.HeartbeatChecker._send_heartbeat_frame

        def hb_received(checker):
            rec._heartbeat("received", _port(checker._connection))
            return orig_hb_received(checker)

        def hb_send(checker):
            rec._heartbeat("sent", _port(checker._connection))
            return orig_hb_send(checker)

        pika.heartbeat.HeartbeatChecker.received = hb_received
        pika.heartbeat.HeartbeatChecker._send_heartbeat_frame = hb_send

        # Every AMQP frame pika handed to its transport ("sent": it may not reach the wire when the
        # socket is already dead) and every frame pika decoded from the broker ("recv").
        orig_output = pika.connection.Connection._output_marshaled_frames
        orig_process = pika.connection.Connection._process_frame

        def output(conn, marshaled_frames):
            port = _port(conn)
            for raw in marshaled_frames:
                rec._frame(port, "sent", *_describe_raw_frame(raw))
            return orig_output(conn, marshaled_frames)

        def process(conn, frame_value):
            rec._frame(_port(conn), "recv", *_describe_frame(frame_value))
            return orig_process(conn, frame_value)

        pika.connection.Connection._output_marshaled_frames = output
        pika.connection.Connection._process_frame = process

    def trace_sends(self):
        """Record every send() pika's plain transport makes (client.sends, per client port): [epoch before the
        call, epoch after it, bytes asked, bytes the kernel took or null, errno or null]. pika sends each
        marshaled frame with its own send() (_AsyncTransportBase._produce), so this says which frames the kernel
        accepted before a failure."""
        rec = self
        self.data["sends"] = {}
        orig = io_services_utils._AsyncTransportBase.__dict__["_sigint_safe_send"].__func__

        def send(sock, data):
            try:
                port = sock.getsockname()[1]
            except OSError:
                port = None
            t0 = now()
            try:
                n = orig(sock, data)
            except OSError as e:
                with rec.lock:
                    rec.data["sends"].setdefault(str(port), []).append(
                        [round(t0, 6), round(now(), 6), len(data), None, e.errno])
                raise
            with rec.lock:
                rec.data["sends"].setdefault(str(port), []).append([round(t0, 6), round(now(), 6), len(data), n, None])
            return n

        io_services_utils._AsyncTransportBase._sigint_safe_send = staticmethod(send)

    def trace_connect_attempts(self):
        """Record every TCP connect() pika's connection workflow makes (client.connect_attempts, in order): the
        address tried, the local address and port of the socket (getsockname() once connect() was called: the
        kernel keeps the port of a refused socket until it is closed), the epoch before connect() and when pika
        got the result, and the result: "connected", or the OSError (errno) pika's _AsyncSocketConnector
        reported (from connect() itself or from SO_ERROR once the socket was writable)."""
        rec = self
        self.data["connect_attempts"] = []
        cls = io_services_utils._AsyncSocketConnector
        orig_start, orig_done = cls._start_async, cls._report_completion

        def local_of(connector, attempt):
            if attempt.get("client_port") is None:
                try:
                    name = connector._sock.getsockname()
                    attempt["client_addr"], attempt["client_port"] = name[0], name[1]
                except OSError as e:
                    attempt["getsockname_error"] = repr(e)

        def start_async(connector):
            addr = connector._addr
            attempt = {"t_connect": round(now(), 6), "family": connector._sock.family.name,
                       "address": addr[0], "port": addr[1], "client_addr": None, "client_port": None}
            connector._amqpscope_attempt = attempt
            with rec.lock:
                rec.data["connect_attempts"].append(attempt)
            try:
                return orig_start(connector)
            finally:
                local_of(connector, attempt)

        def report_completion(connector, result):
            attempt = getattr(connector, "_amqpscope_attempt", None)
            if attempt is not None:
                local_of(connector, attempt)
                t = now()
                attempt["t_result"] = round(t, 6)
                attempt["time_connect"] = iso(attempt["t_connect"])
                attempt["time_result"] = iso(t)
                if result is None:
                    attempt["result"] = "connected"
                else:
                    attempt["result"] = "failed"
                    attempt["error"] = {"class": type(result).__name__, "message": str(result),
                                        **(errno_info(result) or {})}
                attempt["source"] = ("pika _AsyncSocketConnector hooks: _start_async (non-blocking connect()), "
                                     "_report_completion (its result: SO_ERROR once writable, or connect()'s own "
                                     "error); ports from the socket's getsockname()")
            return orig_done(connector, result)

        cls._start_async = start_async
        cls._report_completion = report_completion

    def _frame(self, port, direction, ftype, channel, detail):
        t = now()
        with self.lock:
            self.data["frames"].setdefault(str(port), []).append([round(t, 6), direction, ftype, channel, detail])

    def _heartbeat(self, direction, port):
        t = now()
        with self.lock:
            hb = self.data["heartbeats"].setdefault(str(port), {"sent": [], "received": []})
            hb[direction].append(round(t, 6))

    # --- recording ----------------------------------------------------------------------------
    def event(self, name, **kw):
        t = now()
        e = {"t": t, "time": iso(t), "action": name, "thread": threading.current_thread().name}
        e.update(kw)
        with self.lock:
            self.data["events"].append(e)
        return e

    def exception(self, during, exc, **kw):
        t = now()
        d = {"t": t, "time": iso(t), "during": during, "thread": threading.current_thread().name}
        d.update(describe_exception(exc))
        d.update(kw)
        with self.lock:
            self.data["exceptions"].append(d)
        return d

    def tls_context(self, tls):
        """An ssl.SSLContext for the broker's TLS listener. tls: {"version": "1.3"|"1.2", "ciphers": OpenSSL
        cipher string (TLS 1.2 only), "keylog": NSS key log file}. The server certificate is verified against
        the broker's throwaway CA (scripts/broker tls-ca), with the host name TLS_SNI."""
        ca = subprocess.run([BROKER, "tls-ca"], capture_output=True, text=True, check=True).stdout.strip()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=ca)
        if tls.get("version") == "1.3":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        elif tls.get("version") == "1.2":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if tls.get("ciphers"):
            ctx.set_ciphers(tls["ciphers"])
        if tls.get("keylog"):
            ctx.keylog_filename = tls["keylog"]
        return ctx

    def connect(self, label="conn", tls=None, hosts=None, port=None, **params):
        """Open a BlockingConnection to the private broker, recording it. With tls (see tls_context), over
        TLS to TLS_PORT through pika.SSLOptions. hosts: a list of addresses, one pika.ConnectionParameters
        each, that pika tries in order (default [HOST]); port: another port than the broker's (a proxy)."""
        params.setdefault("heartbeat", 2)
        port = port or PORT
        shown = {k: v for k, v in params.items()}
        if tls:
            port = TLS_PORT
            params["ssl_options"] = pika.SSLOptions(self.tls_context(tls), server_hostname=TLS_SNI)
            shown["tls"] = dict(tls, sni=TLS_SNI)
            self.data["broker_address"] = "%s:%d" % (HOST, port)
        if hosts:
            shown["hosts"] = list(hosts)
        if not tls and (hosts or port != PORT):
            shown["port"] = port
        p = [pika.ConnectionParameters(host=h, port=port, connection_attempts=1, socket_timeout=5,
                                       client_properties={"connection_name": "amqpscope-" + label}, **params)
             for h in (hosts or [HOST])]
        self.event("connect", connection=label, params=shown)
        conn = pika.BlockingConnection(p if hosts else p[0])
        info = self.connection_info(conn, label)
        self.event("connected", connection=label, client_port=info.get("client_port"))
        return conn

    def connection_info(self, conn, label):
        impl = conn._impl
        info = {"label": label, "connection_name": "amqpscope-" + label}
        try:
            sock = impl._transport._sock
            info["client_addr"], info["client_port"] = sock.getsockname()[:2]
            info["broker_addr"], info["broker_port"] = sock.getpeername()[:2]
            info["ports_source"] = "client socket getsockname()/getpeername()"
            if isinstance(sock, ssl.SSLSocket):
                name, protocol, bits = sock.cipher()
                info["tls"] = {
                    "version": sock.version(), "cipher": name, "cipher_protocol": protocol, "cipher_bits": bits,
                    "sni": sock.server_hostname, "server_cert_subject": _dn(sock.getpeercert().get("subject")),
                    "server_cert_san": [list(x) for x in sock.getpeercert().get("subjectAltName", ())],
                    "keylog_file": os.path.basename(sock.context.keylog_filename or "") or None,
                    "openssl": ssl.OPENSSL_VERSION,
                    "source": "client ssl.SSLSocket version()/cipher()/server_hostname/getpeercert() "
                              "after the handshake; keylog = SSLContext.keylog_filename",
                }
        except Exception as e:  # pragma: no cover - pika internals
            info["ports_error"] = repr(e)
        info["start"] = getattr(impl, "_amqpscope_start", None)
        info["tune"] = getattr(impl, "_amqpscope_tune", None)
        with self.lock:
            self.data["connections"].append(info)
        return info

    def ctl(self, *args, timeout=60):
        """Run rabbitmqctl against the private broker (through scripts/broker ctl)."""
        cmd = [BROKER, "ctl"] + list(args)
        t0 = now()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        self.event("rabbitmqctl", argv=list(args), rc=p.returncode, started=iso(t0),
                   stdout=p.stdout.strip()[-2000:], stderr=p.stderr.strip()[-1000:])
        return p

    def write(self):
        self.data["finished"] = iso(now())
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, default=_json_default)
        os.replace(tmp, self.out_path)


def _method_name(class_id, method_id):
    cls = pika.spec.methods.get((class_id << 16) | method_id)
    return cls.NAME if cls else "%d.%d" % (class_id, method_id)


def _describe_raw_frame(raw):
    """(type, channel, detail) of one marshaled frame (7-byte header, payload, 0xCE)."""
    if raw[:4] == b"AMQP":
        return "protocol-header", 0, raw[4:8].hex()
    ftype, channel, size = raw[0], int.from_bytes(raw[1:3], "big"), int.from_bytes(raw[3:7], "big")
    payload = raw[7:7 + size]
    if ftype == 1:
        cid, mid = int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big")
        name = _method_name(cid, mid)
        if (cid, mid) in ((10, 50), (20, 40)):
            name += "(%d)" % int.from_bytes(payload[4:6], "big")
        return ftype, channel, name
    if ftype == 2:
        return ftype, channel, "body_size=%d" % int.from_bytes(payload[4:12], "big")
    if ftype == 3:
        return ftype, channel, "%d bytes" % size
    return ftype, channel, "heartbeat" if ftype == 8 else "size=%d" % size


def _describe_frame(fv):
    ftype = getattr(fv, "frame_type", None)
    channel = getattr(fv, "channel_number", 0)
    if isinstance(fv, pika.frame.Method):
        name = fv.method.NAME
        if hasattr(fv.method, "reply_code"):
            name += "(%d)" % fv.method.reply_code
        return ftype, channel, name
    if isinstance(fv, pika.frame.Header):
        return ftype, channel, "body_size=%d" % fv.body_size
    if isinstance(fv, pika.frame.Body):
        return ftype, channel, "%d bytes" % len(fv.fragment)
    if isinstance(fv, pika.frame.Heartbeat):
        return ftype, channel, "heartbeat"
    return ftype, channel, type(fv).__name__


def _dn(rdns):
    return ", ".join("%s=%s" % kv for rdn in (rdns or ()) for kv in rdn)


def _port(conn):
    try:
        return conn._transport._sock.getsockname()[1]
    except Exception:
        return None


def _s(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _json_default(o):
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, BaseException):
        return repr(o)
    return str(o)


def fail_hard(rec, exc):
    """Unexpected error in the scenario itself: keep what we have and say so."""
    rec.data["scenario_error"] = {"traceback": traceback.format_exc(), **describe_exception(exc)}
