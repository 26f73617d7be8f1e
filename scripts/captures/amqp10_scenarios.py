#!/usr/bin/python3
"""AMQP 1.0 clients for scripts/record-captures-amqp10: /usr/bin/python3 amqp10_scenarios.py SCENARIO OUT.json

Runs with Debian's /usr/bin/python3: python3-qpid-proton (scripts/setup --amqp10) installs the Proton
binding for that interpreter only, so a pyenv `python3` on PATH would not find it.

The client is Qpid Proton's Python binding, proton.utils.BlockingConnection (which runs a
proton.reactor.Container underneath). What it records in OUT.json:
  events       every action of the scenario and every Proton endpoint event (PN_CONNECTION_*, PN_SESSION_*,
               PN_LINK_*, PN_DELIVERY, PN_TRANSPORT_*) with epoch `t` and ISO `time`, as the client saw them
  exceptions   every exception Proton raised, exactly as raised (class, message), with the condition
               (name, description) of the connection/link/transport it came from
  conditions   each endpoint condition when its close/end/detach/transport-closed event arrived
  frames       Proton's own frame trace (Transport.trace(TRACE_FRM)), one [t, direction, text] per frame,
               including "(EMPTY FRAME)" keepalives and the EOS of each direction
  connections  client/broker address and port, idle timeouts (local setting, what the peer advertised),
               the peer's container-id and Open properties
  proton_log   the "proton" logger's records at INFO and above (connect, disconnect, socket errors)
  tls          (rabbitmq10-tls-*) what Proton's SSL layer reports (protocol, cipher, SNI/peer name) and the key log
               that the LD_PRELOAD shim (keylog-shim.c) wrote to $SSLKEYLOGFILE
  sasl         (rabbitmq10-sasl-failure) Proton's SASL layer after the failure: mechanism, outcome code, condition
Exit status 0 when the scenario ran as designed (including the failures it provokes), 1 otherwise.
Environment: AMQPSCOPE_AMQP10_HOST, AMQPSCOPE_PROTON_PORT (5673), AMQPSCOPE_BROKER_PORT (5672),
AMQPSCOPE_BROKER_TLS_PORT (5671), AMQPSCOPE_PROTON_BROKER_PID (the Proton example broker, for proton-broker-frozen),
AMQPSCOPE_TLS_CA (the broker's throwaway CA, for rabbitmq10-tls-*), SSLKEYLOGFILE and LD_PRELOAD (the key-log shim,
rabbitmq10-tls-*; LD_PRELOAD is dropped from the environment once loaded, so no child process inherits it).
"""

import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

import proton
import proton._reactor as _reactor
import proton._io as _io
from proton import SASL, SSLDomain, Endpoint, Message, Transport
from proton.utils import BlockingConnection

HERE = os.path.dirname(os.path.abspath(__file__))
BROKER = os.path.join(os.path.dirname(HERE), "broker")
HOST = os.environ.get("AMQPSCOPE_AMQP10_HOST", "127.0.0.1")
PROTON_PORT = int(os.environ.get("AMQPSCOPE_PROTON_PORT", "5673"))
RABBIT_PORT = int(os.environ.get("AMQPSCOPE_BROKER_PORT", "5672"))
RABBIT_TLS_PORT = int(os.environ.get("AMQPSCOPE_BROKER_TLS_PORT", "5671"))
PRELOADED = os.environ.pop("LD_PRELOAD", None)   # already loaded into this process; keep it from child processes


def now():
    return time.time()


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")


def cond(c):
    if c is None:
        return None
    return {"name": c.name, "description": c.description,
            "info": None if c.info is None else repr(c.info)}


_EVENT = re.compile(r"recvd Event: (\w+)\(")
_KEEP_EVENTS = re.compile(r"^PN_(CONNECTION|SESSION|LINK|DELIVERY|TRANSPORT_(ERROR|CLOSED|HEAD_CLOSED|TAIL_CLOSED))")


class _ProtonLog(logging.Handler):
    """The 'proton' logger: INFO+ records verbatim; DEBUG 'recvd Event' records as endpoint events."""

    def __init__(self, rec):
        super().__init__(level=logging.DEBUG)
        self.rec = rec

    def emit(self, record):
        msg = record.getMessage()
        if record.levelno <= logging.DEBUG:
            m = _EVENT.search(msg)
            if m and _KEEP_EVENTS.match(m.group(1)):
                self.rec._append("events", {"t": record.created, "time": iso(record.created),
                                            "action": "proton_event", "event": m.group(1),
                                            "source": "proton reactor dispatch (logger 'proton', DEBUG)"})
            return
        e = {"t": record.created, "time": iso(record.created), "level": record.levelname,
             "logger": record.name, "message": msg[:600]}
        self.rec._append("proton_log", e)


class Recorder:
    def __init__(self, scenario, out_path):
        self.lock = threading.Lock()
        self.out_path = out_path
        self.sockets = []      # every socket Proton's IO.connect made: label, client port, broker address
        self.transports = {}   # label -> the proton Transport bound in _Connector._connect
        self.data = {
            "scenario": scenario,
            "proton_version": ".".join(str(v) for v in proton.VERSION),
            "proton_module": proton.__file__,
            "python_version": sys.version.split()[0],
            "python_executable": sys.executable,
            "started": iso(now()),
            "events": [], "exceptions": [], "conditions": [], "connections": [],
            "frames": {}, "proton_log": [],
        }
        lg = logging.getLogger("proton")
        lg.setLevel(logging.DEBUG)
        lg.addHandler(_ProtonLog(self))
        lg.propagate = False
        self._hooks()

    def _append(self, key, value):
        with self.lock:
            self.data[key].append(value)

    # --- hooks into Proton ---------------------------------------------------------------------
    def _hooks(self):
        rec = self
        orig_connect = _reactor._Connector._connect

        def _connect(connector, connection, url):
            orig_connect(connector, connection, url)
            t = connection.transport
            key = {"n": len(rec.data["frames"])}
            label = _pending_label[0] or "conn%d" % key["n"]
            frames = rec.data["frames"].setdefault(label, [])

            def tracer(_transport, message):
                ts = now()
                # "FRAME: 0 -> @open(16) [...]", "FRAME:   <- EOS", "FRAME: 0 <- (EMPTY FRAME)"
                m = re.match(r"^\s*(?:\[[^\]]*\]:)?\s*\w*:?FRAME:\s*(\d*)\s*(->|<-)\s*(.*)$", message, re.S)
                if m:
                    frames.append([round(ts, 6), "sent" if m.group(2) == "->" else "recv",
                                   int(m.group(1)) if m.group(1) else None, m.group(3)[:1500]])
                else:
                    frames.append([round(ts, 6), "log", None, message[:1500]])
            t.trace(Transport.TRACE_FRM)
            t.tracer = tracer
            rec.transports[label] = t
            rec.event("transport_bound", connection=label, url=_redact(str(url)), local_idle_timeout_s=t.idle_timeout,
                      source="proton _Connector._connect (Transport bound, frame trace on)")

        _reactor._Connector._connect = _connect

        orig_io_connect = _io.IO.connect

        def io_connect(addr):
            sock = orig_io_connect(addr)
            s = {"label": _pending_label[0], "t": now(), "broker_addr": addr[4][0], "broker_port": addr[4][1]}
            try:
                s["client_addr"], s["client_port"] = sock.getsockname()[:2]
            except OSError as e:  # pragma: no cover
                s["error"] = repr(e)
            rec.sockets.append(s)
            return sock

        _io.IO.connect = staticmethod(io_connect)

        def wrap(name, what):
            orig = getattr(BlockingConnection, name, None)

            def handler(bc, event):
                ep = what(event)
                c = None
                try:
                    if name == "on_transport_closed":
                        c = event.transport.condition
                    elif name == "on_connection_remote_close":
                        c = event.connection.remote_condition
                    elif name == "on_session_remote_close":
                        c = event.session.remote_condition
                    elif name == "on_link_remote_close":
                        c = event.link.remote_condition
                except Exception as e:  # pragma: no cover
                    c = None
                    ep = "%s (condition unreadable: %r)" % (ep, e)
                t = now()
                rec._append("conditions", {"t": t, "time": iso(t), "event": name[3:], "endpoint": ep,
                                           "condition": cond(c),
                                           "source": "BlockingConnection.%s: %s" % (name, "remote condition"
                                                     if "remote" in name else "transport condition")})
                if orig:
                    return orig(bc, event)
            setattr(BlockingConnection, name, handler)

        wrap("on_transport_closed", lambda e: "transport")
        wrap("on_connection_remote_close", lambda e: "connection")
        wrap("on_session_remote_close", lambda e: "session")
        wrap("on_link_remote_close", lambda e: "link %s" % e.link.name)

    # --- recording -------------------------------------------------------------------------------
    def event(self, name, **kw):
        t = now()
        e = {"t": t, "time": iso(t), "action": name, "thread": threading.current_thread().name}
        e.update(kw)
        self._append("events", e)
        return e

    def exception(self, during, exc, bc=None, **kw):
        t = now()
        d = {"t": t, "time": iso(t), "during": during,
             "class": type(exc).__name__, "module": type(exc).__module__,
             "qualified_class": type(exc).__module__ + "." + type(exc).__qualname__,
             "message": str(exc), "repr": repr(exc),
             "mro": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)]}
        if getattr(exc, "condition", None) is not None:
            d["exception_condition"] = exc.condition if isinstance(exc.condition, str) else cond(exc.condition)
        m = re.search(r"Condition\('([^']*)', '([^']*)'\)", str(exc))
        if m:
            d["condition"] = {"name": m.group(1), "description": m.group(2),
                              "source": "parsed from the exception message"}
        if bc is not None and bc.conn is not None:
            c = bc.conn
            d["endpoint_state"] = {
                "connection_state": _state(c.state),
                "connection_remote_condition": cond(c.remote_condition),
                "connection_local_condition": cond(c.condition),
                "transport_condition": cond(c.transport.condition) if c.transport else None,
            }
        d.update(kw)
        self._append("exceptions", d)
        return d

    def connect(self, label, url, shown=None, **kw):
        """shown: how to record some of the parameters (the SSLDomain); a password is never recorded."""
        params = dict(kw, **(shown or {}))
        if "password" in params:
            params["password"] = "<redacted>"
        self.event("connect", connection=label, url=_redact(url), params=params)
        _pending_label[0] = label
        try:
            bc = BlockingConnection(url, **kw)
        except Exception:
            self.failed_connection_info(label)
            raise
        info = self.connection_info(bc, label)
        self.event("connected", connection=label, client_port=info.get("client_port"),
                   remote_idle_timeout_s=info.get("remote_idle_timeout_s"))
        return bc

    def connection_info(self, bc, label):
        c = bc.conn
        t = c.transport
        info = {"label": label}
        try:
            sock = t._selectable._delegate
            info["client_addr"], info["client_port"] = sock.getsockname()[:2]
            info["broker_addr"], info["broker_port"] = sock.getpeername()[:2]
            info["ports_source"] = "client socket getsockname()/getpeername()"
        except Exception as e:  # pragma: no cover
            info["ports_error"] = repr(e)
        info["local_idle_timeout_s"] = t.idle_timeout
        info["local_idle_timeout_note"] = ("Proton's local idle timeout (BlockingConnection heartbeat=); it "
                                           "advertises half of it as idle-time-out in its Open")
        info["remote_idle_timeout_s"] = t.remote_idle_timeout
        info["remote_max_frame_size"] = t.remote_max_frame_size
        info["remote_container"] = c.remote_container
        info["remote_hostname"] = c.remote_hostname
        try:
            info["remote_properties"] = {str(k): str(v) for k, v in (c.remote_properties or {}).items()}
        except Exception:
            info["remote_properties"] = None
        info["remote_offered_capabilities"] = None if c.remote_offered_capabilities is None else \
            [str(x) for x in c.remote_offered_capabilities]
        info["source"] = "proton Transport/Connection after BlockingConnection() returned (remote Open received)"
        ssl = getattr(t, "_ssl", None)
        if ssl is not None:
            info["tls"] = {"protocol": ssl.protocol_name(), "cipher": ssl.cipher_name(),
                           "peer_hostname": ssl.peer_hostname, "peer_cert_subject": ssl.get_cert_subject(),
                           "source": "proton SSL object of the transport: protocol_name(), cipher_name() "
                                     "(OpenSSL's names), peer_hostname (SNI and the name verified)"}
        self._append("connections", info)
        return info

    def failed_connection_info(self, label):
        """BlockingConnection() raised: the ports from the socket Proton's IO.connect made for this connection."""
        socks = [s for s in self.sockets if s["label"] == label]
        info = {"label": label, "connected": False}
        if socks:
            s = socks[-1]
            info.update({k: s.get(k) for k in ("client_addr", "client_port", "broker_addr", "broker_port")})
            info["ports_source"] = "client socket getsockname() right after Proton's IO.connect() (connect() call)"
        info["source"] = "BlockingConnection() raised before the connection was open: no remote Open"
        self._append("connections", info)
        return info

    def service(self, bc, seconds, why):
        """Let the reactor run for `seconds` (BlockingConnection.wait on a clock condition)."""
        self.event("service_start", seconds=seconds, why=why,
                   how="BlockingConnection.wait(lambda: time passed) -> Container.process() loop")
        end = now() + seconds
        task = bc.container.schedule(seconds, _Noop())   # a timer so process() wakes up at the end
        try:
            bc.wait(lambda: now() >= end, timeout=seconds + 5, msg="servicing")
        finally:
            task.cancel()   # else a pending timer keeps BlockingConnection.close() running until it fires
        self.event("service_end")

    def write(self):
        self.data["finished"] = iso(now())
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.out_path)


_pending_label = [None]   # label of the connection being opened, for the frame-trace hook


class _Noop(proton.Handler):
    def on_timer_task(self, event):
        pass


def _state(s):
    parts = []
    for name in ("LOCAL_UNINIT", "LOCAL_ACTIVE", "LOCAL_CLOSED", "REMOTE_UNINIT", "REMOTE_ACTIVE", "REMOTE_CLOSED"):
        if s & getattr(Endpoint, name):
            parts.append(name)
    return "|".join(parts)


def _redact(url):
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:<redacted>@", url)


def fail_hard(rec, exc):
    rec.data["scenario_error"] = {"traceback": traceback.format_exc(), "class": type(exc).__name__,
                                  "message": str(exc)}


# --- pieces -----------------------------------------------------------------------------------

def body_of(n):
    return "amqpscope amqp10 message %d" % n


def send(rec, sender, n, address, bc=None):
    rec.event("send", n=n, address=address, body=body_of(n))
    d = sender.send(Message(body=body_of(n), durable=False))
    rec.event("send_settled", n=n, remote_state=str(d.remote_state), settled=d.settled,
              remotely_settled=bool(d.remote_settled) if hasattr(d, "remote_settled") else None,
              source="BlockingSender.send() returned: the broker's disposition settled the delivery")
    return d


def receive(rec, bc, receiver, count, address):
    got = []
    for _ in range(count):
        m = receiver.receive(timeout=5)
        presettled = len(receiver.fetcher.unsettled) == 0 if receiver.fetcher else None
        rec.event("received", address=address, body=m.body, presettled_by_broker=presettled,
                  source="BlockingReceiver.receive(); presettled = nothing left to settle in the Fetcher")
        if presettled:
            rec.event("accept_skipped", reason="the broker sent the transfer settled=true (pre-settled): "
                      "there is nothing to acknowledge and BlockingReceiver.accept() would raise IndexError")
        else:
            receiver.accept()
            rec.event("accepted", body=m.body, how="BlockingReceiver.accept(): disposition settled=true, accepted")
        got.append(m.body)
    return got


def close(rec, bc, label):
    rec.event("connection_close", connection=label)
    try:
        bc.close()
        rec.event("connection_closed", connection=label)
    except Exception as e:
        rec.exception("BlockingConnection.close()", e)


def url_proton():
    return "amqp://%s:%d" % (HOST, PROTON_PORT)


def url_rabbit():
    # No credentials: Proton picks SASL ANONYMOUS, which the plugin maps to its default user (guest).
    return "amqp://%s:%d" % (HOST, RABBIT_PORT)


def url_rabbit_tls():
    return "amqps://%s:%d" % (HOST, RABBIT_TLS_PORT)


def ctl(rec, *args, timeout=60):
    cmd = [BROKER, "ctl"] + list(args)
    t0 = now()
    env = dict(os.environ)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    rec.event("rabbitmqctl", argv=list(args), rc=p.returncode, started=iso(t0),
              stdout=p.stdout.strip()[-2000:], stderr=p.stderr.strip()[-1000:])
    return p


# --- scenarios against Proton's example broker (127.0.0.1:5673) --------------------------------

def send_receive(rec, url, q, idle_note, **connect_kw):
    """Three messages sent, then received with credit 3 and accepted; idle while serviced; a clean close."""
    bc = rec.connect("sendrecv", url, heartbeat=2, timeout=10, **connect_kw)
    snd = bc.create_sender(q)
    rec.event("sender_attached", address=q)
    for n in range(1, 4):
        send(rec, snd, n, q)
    rcv = bc.create_receiver(q, credit=3)
    rec.event("receiver_attached", address=q, credit=3)
    got = receive(rec, bc, rcv, 3, q)
    rec.data["result"] = {"sent": 3, "received": len(got), "bodies_match": got == [body_of(n) for n in range(1, 4)]}
    rec.service(bc, 2.2, idle_note)
    close(rec, bc, "sendrecv")


def proton_send_receive(rec):
    send_receive(rec, url_proton(), "amqpscope.sendrecv",
                 "idle while the reactor runs: the broker's empty frames arrive and are read")


def proton_idle_timeout(rec):
    bc = rec.connect("silent", url_proton(), heartbeat=2, timeout=10)
    q = "amqpscope.silent"
    snd = bc.create_sender(q)
    rec.event("sender_attached", address=q)
    send(rec, snd, 1, q)
    silent = 6.0
    rec.event("silent_start", seconds=silent, how="time.sleep() without calling into the reactor: Proton reads "
              "nothing, so the broker's empty frames wait in the socket, and its idle-timeout clock runs")
    time.sleep(silent)
    rec.event("silent_end")
    rec.data["failing_call"] = "BlockingSender.send"
    try:
        send(rec, snd, 2, q)
        rec.event("late_send_returned_without_error")
    except Exception as e:
        rec.exception("BlockingSender.send", e, bc=bc)
    close(rec, bc, "silent")


def proton_broker_frozen(rec):
    pid = int(os.environ["AMQPSCOPE_PROTON_BROKER_PID"])
    rec.data["broker_pid"] = pid
    bc = rec.connect("frozen", url_proton(), heartbeat=2, timeout=20)
    q = "amqpscope.frozen"
    snd = bc.create_sender(q)
    send(rec, snd, 1, q)
    rec.service(bc, 1.0, "healthy: empty frames from the broker")
    stopped = False
    try:
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        rec.event("broker_sigstop", pid=pid, how="os.kill(pid, SIGSTOP): the broker process is frozen, "
                  "its kernel still ACKs")
        rec.data["failing_call"] = "BlockingConnection.wait"
        try:
            rec.service(bc, 8.0, "the client keeps servicing its connection while the broker is frozen")
            rec.event("no_error_while_frozen")
        except Exception as e:
            rec.exception("BlockingConnection.wait", e, bc=bc)
        # What an application does next: close the connection (the broker is still frozen).
        close(rec, bc, "frozen")
        time.sleep(2.0)
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
            rec.event("broker_sigcont", pid=pid)
    time.sleep(1.0)


def rabbitmq10_send_receive(rec):
    send_receive(rec, url_rabbit(), "/queue/amqpscope.amqp10.sendrecv",
                 "idle while the reactor runs: empty frames from the broker every 0.5 s")


TLS_SNI = "localhost"   # the broker's throwaway certificate: CN localhost, SAN DNS:localhost, IP:127.0.0.1


def keylog_summary(path):
    """What the key-log shim wrote: line count per label (CLIENT_HANDSHAKE_TRAFFIC_SECRET, ...) and client randoms."""
    labels, randoms = {}, []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    labels[parts[0]] = labels.get(parts[0], 0) + 1
                    if parts[1] not in randoms:
                        randoms.append(parts[1])
    except OSError as e:
        return {"file": os.path.basename(path), "error": repr(e)}
    return {"file": os.path.basename(path), "lines": sum(labels.values()), "labels": labels,
            "client_randoms": randoms}


def openssl_version():
    """OpenSSL_version(OPENSSL_VERSION) of the libcrypto Proton's C library uses (the system's libcrypto.so.3)."""
    try:
        import ctypes
        lib = ctypes.CDLL("libcrypto.so.3")
        lib.OpenSSL_version.restype = ctypes.c_char_p
        lib.OpenSSL_version.argtypes = [ctypes.c_int]
        return lib.OpenSSL_version(0).decode()
    except (OSError, AttributeError) as e:
        return "unknown (%r)" % e


def rabbitmq10_tls_send_receive(rec):
    """rabbitmq10-send-receive over TLS (AMQPS) to RabbitMQ's TLS listener. Proton's C library does the TLS with
    OpenSSL; the secrets go to $SSLKEYLOGFILE through the LD_PRELOAD shim keylog-shim.c."""
    ca = os.environ.get("AMQPSCOPE_TLS_CA")
    keylog = os.environ.get("SSLKEYLOGFILE")
    if not ca or not keylog or not PRELOADED:
        raise RuntimeError("rabbitmq10-tls-send-receive needs AMQPSCOPE_TLS_CA, SSLKEYLOGFILE and the key-log shim "
                           "in LD_PRELOAD (scripts/record-captures-amqp10 sets them)")
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(ca)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    rec.data["tls_requested"] = {"ssl_domain": "SSLDomain(MODE_CLIENT), set_trusted_ca_db(the broker's throwaway CA), "
                                               "set_peer_authentication(VERIFY_PEER_NAME)",
                                 "sni": TLS_SNI, "ca_file": os.path.basename(ca),
                                 "keylog": {"env": "SSLKEYLOGFILE", "file": os.path.basename(keylog),
                                            "shim": os.path.basename(PRELOADED),
                                            "how": "LD_PRELOAD shim (scripts/captures/keylog-shim.c) wrapping "
                                                   "SSL_new() to install SSL_CTX_set_keylog_callback()"}}
    try:
        send_receive(rec, url_rabbit_tls(), "/queue/amqpscope.amqp10.tls-sendrecv",
                     "idle while the reactor runs: empty frames from the broker every 0.5 s",
                     ssl_domain=domain, sni=TLS_SNI,
                     shown={"ssl_domain": rec.data["tls_requested"]["ssl_domain"]})
    finally:
        kl = keylog_summary(keylog)
        kl["source"] = "the key log file after the client closed (written by the LD_PRELOAD shim)"
        conn = next((c for c in rec.data["connections"] if c.get("tls")), None)
        rec.data["tls"] = dict((conn or {}).get("tls") or {}, keylog=kl, openssl=openssl_version())


SASL_OUTCOMES = {SASL.OK: "ok", SASL.AUTH: "auth", SASL.SYS: "sys", SASL.PERM: "sys-perm", SASL.TEMP: "sys-temp"}


def broker_closed_from_log(client_port, seconds):
    """Waits (at most `seconds`) for the broker log's 'closing AMQP connection <pid> (127.0.0.1:PORT -> ' line."""
    path = subprocess.run([BROKER, "log-path"], capture_output=True, text=True).stdout.strip()
    pat = re.compile(r"closing AMQP connection <[\d.]+> \(127\.0\.0\.1:%d -> " % client_port)
    end = now() + seconds
    while now() < end:
        try:
            with open(path, errors="replace") as f:
                if any(pat.search(line) for line in f):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def rabbitmq10_sasl_failure(rec):
    """SASL PLAIN with a wrong password (user guest): RabbitMQ's 1.0 plugin answers sasl-outcome code 1 (auth), but
    only 3 s after the sasl-init (its delay before refusing a login), and closes the socket 3 s after that. So no
    heartbeat= here (Proton's idle clock runs during SASL too: heartbeat=2 would give up before the outcome) and a
    connection timeout of 15 s."""
    user, password = "guest", "amqpscope-wrong-password"
    rec.data["credentials_given"] = {"user": user, "password": "<redacted: deliberately wrong, not guest's>",
                                     "mechanism": "PLAIN (allowed_mechs='PLAIN', allow_insecure_mechs=True: "
                                                  "PLAIN without TLS)"}
    rec.data["failing_call"] = "BlockingConnection"
    try:
        bc = rec.connect("saslfail", url_rabbit(), timeout=15, user=user, password=password,
                         allowed_mechs="PLAIN", allow_insecure_mechs=True)
        rec.event("connected_unexpectedly")
        close(rec, bc, "saslfail")
    except Exception as e:
        rec.exception("BlockingConnection", e)
    t = rec.transports.get("saslfail")
    if t is not None:
        sasl = t.sasl()
        outcome = sasl.outcome
        rec.data["sasl"] = {"mechanism": sasl.mech, "outcome": outcome, "outcome_name": SASL_OUTCOMES.get(outcome),
                            "transport_condition": cond(t.condition),
                            "source": "proton SASL object of the connection's transport after BlockingConnection() "
                                      "raised: mech, outcome (pn_sasl_outcome: the code of the sasl-outcome Proton "
                                      "read; None if it read none); the transport's condition"}
    port = next((c.get("client_port") for c in rec.data["connections"] if c["label"] == "saslfail"), None)
    if port:
        closed = broker_closed_from_log(port, 8.0)
        rec.event("broker_closed" if closed else "broker_close_not_logged_within_8s", client_port=port,
                  source="broker log 'closing AMQP connection' line for this client port (polled)")


def rabbitmq10_heartbeat_under_1s(rec):
    """heartbeat=1.5: Proton advertises idle-time-out 750 ms (half) and expects data within 1.5 s. RabbitMQ
    3.10 turns the advertised value into whole seconds (750 div 1000 = 0) and so sends no empty frames."""
    bc = rec.connect("hb750", url_rabbit(), heartbeat=1.5, timeout=10)
    rec.data["failing_call"] = "BlockingConnection.wait"
    try:
        rec.service(bc, 4.0, "client advertises idle-time-out 750 ms: does the broker send empty frames?")
        rec.event("no_error_within_4s")
    except Exception as e:
        rec.exception("BlockingConnection.wait", e, bc=bc)
    close(rec, bc, "hb750")


def rabbitmq10_not_found(rec):
    bc = rec.connect("notfound", url_rabbit(), heartbeat=2, timeout=5)
    addr = "/amq/queue/amqpscope.amqp10.missing"
    rec.data["failing_call"] = "BlockingConnection.create_receiver"
    try:
        rec.event("create_receiver", address=addr, note="/amq/queue/NAME names an existing queue only")
        bc.create_receiver(addr, credit=1)
        rec.event("receiver_attached_unexpectedly", address=addr)
    except Exception as e:
        rec.exception("BlockingConnection.create_receiver", e, bc=bc)
    close(rec, bc, "notfound")


def rabbitmq10_idle_timeout(rec):
    """The client silent past the broker's receive timeout: rabbit.heartbeat lowered to 2 s for this
    connection's Open only (the 1.0 reader reads it once, at Open: it advertises heartbeat*1000 ms and
    expects data within 2*heartbeat s), restored right after."""
    p = ctl(rec, "eval", "application:get_env(rabbit, heartbeat).")
    old = re.search(r"\{ok,(\d+)\}", p.stdout)
    old = int(old.group(1)) if old else 60
    rec.data["rabbit_heartbeat_before"] = old
    ctl(rec, "eval", "application:set_env(rabbit, heartbeat, 2).")
    try:
        bc = rec.connect("silent", url_rabbit(), heartbeat=10, timeout=10)
    finally:
        ctl(rec, "eval", "application:set_env(rabbit, heartbeat, %d)." % old)
    q = "/queue/amqpscope.amqp10.silent"
    snd = bc.create_sender(q)
    send(rec, snd, 1, q)
    silent = 16.0
    rec.event("silent_start", seconds=silent, how="time.sleep() without calling into the reactor")
    time.sleep(silent)
    rec.event("silent_end")
    rec.data["failing_call"] = "BlockingSender.send"
    try:
        send(rec, snd, 2, q)
        rec.event("late_send_returned_without_error")
    except Exception as e:
        rec.exception("BlockingSender.send", e, bc=bc)
    close(rec, bc, "silent")


def rabbitmq10_local_idle_timeout(rec):
    """The 1.0 twin of the seed incident: Proton (heartbeat=2: advertises 1000 ms, expects data within 2 s)
    sleeps 5 s; RabbitMQ's empty frames (every 0.5 s) sit unread; on waking Proton's own idle clock fires first."""
    bc = rec.connect("localidle", url_rabbit(), heartbeat=2, timeout=10)
    q = "/queue/amqpscope.amqp10.localidle"
    snd = bc.create_sender(q)
    send(rec, snd, 1, q)
    silent = 5.0
    rec.event("silent_start", seconds=silent, how="time.sleep() without calling into the reactor")
    time.sleep(silent)
    rec.event("silent_end")
    rec.data["failing_call"] = "BlockingSender.send"
    try:
        send(rec, snd, 2, q)
        rec.event("late_send_returned_without_error")
    except Exception as e:
        rec.exception("BlockingSender.send", e, bc=bc)
    close(rec, bc, "localidle")


def reader_pid_from_log(client_port, tries=20):
    """The Erlang pid of the broker's connection process, from its 'accepting AMQP connection <0.N.0>
    (127.0.0.1:PORT -> ...)' log line: RabbitMQ 3.10 does not list AMQP 1.0 connections in list_connections."""
    path = subprocess.run([BROKER, "log-path"], capture_output=True, text=True).stdout.strip()
    pat = re.compile(r"accepting AMQP connection (<[\d.]+>) \(127\.0\.0\.1:%d -> " % client_port)
    for _ in range(tries):
        with open(path, errors="replace") as f:
            m = None
            for line in f:
                m = pat.search(line) or m
        if m:
            return m.group(1), path
        time.sleep(0.25)
    return None, path


def rabbitmq10_connection_forced(rec):
    """The operator closes the connection. `rabbitmqctl close_connection` is tried first, as for 0-9-1; RabbitMQ
    3.10 does not list AMQP 1.0 connections (list_connections shows none), and close_connection then only
    logs a warning. So the operator's second try does, through `rabbitmqctl eval`, the call close_connection
    makes once it has found a connection: rabbit_reader:shutdown(Pid, Reason)."""
    bc = rec.connect("forced", url_rabbit(), heartbeat=2, timeout=30)
    info = rec.data["connections"][-1]
    q = "/queue/amqpscope.amqp10.forced"
    snd = bc.create_sender(q)
    send(rec, snd, 1, q)
    reason = "amqpscope test: closed by operator"
    rec.data["close_reason_given"] = reason

    def operator():
        time.sleep(1.0)
        ctl(rec, "list_connections", "--silent", "pid", "peer_port", "protocol")
        pid, path = reader_pid_from_log(info.get("client_port"))
        rec.data["broker_connection_pid"] = pid
        rec.event("broker_connection_pid_found", pid=pid, source="broker log 'accepting AMQP connection' line in " + path)
        if not pid:
            return
        p = ctl(rec, "eval", 'rabbit_misc:pid_to_string(list_to_pid("%s")).' % pid)
        m = re.search(r"<[^<>]+>", p.stdout)
        full = m.group(0) if m else pid
        rec.event("close_connection_requested", broker_connection_pid=full, reason=reason, how="rabbitmqctl close_connection")
        ctl(rec, "close_connection", full, reason)
        time.sleep(2.0)
        rec.event("close_connection_requested", broker_connection_pid=pid, reason=reason,
                  how="rabbitmqctl eval rabbit_reader:shutdown(Pid, Reason) (what close_connection calls)")
        ctl(rec, "eval", 'rabbit_reader:shutdown(list_to_pid("%s"), <<"%s">>).' % (pid, reason))

    op = threading.Thread(target=operator, name="operator")
    op.start()
    rec.data["failing_call"] = "BlockingConnection.wait"
    try:
        rec.service(bc, 20.0, "idle in the reactor while the operator closes the connection")
        rec.event("not_closed_within_20s")
    except Exception as e:
        rec.exception("BlockingConnection.wait", e, bc=bc)
    op.join(60)
    close(rec, bc, "forced")


SCENARIOS = {
    "proton-send-receive": proton_send_receive,
    "proton-idle-timeout": proton_idle_timeout,
    "proton-broker-frozen": proton_broker_frozen,
    "rabbitmq10-send-receive": rabbitmq10_send_receive,
    "rabbitmq10-heartbeat-under-1s": rabbitmq10_heartbeat_under_1s,
    "rabbitmq10-not-found": rabbitmq10_not_found,
    "rabbitmq10-idle-timeout": rabbitmq10_idle_timeout,
    "rabbitmq10-local-idle-timeout": rabbitmq10_local_idle_timeout,
    "rabbitmq10-connection-forced": rabbitmq10_connection_forced,
    "rabbitmq10-tls-send-receive": rabbitmq10_tls_send_receive,
    "rabbitmq10-sasl-failure": rabbitmq10_sasl_failure,
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        print("usage: amqp10_scenarios.py {%s} OUT.json" % "|".join(SCENARIOS), file=sys.stderr)
        return 2
    name, out = sys.argv[1], sys.argv[2]
    rec = Recorder(name, out)
    rc = 0
    try:
        SCENARIOS[name](rec)
    except Exception as e:
        fail_hard(rec, e)
        print("amqp10_scenarios.py %s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        rc = 1
    finally:
        rec.write()
    return rc


if __name__ == "__main__":
    sys.exit(main())
