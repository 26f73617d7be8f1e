#!/usr/bin/env python3
"""Builds captures/NAME.truth.json from what the client and the broker recorded during a scenario.

Inputs (all written by scripts/record-captures):
  --client        the client's JSON (scripts/captures/scenarios.py): actions, exceptions, errno, tune
  --broker-log    the bytes the broker appended to its log file while the scenario ran
  --broker-version, --listen-options   `rabbitmqctl version` and the broker's tcp_listen_options
  --pcap, --tcpdump-stderr             the capture file and tcpdump's own statistics
  --amqp-port, --keylog                the broker's port; for TLS captures (port 5671) the client's NSS
                                       key log, with which tshark decrypts the capture
  --proxy-port                         haproxy-idle: the proxy's port (a second AMQP port on the capture)
  --full-twin, --snaplen               clean-close-s96: the -s 0 twin of the cut capture, which tshark decodes
  --broker-log-format                  missed-heartbeats-jsonlog: json (RabbitMQ's JSON log formatter)
  (broker-restart needs no option: the operator's rabbitmqctl calls are in the client's events)

Sections of the output:
  client, broker_log, broker    ground truth as the two programs recorded it
  expect                        the facts a decoder should find, each with a "source" naming the
                                log line / exception / pika hook it was taken from
  capture_observed              what tshark decodes from the pcap (a cross-check, NOT ground truth);
                                TLS captures are decrypted with the key log
  checks                        expect vs capture_observed, for the one-line summary
Prints one summary line on stdout.
"""

import argparse
import datetime
import errno as errno_mod
import json
import os
import re
import subprocess
import sys

from tshark_tcp import tcp_packets

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d) \[(\w+)\] <([\d.]+)> ?(.*)$")
CONN_ADDR = re.compile(r"\((\d+\.\d+\.\d+\.\d+):(\d+) -> (\d+\.\d+\.\d+\.\d+):(\d+)")
CONN_PID = re.compile(r"connection <([\d.]+)>")
AMQP_PORT = 5672


# --- broker log ------------------------------------------------------------------------------

def parse_broker_log(text):
    """Log entries; continuation lines (same timestamp, level and pid) are joined with newlines. Lines of
    RabbitMQ's JSON log formatter (log.file.formatter = json: one object per entry with time, level, msg, pid,
    domain) are entries of their own, with "format": "json"."""
    entries = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            try:
                j = json.loads(raw)
            except ValueError:
                j = None
            if isinstance(j, dict) and "time" in j and "msg" in j:
                e = {"time_raw": j["time"], "level": j.get("level"), "erlang_pid": str(j.get("pid") or "").strip("<>"),
                     "message": str(j["msg"]), "format": "json"}
                if j.get("domain"):
                    e["domain"] = j["domain"]
                entries.append(e)
                continue
        m = LOG_LINE.match(raw)
        if not m:
            if entries and raw.strip():
                entries[-1]["message"] += "\n" + raw.strip()
            continue
        ts, level, pid, msg = m.groups()
        last = entries[-1] if entries else None
        if last and last["time_raw"] == ts and last["level"] == level and last["erlang_pid"] == pid:
            last["message"] += "\n" + msg
            continue
        entries.append({"time_raw": ts, "level": level, "erlang_pid": pid, "message": msg})
    for e in entries:
        t = datetime.datetime.fromisoformat(e["time_raw"])
        e["t"] = t.timestamp()
        e["time"] = t.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")
        del e["time_raw"]
        m = CONN_ADDR.search(e["message"])
        if m:
            e["client_port"] = int(m.group(2))
            e["broker_port"] = int(m.group(4))
        m = CONN_PID.search(e["message"])
        if m:
            e["connection_pid"] = m.group(1)
        e["kind"] = classify(e["message"])
    return entries


def own_entries(entries, client_ports):
    """(entries of this scenario, number left out): other clients may use the broker at the same time
    (e.g. AMQP 1.0 recordings), so lines that name another connection's port or Erlang pid are left out.
    Lines that name no connection (memory alarms, ...) are kept."""
    ours = set(p for p in client_ports if p)
    own_pids, foreign_pids = set(), set()
    for e in entries:
        if "client_port" in e:
            (own_pids if e["client_port"] in ours else foreign_pids).update(
                p for p in (e["erlang_pid"], e.get("connection_pid")) if p)
    for e in entries:  # e.g. "Closing session for connection <0.x.0>" of another client's connection
        if "client_port" not in e and e.get("connection_pid") and e["connection_pid"] not in own_pids:
            foreign_pids.update((e["erlang_pid"], e["connection_pid"]))
    foreign_pids -= own_pids
    keep = [e for e in entries if not ("client_port" in e and e["client_port"] not in ours)
            and e["erlang_pid"] not in foreign_pids and e.get("connection_pid") not in foreign_pids]
    return keep, len(entries) - len(keep)


def classify(msg):
    rules = [
        ("accepting", "accepting AMQP connection"),
        ("client_name", "has a client-provided name"),
        ("authenticated", "authenticated and granted access"),
        ("missed_heartbeats", "missed heartbeats from client"),
        ("connection_exception", "caused a connection exception"),
        ("connection_forced", "CONNECTION_FORCED"),
        ("close_connection_request", "Closing connection"),
        ("channel_error", "caused a channel exception"),
        ("closing", "closing AMQP connection"),
        ("client_closed_tcp", "client unexpectedly closed TCP connection"),
        ("memory_alarm_set", "alarm set"),
        ("memory_alarm_cleared", "alarm cleared"),
        ("publishers_blocked", "Publishers will be blocked"),
        ("watermark", "high watermark"),
    ]
    for kind, needle in rules:
        if needle in msg:
            return kind
    return "other"


def find(entries, kind, port=None):
    return [e for e in entries if e["kind"] == kind and (port is None or e.get("client_port") == port)]


def log_src(e):
    first = e["message"].replace("\n", " ")
    return "broker log %s [%s] %s" % (e["time"], e["level"], first[:220])


# --- capture (tshark) ------------------------------------------------------------------------

def tshark_json(pcap, port=AMQP_PORT, keylog=None, proxy_port=None, ip=False):
    """proxy_port: also dissect that port as AMQP (haproxy-idle's frontend); ip: keep the ip/ipv6 layers."""
    cmd = ["tshark", "-r", pcap, "-T", "json", "--no-duplicate-keys", "-J",
           "frame ip ipv6 tcp amqp" if ip else "frame tcp amqp"]
    if proxy_port:
        cmd[3:3] = ["-d", "tcp.port==%d,amqp" % proxy_port]
    if keylog:  # decrypt with the client's key log; AMQP is then dissected inside the TLS records
        cmd[-1] += " tls"
        cmd[3:3] = ["-o", "tls.keylog_file:" + keylog, "-d", "tcp.port==%d,tls" % port]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        print("make_truth: tshark failed: %r" % e, file=sys.stderr)
        return None


def as_list(v):
    return v if isinstance(v, list) else [] if v is None else [v]


_CIPHERS = None


def cipher_names():
    """{"0x1302": (IANA name, OpenSSL name)} from this machine's `openssl ciphers -V -stdname`."""
    global _CIPHERS
    if _CIPHERS is None:
        _CIPHERS = {}
        try:
            out = subprocess.run(["openssl", "ciphers", "-V", "-stdname", "ALL:@SECLEVEL=0"],
                                 capture_output=True, text=True, timeout=30).stdout
        except OSError:
            out = ""
        for line in out.splitlines():
            m = re.match(r"\s*0x([0-9A-F]{2}),0x([0-9A-F]{2}) - (\S+)\s+- (\S+)", line)
            if m:
                _CIPHERS["0x" + (m.group(1) + m.group(2)).lower()] = (m.group(3), m.group(4))
    return _CIPHERS


def iana_cipher(name):
    """IANA name of a cipher suite given by its OpenSSL name (as Python's ssl reports it) or its code."""
    for code, (iana, openssl_name) in cipher_names().items():
        if name in (code, iana, openssl_name):
            return iana
    return None


TLS_VERSIONS = {"0x0304": "TLSv1.3", "0x0303": "TLSv1.2", "0x0302": "TLSv1.1", "0x0301": "TLSv1"}
TLS_CONTENT = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}


def observe_tls(s, side, num, t, tls, amqp_types, amqp_layer):
    """Adds one packet's TLS records to stream s["tls"]: handshake parameters, record sizes by inner
    content type, the record length of packets that carry nothing but one heartbeat frame, alerts."""
    o = s.setdefault("tls", {"version": None, "cipher_suite": None, "cipher_suite_code": None, "sni": None,
                             "records": {"client": {}, "broker": {}}, "app_data_records_without_amqp": 0,
                             "heartbeat_record_lengths": {"client": [], "broker": []}, "alerts": []})
    records = [r for layer in as_list(tls) for r in as_list(layer.get("tls.record"))]
    for r in records:
        outer = int(r.get("tls.record.opaque_type") or r.get("tls.record.content_type") or 0)
        inner = int(r.get("tls.record.content_type") or 0)
        if inner in (0, 23) and not amqp_layer:
            # application data (or a TLS 1.3 record tshark could not decrypt) in a packet in which tshark
            # decoded no AMQP frame: not decrypted (or a frame continued in a later record). The client's
            # first one is the protocol header, which tshark -T json shows without an amqp layer.
            if side == "client" and not o.get("_client_app_data_seen"):
                o["_client_app_data_seen"] = True
            else:
                o["app_data_records_without_amqp"] += 1
        if inner in (0, 23) and side == "client":
            o["_client_app_data_seen"] = True
        kind = TLS_CONTENT.get(inner, str(inner))
        length = int(r.get("tls.record.length", 0))
        c = o["records"][side].setdefault(kind, {"count": 0, "lengths": {}})
        c["count"] += 1
        c["lengths"][str(length)] = c["lengths"].get(str(length), 0) + 1
        for h in as_list(r.get("tls.handshake")):
            if not isinstance(h, dict):  # an encrypted handshake message tshark could not decrypt
                continue
            ht = h.get("tls.handshake.type")
            if ht == "1":  # ClientHello: SNI
                for k, v in h.items():
                    if k.startswith("Extension: server_name") and isinstance(v, dict):
                        o["sni"] = v.get("Server Name Indication extension", {}).get("tls.handshake.extensions_server_name")
            if ht == "2":  # ServerHello: cipher suite, version (supported_versions for 1.3)
                code = h.get("tls.handshake.ciphersuite")
                o["cipher_suite_code"] = code
                o["cipher_suite"] = (cipher_names().get(code) or (code,))[0]
                ver = h.get("tls.handshake.version")
                for k, v in h.items():
                    if k.startswith("Extension: supported_versions") and isinstance(v, dict):
                        ver = v.get("tls.handshake.extensions.supported_version", ver)
                o["version"] = TLS_VERSIONS.get(ver, ver)
        for a in as_list(r.get("tls.alert_message")):
            if not isinstance(a, dict):  # an encrypted alert tshark could not decrypt
                continue
            # outer_content_type 23: a TLS 1.3 record (alert hidden as application data); 21: TLS 1.2
            # (encrypted too, but the record header says alert)
            o["alerts"].append({"frame": num, "t": t, "from": side, "outer_content_type": outer,
                                "record_length": length,
                                "level": int(a.get("tls.alert_message.level", -1)),
                                "description": int(a.get("tls.alert_message.desc", -1)),
                                "name": {0: "close_notify", 10: "unexpected_message", 40: "handshake_failure",
                                         80: "internal_error", 90: "user_canceled"}.get(
                                    int(a.get("tls.alert_message.desc", -1)))})
    if amqp_types == [8] and len(records) == 1:
        hl = o["heartbeat_record_lengths"][side]
        length = int(records[0].get("tls.record.length", 0))
        if length not in hl:
            hl.append(length)


def wire_detail(a):
    """An AMQP frame as tshark decoded it, described like common.py describes pika's frames."""
    ty = int(a["amqp.type"])
    if ty == 1:
        return "%s.%s" % (a.get("amqp.method.class"), a.get("amqp.method.method"))
    if ty == 2:
        return "body_size=%s" % a.get("amqp.header.body-size")
    if ty == 3:
        return "%s bytes" % a.get("amqp.length")
    return "heartbeat" if ty == 8 else "size=%s" % a.get("amqp.length")


_METHOD_IDS = None


def pika_frame(f):
    """[side, type, channel, detail] of a frame in client.frames ([t, sent|recv, type, channel, detail]),
    with method names turned into class.method ids (pika.spec) as on the wire."""
    global _METHOD_IDS
    if _METHOD_IDS is None:
        import pika.spec
        _METHOD_IDS = {cls.NAME: "%d.%d" % (idx >> 16, idx & 0xFFFF) for idx, cls in pika.spec.methods.items()}
    _, direction, ty, channel, detail = f
    if ty == 1:
        detail = _METHOD_IDS.get(re.sub(r"\(\d+\)$", "", detail), detail)
    return ["client" if direction == "sent" else "broker", ty, channel, detail]


def compare_frames(s, client, pika_port=None):
    """s["frames_vs_pika"]: the AMQP frames tshark decoded in each direction of stream s against the frames
    pika handed to its transport (client->broker) and decoded (broker->client). pika_port: compare with the
    frames of pika's connection from that port instead of s's own (a proxy's leg to the broker)."""
    frames = client.get("frames") or {}
    wire = s["frame_list"]
    raw = [f for f in frames.get(str(pika_port or s["client_port"]), []) if f[2] != "protocol-header"]
    mine = [pika_frame(f) for f in raw]
    sent_times = [f[0] for f in raw if f[1] == "sent"]
    # the connection's first FIN or RST on the wire: frames pika handed over after it may miss the wire
    closed_at = min((e["t"] for e in s["close_sequence"]), default=None)
    client_closed_at = min((e["t"] for e in s["close_sequence"] if e["from"] == "client"), default=None)
    out = {"source": "client.frames (pika hooks) vs the AMQP frames tshark decodes; the protocol header "
                     "is left out (pika's Connection.Start wait); frames compared as [type, channel, "
                     "class.method | body_size | body length | heartbeat]"}
    if pika_port:
        out["pika_connection"] = pika_port
        out["source"] += ("; this leg's frames are compared with those of pika's connection from port %d (haproxy "
                          "relays the bytes unchanged)" % pika_port)
    for d, side, who in (("client_to_broker", "client", "pika sent"), ("broker_to_client", "broker", "pika decoded")):
        w = [f[1:4] for f in wire if f[0] == side]
        w_times = [f[4] for f in wire if f[0] == side]
        p = [f[1:] for f in mine if f[0] == side]
        if w == p:
            match = "equal"
        elif side == "client" and p[:len(w)] == w and closed_at is not None and all(
                t >= closed_at for t in sent_times[len(w):]):
            match = ("the wire is a prefix of what %s: its last %d frames, handed over after the connection's "
                     "first FIN/RST, never reached the wire" % (who, len(p) - len(w)))
        elif side == "broker" and w[:len(p)] == p:
            match = "%s a prefix of the wire: the broker's last %d frames were never decoded by pika" % (who, len(w) - len(p))
        else:
            match = "different"
        out[d] = {"on_wire": len(w), who.replace(" ", "_"): len(p), "match": match}
        if match.startswith("the wire is"):
            out[d]["not_on_wire"] = p[len(w):]
        elif match != "equal" and side == "broker" and match != "different":
            out[d]["not_decoded_by_pika"] = w[len(p):]
            # e.g. a heartbeat the broker sent after pika had closed its socket
            out[d]["all_after_client_fin_or_rst"] = client_closed_at is not None and all(
                t > client_closed_at for t in w_times[len(p):])
        elif match == "different":
            first = next((i for i, (a, b) in enumerate(zip(w, p)) if a != b), min(len(w), len(p)))
            out[d]["first_difference"] = {"index": first, "wire": w[first:first + 3], "pika": p[first:first + 3]}
    s["frames_vs_pika"] = out


BASIC_METHODS = {"60.10": "basic.qos", "60.40": "basic.publish", "60.50": "basic.return", "60.60": "basic.deliver",
                 "60.80": "basic.ack", "60.90": "basic.reject", "60.120": "basic.nack"}
_BASIC_ARGS_INT = ("delivery_tag", "multiple", "requeue", "redelivered", "publish_number", "prefetch_count",
                   "reply_code")
_BASIC_ARGS_STR = ("reply_text", "routing_key", "exchange")


def _basic_entry(num, t, side, channel, method, args):
    """One basic-class method on the wire with the arguments the flow scenario needs (tshark's names)."""
    b = {"frame": num, "t": round(t, 6), "from": side, "channel": channel, "method": method,
         "name": BASIC_METHODS.get(method, method)}
    for k in _BASIC_ARGS_INT:
        if "amqp.method.arguments." + k in args:
            b[k] = int(args["amqp.method.arguments." + k])
    for k in _BASIC_ARGS_STR:
        if "amqp.method.arguments." + k in args:
            b[k] = args["amqp.method.arguments." + k]
    return b


def observe(pcap, port=AMQP_PORT, keylog=None, client=None, kind=None, proxy_port=None):
    """What tshark decodes, per TCP connection; with client (client.json), each connection's frames are
    compared with pika's (compare_frames). kind flow-confirms-acks adds per-connection method counts and the
    flow on the wire (observe_flow); missed-heartbeats-fin and haproxy-idle the client's data segments after the
    broker's (haproxy's) FIN. refused-then-connected and haproxy-idle add each connection's addresses and SYNs.
    proxy_port (haproxy-idle): connections to it are the client->haproxy leg, those to port the haproxy->broker
    leg, compared with the frames of pika's connection to the proxy."""
    addresses = kind in ("refused-then-connected", "haproxy-idle")
    pkts = tshark_json(pcap, port, keylog, proxy_port, ip=addresses)
    if pkts is None:
        return None
    streams = {}
    flow = kind == "flow-confirms-acks"
    restart = kind == "broker-restart"
    fin = kind in ("missed-heartbeats-fin", "haproxy-idle")
    fields = lambda: {"amqp_frames": {"client": {}, "broker": {}}, "frame_list": [],
                      "heartbeats": {"client": [], "broker": []},
                      "methods": [], "close_sequence": [], "tune": None, "tune_ok": None,
                      **({"method_counts": {"client": {}, "broker": {}}, "basic": []} if flow else {})}
    for s, side, L, num, t in tcp_packets(pkts, (port, proxy_port) if proxy_port else port, streams, fields):
        amqp = [a for a in as_list(L.get("amqp")) if "amqp.type" in a]
        if addresses:
            observe_addresses(s, side, L, num, t)
        if fin:
            tcp_len = int(L["tcp"].get("tcp.len", 0))
            broker_fin = next((e for e in s["close_sequence"] if e["from"] == "broker" and "FIN" in e["flags"]), None)
            if broker_fin is not None and "data_after_broker_fin" not in s:
                s["data_after_broker_fin"] = {
                    "broker_fin_frame": broker_fin["frame"], "broker_fin_t": broker_fin["t"], "client_segments": [],
                    "source": "tshark: client TCP segments with payload after the broker's first FIN"}
            if broker_fin is not None and side == "client" and tcp_len > 0 and num > broker_fin["frame"]:
                s["data_after_broker_fin"]["client_segments"].append({
                    "frame": num, "t": round(t, 6), "tcp_len": tcp_len,
                    "amqp_frames": [wire_detail(a) for a in amqp]})
        if keylog:
            observe_tls(s, side, num, t, L.get("tls"), [int(a["amqp.type"]) for a in amqp], bool(L.get("amqp")))
        for a in amqp:
            ty = int(a["amqp.type"])
            s["frame_list"].append([side, ty, int(a.get("amqp.channel", -1)), wire_detail(a), t])
            counts = s["amqp_frames"][side]
            counts[str(ty)] = counts.get(str(ty), 0) + 1
            if ty == 8:
                s["heartbeats"][side].append(round(t, 6))
            if ty == 1:
                cls, meth = int(a.get("amqp.method.class", -1)), int(a.get("amqp.method.method", -1))
                args = a.get("amqp.method.arguments", {}) or {}
                entry = {"frame": num, "from": side, "channel": int(a.get("amqp.channel", -1)),
                         "method": "%d.%d" % (cls, meth)}
                if restart:
                    entry["t"] = round(t, 6)
                if "amqp.method.arguments.reply_code" in args:
                    entry["reply_code"] = int(args["amqp.method.arguments.reply_code"])
                    entry["reply_text"] = args.get("amqp.method.arguments.reply_text")
                s["methods"].append(entry)
                if flow:
                    mc = s["method_counts"][side]
                    mc[entry["method"]] = mc.get(entry["method"], 0) + 1
                    if cls in (60, 85):
                        s["basic"].append(_basic_entry(num, t, side, entry["channel"], entry["method"], args))
                if (cls, meth) in ((10, 30), (10, 31)):
                    s["tune" if meth == 30 else "tune_ok"] = {
                        k: int(args["amqp.method.arguments." + k]) for k in ("channel_max", "frame_max", "heartbeat")
                        if "amqp.method.arguments." + k in args}
            if ty == 2 and flow:
                # the message id of the content that follows a publish / return / deliver on this channel
                mid = (a.get("amqp.header.properties") or {}).get("amqp.method.properties.message_id")
                ch = int(a.get("amqp.channel", -1))
                for b in reversed(s["basic"]):
                    if b["from"] == side and b["channel"] == ch:
                        if b["method"] in ("60.40", "60.50", "60.60") and "message_id" not in b:
                            b["message_id"] = mid
                        break
    out = {"source": "tshark -T json on the capture (decoder cross-check, not ground truth)"
                     + (", decrypted with -o tls.keylog_file:%s -d tcp.port==%d,tls" % (os.path.basename(keylog), port)
                        if keylog else ""),
           "packets": len(pkts), "tcp_connections": len(streams), "connections": []}
    pika_ports = [c.get("client_port") for c in (client or {}).get("connections", [])]
    for s in sorted(streams.values(), key=lambda x: x["first_frame"]):
        (s.get("tls") or {}).pop("_client_app_data_seen", None)
        via = None
        if proxy_port:
            s["leg"] = "client->haproxy" if s["broker_port"] == proxy_port else "haproxy->broker"
            if s["leg"] == "haproxy->broker" and len(pika_ports) == 1:
                via = pika_ports[0]
        if client is not None:
            compare_frames(s, client, via)
        del s["frame_list"]
        hb = s.pop("heartbeats")
        s["heartbeat_frames"] = {k: len(v) for k, v in hb.items()}
        s["heartbeat_times"] = hb if sum(len(v) for v in hb.values()) <= 40 else None
        if len(s["methods"]) > 60:
            s["methods_truncated"] = len(s["methods"]) - 60
            s["methods"] = s["methods"][:60]
        if flow:
            s["flow"] = observe_flow(s.pop("basic"))
        out["connections"].append(s)
    if flow:
        totals = {"client_to_broker": {}, "broker_to_client": {}}
        for s in out["connections"]:
            for side, d in (("client", "client_to_broker"), ("broker", "broker_to_client")):
                for m, name in BASIC_METHODS.items():
                    totals[d][name] = totals[d].get(name, 0) + s["method_counts"][side].get(m, 0)
        out["basic_method_counts"] = dict(totals, source="tshark -Y amqp: amqp.method.class / amqp.method.method of "
                                                         "every method frame, all connections")
    if restart:
        out["broker_connection_closes"] = observe_restart_closes(out["connections"])
    return out


def observe_restart_closes(conns):
    """broker-restart: the Connection.Close frames the broker sent (all connections), how far apart they are, and
    how the connections' TCP closes went after them."""
    closes = [dict(m, client_port=s["client_port"]) for s in conns for m in s["methods"]
              if m["method"] == "10.50" and m["from"] == "broker"]
    ts = sorted(m["t"] for m in closes)
    after = {}
    for s in conns:
        close_t = min((m["t"] for m in s["methods"] if m["method"] == "10.50" and m["from"] == "broker"), default=None)
        seq = " ".join("%s:%s" % (e["from"], "RST" if "RST" in e["flags"] else "FIN") for e in s["close_sequence"]
                       if close_t is None or e["t"] >= close_t)
        after[seq or "none"] = after.get(seq or "none", 0) + 1
    client_close_ok = [s["client_port"] for s in conns for m in s["methods"] if m["method"] == "10.51" and m["from"] == "client"]
    return {
        "count": len(closes),
        "connections_with_one": len({m["client_port"] for m in closes}),
        "reply": sorted({"%s %s" % (m.get("reply_code"), m.get("reply_text")) for m in closes}),
        "first_frame": min((m["frame"] for m in closes), default=None),
        "last_frame": max((m["frame"] for m in closes), default=None),
        "first_t": ts[0] if ts else None, "last_t": ts[-1] if ts else None,
        "first_time": iso_t(ts[0]) if ts else None, "last_time": iso_t(ts[-1]) if ts else None,
        "spread_ms": round((ts[-1] - ts[0]) * 1000, 3) if ts else None,
        "close_ok_from_client": len(client_close_ok),
        "tcp_close_after_it": after,
        "tcp_close_after_it_meaning": "per connection, its FIN/RST packets from the broker's Connection.Close on, in "
                                      "capture order: how many connections ended that way",
        "source": "tshark: amqp.method.class 10, amqp.method.method 50 from port 5672 (frame.time_epoch), per "
                  "connection; Close-Ok (10.51) from clients; tcp.flags FIN/RST"}


def observe_addresses(s, side, L, num, t):
    """The stream's IP addresses (ip or ipv6 layer) and its SYNs: enough to tell a refused connect (SYN, RST)
    from an established one."""
    ip = L.get("ipv6") or L.get("ip") or {}
    src = ip.get("ipv6.src") or ip.get("ip.src")
    dst = ip.get("ipv6.dst") or ip.get("ip.dst")
    if "client_addr" not in s:
        s["ip_version"] = 6 if L.get("ipv6") else 4
        s["client_addr"], s["server_addr"] = (src, dst) if side == "client" else (dst, src)
    ft = (L.get("tcp") or {}).get("tcp.flags_tree", {})
    syn, ack = ft.get("tcp.flags.syn") == "1", ft.get("tcp.flags.ack") == "1"
    if syn:
        s.setdefault("syns", []).append({"frame": num, "t": round(t, 6), "from": side,
                                         "flags": "SYN,ACK" if ack else "SYN"})


def pcap_snaplen(path):
    """The snap length in a pcap file's global header (what tcpdump -s wrote), or None."""
    try:
        with open(path, "rb") as f:
            h = f.read(24)
    except OSError:
        return None
    if len(h) < 24:
        return None
    order = {b"\xd4\xc3\xb2\xa1": "little", b"\x4d\x3c\xb2\xa1": "little",
             b"\xa1\xb2\xc3\xd4": "big", b"\xa1\xb2\x3c\x4d": "big"}.get(h[:4])
    return int.from_bytes(h[16:20], order) if order else None


def tshark_fields(pcap, *fields):
    cmd = ["tshark", "-r", pcap, "-T", "fields"] + [x for f in fields for x in ("-e", f)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [line.split("\t") for line in p.stdout.splitlines()]


TWIN_TOLERANCE = 0.0001  # s


def compare_twin(cut, full, snaplen):
    """clean-close-s96: the cut capture against its full twin, packet by packet (tshark: frame.time_epoch,
    frame.len, frame.cap_len), and what is left of the cut packets."""
    a = tshark_fields(cut, "frame.time_epoch", "frame.len", "frame.cap_len", "tcp.len")
    b = tshark_fields(full, "frame.time_epoch", "frame.len", "frame.cap_len", "tcp.len")
    if a is None or b is None:
        return None
    # Each tcpdump's packet socket stamps a packet itself: the two stamps of one packet may differ by a microsecond
    dt = [abs(float(x[0]) - float(y[0])) for x, y in zip(a, b)]
    same = len(a) == len(b) and all(x[1] == y[1] for x, y in zip(a, b)) and max(dt, default=0) <= TWIN_TOLERANCE
    cut_lens = [int(x[2]) for x in a]
    truncated = [x for x in a if int(x[2]) < int(x[1])]
    return {
        "packets": {"cut": len(a), "full": len(b)},
        "same_packets": same,
        "same_packets_meaning": "same number of packets, in the same order with the same original length, and "
                                "timestamps at most %d us apart" % round(TWIN_TOLERANCE * 1e6),
        "timestamps_identical": sum(1 for x, y in zip(a, b) if x[0] == y[0]),
        "max_timestamp_difference_us": round(max(dt, default=0) * 1e6, 3),
        "full_twin_complete": all(x[1] == x[2] for x in b),
        "snaplen_header": {"cut": pcap_snaplen(cut), "full": pcap_snaplen(full)},
        "snaplen_asked": snaplen,
        "max_captured_length_cut": max(cut_lens) if cut_lens else None,
        "truncated_packets_cut": len(truncated),
        "truncated_packets_with_tcp_payload": len([x for x in truncated if x[3] and int(x[3]) > 0]),
        "bytes_on_wire_total": sum(int(x[1]) for x in b),
        "bytes_captured_total": {"cut": sum(cut_lens), "full": sum(int(x[2]) for x in b)},
        "source": "tshark -T fields -e frame.time_epoch -e frame.len -e frame.cap_len -e tcp.len on both files; "
                  "snaplen_header: the pcap global headers",
    }


def observe_flow(basic):
    """The message flow of one connection as tshark decodes it: publishes with their confirms and returns
    (publisher side), deliveries with the settlement that covers each (consumer side), the basic.qos
    prefetch_count, the most deliveries unsettled at once in wire order, and the wire latencies: publish
    packet to the confirm packet, deliver packet to the packet of the settlement covering it."""
    out = {"source": "tshark: basic-class methods (amqp.method.arguments.*, tshark's publish_number, the "
                     "message_id of the content header that follows), in capture order"}
    pubs, deliveries, settlements, returns, confirms = [], [], [], [], []
    unconfirmed, unsettled, max_unacked = [], {}, 0
    for b in basic:
        m, side = b["method"], b["from"]
        if m == "60.10" and side == "client":
            out["prefetch_count"] = b.get("prefetch_count")
        elif m == "60.40" and side == "client":
            p = {"seq": len(pubs) + 1, "publish_number": b.get("publish_number"), "frame": b["frame"], "t": b["t"],
                 "message_id": b.get("message_id"), "routing_key": b.get("routing_key"), "confirm": None,
                 "returned": False}
            pubs.append(p)
            unconfirmed.append(p)
        elif m == "60.50" and side == "broker":
            # the publish it returns: same message id, else the oldest unconfirmed one not yet returned
            cand = [p for p in unconfirmed if not p["returned"]]
            p = next((p for p in reversed(cand) if b.get("message_id") and p["message_id"] == b.get("message_id")),
                     cand[0] if cand else None)
            returns.append({"frame": b["frame"], "t": b["t"], "reply_code": b.get("reply_code"),
                            "reply_text": b.get("reply_text"), "message_id": b.get("message_id"),
                            "seq": p["seq"] if p else None})
            if p:
                p.update(returned=True, return_frame=b["frame"], reply_code=b.get("reply_code"),
                         reply_text=b.get("reply_text"))
        elif m in ("60.80", "60.120") and side == "broker" and pubs:
            kind = "ack" if m == "60.80" else "nack"
            tag, multiple = b.get("delivery_tag"), bool(b.get("multiple"))
            confirms.append({"frame": b["frame"], "t": b["t"], "kind": kind, "delivery_tag": tag, "multiple": multiple})
            for p in [p for p in unconfirmed if (p["seq"] <= tag if multiple else p["seq"] == tag)]:
                p.update(confirm=kind, confirm_frame=b["frame"], confirm_multiple=multiple,
                         wire_latency_ms=round((b["t"] - p["t"]) * 1000, 3))
                unconfirmed.remove(p)
        elif m == "60.60" and side == "broker":
            d = {"delivery_tag": b.get("delivery_tag"), "frame": b["frame"], "t": b["t"],
                 "redelivered": bool(b.get("redelivered")), "message_id": b.get("message_id"), "settled_by": None}
            deliveries.append(d)
            unsettled[d["delivery_tag"]] = d
            max_unacked = max(max_unacked, len(unsettled))
        elif m in ("60.80", "60.120", "60.90") and side == "client":
            kind = {"60.80": "ack", "60.120": "nack", "60.90": "reject"}[m]
            tag = b.get("delivery_tag")
            multiple = bool(b.get("multiple")) if m != "60.90" else False
            requeue = bool(b["requeue"]) if "requeue" in b else None
            st = {"frame": b["frame"], "t": b["t"], "kind": kind, "delivery_tag": tag, "multiple": multiple,
                  "requeue": requeue}
            tags = sorted(x for x in unsettled if x <= tag) if multiple else [tag]
            st["settles"] = tags
            settlements.append(st)
            for x in tags:
                d = unsettled.pop(x, None)
                if d:
                    d["settled_by"] = {"kind": kind, "frame": b["frame"], "delivery_tag": tag}
                    d["wire_latency_ms"] = round((b["t"] - d["t"]) * 1000, 3)
    if pubs:
        out["publishes"] = pubs
        out["confirms"] = confirms
        out["returns"] = returns
        lat = [p["wire_latency_ms"] for p in pubs if p.get("wire_latency_ms") is not None]
        out["confirm_latency_ms"] = dict(latency_stats(lat),
                                         what="publish packet to the packet of the basic.ack/nack covering it")
    if deliveries:
        out["deliveries"] = deliveries
        out["settlements"] = settlements
        out["max_unacked"] = max_unacked
        out["max_unacked_source"] = ("deliveries not yet covered by a client basic.ack/nack/reject, in capture "
                                     "order (multiple expanded)")
        lat = [d["wire_latency_ms"] for d in deliveries if d.get("wire_latency_ms") is not None]
        out["ack_latency_ms"] = dict(latency_stats(lat),
                                     what="deliver packet to the packet of the settlement covering it")
    return out


def latency_stats(values):
    """count, p50, p90, p99, max (nearest rank: the ceil(p/100 * n)-th smallest value)."""
    v = sorted(values)
    if not v:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    rank = lambda p: v[max(0, -(-p * len(v) // 100) - 1)]
    return {"count": len(v), "p50": round(rank(50), 3), "p90": round(rank(90), 3), "p99": round(rank(99), 3),
            "max": round(v[-1], 3)}


# --- expect ----------------------------------------------------------------------------------

def exc_during(client, prefix):
    return [e for e in client.get("exceptions", []) if e.get("during", "").startswith(prefix)]


def events(client, action):
    return [e for e in client.get("events", []) if e["action"] == action]


def tune_expect(client):
    out = []
    for c in client.get("connections", []):
        tune = c.get("tune") or {}
        out.append({
            "client_port": c.get("client_port"),
            "server_proposed": tune.get("server_proposed"),
            "negotiated": tune.get("negotiated"),
            "source": tune.get("source", "pika hook"),
        })
    return out


def iso_t(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")


def flow_expect(client):
    """expect.flow of flow-confirms-acks, from the client's own log: publish/delivery/settle events."""
    pubs, dels, sets = events(client, "publish"), events(client, "delivery"), events(client, "settle")
    qos = events(client, "basic_qos")
    publishes = []
    for e in pubs:
        p = {"seq": e["seq"], "t_call": round(e["t_call"], 6), "t_return": round(e["t_return"], 6),
             "outcome": e["outcome"], "routing_key": e["routing_key"], "message_id": e["message_id"]}
        if e["outcome"] == "returned":
            p["reply_code"], p["reply_text"] = e.get("reply_code"), e.get("reply_text")
        publishes.append(p)
    deliveries = [{"delivery_tag": e["delivery_tag"], "t": round(e["t_callback"], 6), "redelivered": e["redelivered"],
                   "message_id": e["message_id"]} for e in dels]
    settlements = [{"delivery_tag": e["delivery_tag"], "t": round(e["t_call"], 6), "kind": e["kind"],
                    "multiple": e["multiple"], "requeue": e["requeue"], "settles": e["settles"]} for e in sets]
    # unsettled deliveries as the client saw them, over its events in order
    unacked, max_unacked, settled_at = set(), 0, {}
    for e in client.get("events", []):
        if e["action"] == "delivery":
            unacked.add(e["delivery_tag"])
            max_unacked = max(max_unacked, len(unacked))
        elif e["action"] == "settle":
            for tag in e["settles"]:
                unacked.discard(tag)
                settled_at[tag] = e["t_call"]
    acks = [e for e in sets if e["kind"] == "ack"]
    confirmed = [p for p in publishes if p["outcome"] in ("ack", "returned")]
    counts = {
        "publishes": len(publishes),
        "confirmed": len(confirmed),
        "nacked": len([p for p in publishes if p["outcome"] == "nack"]),
        "returns": len([p for p in publishes if p["outcome"] == "returned"]),
        "deliveries": len(deliveries),
        "acks": len(acks),
        "acked_messages": sum(len(e["settles"]) for e in acks),
        "nacks": len([e for e in sets if e["kind"] == "nack"]),
        "rejects": len([e for e in sets if e["kind"] == "reject"]),
        "redelivered": len([d for d in deliveries if d["redelivered"]]),
        "max_unacked": max_unacked,
        "prefetch": qos[0]["prefetch_count"] if qos else None,
    }
    conf_lat = [(p["t_return"] - p["t_call"]) * 1000 for p in confirmed]
    ack_lat = [(settled_at[d["delivery_tag"]] - d["t"]) * 1000 for d in deliveries if d["delivery_tag"] in settled_at]
    plan = client.get("flow_plan") or {}
    return {
        "counts": counts,
        "counts_meaning": {
            "confirmed": "publishes the broker confirmed with basic.ack, returned ones included (RabbitMQ sends "
                         "basic.return, then basic.ack, for an unroutable mandatory publish)",
            "acks": "basic.ack frames from the consumer", "acked_messages": "deliveries those acks settled, "
                    "multiple=true expanded", "nacks": "basic.nack frames from the consumer (all requeue=true)",
            "rejects": "basic.reject frames from the consumer (all requeue=false)",
            "redelivered": "deliveries with redelivered=true",
            "max_unacked": "most deliveries the consumer held unsettled at once (its own events)",
            "prefetch": "basic_qos(prefetch_count=...)"},
        "plan": plan,
        "publishes": publishes,
        "deliveries": deliveries,
        "settlements": settlements,
        "confirm_latency_ms": dict(latency_stats(conf_lat), what="t_return - t_call of each confirmed publish "
            "(pika's BlockingChannel.basic_publish with confirm_delivery returns once the basic.ack arrived; "
            "for a returned publish it raises UnroutableError then)",
            note="client-side: includes pika's own processing (marshalling, the write, reading and dispatching the "
                 "confirm). The wire latency, publish packet to confirm packet, is at most this "
                 "(capture_observed.connections[].flow.confirm_latency_ms)"),
        "ack_latency_ms": dict(latency_stats(ack_lat), what="time just before the basic_ack/nack/reject call that "
            "settled a delivery - time its on_message callback started, per delivery (multiple expanded)",
            note="client-side: the wire latency, deliver packet to settlement packet, is at least this (the "
                 "delivery reaches the wire before the callback runs, the settlement after the call starts)"),
        "percentiles": "nearest rank: the ceil(p/100 * count)-th smallest value",
        "time_base": "epoch seconds from the client's time.time(), the clock tcpdump's timestamps use",
        "source": "client events: 'publish' (seq, t_call just before basic_publish, t_return just after it "
                  "returned or raised, outcome), 'delivery' (t = on_message callback start), 'settle' (t just "
                  "before basic_ack/basic_nack/basic_reject; settles = delivery tags it covers)",
    }


def build_expect(name, client, log, listen_options, port=AMQP_PORT, obs=None):
    """name: the plain scenario whose client ran (a TLS scenario's base_scenario); obs: capture_observed
    (missed-heartbeats-fin: whether the late publish reached the wire)."""
    x = {"scenario": name}
    conns = client.get("connections", [])
    x["connections"] = {
        "count": len(conns),
        "client_ports": [c.get("client_port") for c in conns],
        "broker_port": port,
        "source": "client socket getsockname(); broker log 'accepting AMQP connection' lines: %d"
                  % len(find(log, "accepting")),
        "broker_log_accepting_ports": [e.get("client_port") for e in find(log, "accepting")],
    }
    x["tune"] = tune_expect(client) if len(conns) <= 3 else {
        "all_negotiated": sorted({json.dumps((c.get("tune") or {}).get("negotiated"), sort_keys=True) for c in conns}),
        "source": "pika hook on Connection.Tune / Tune-Ok"}
    if conns and (conns[0].get("start") or {}).get("version"):
        x["broker_product_version"] = {"value": "%s %s" % (conns[0]["start"].get("product"), conns[0]["start"]["version"]),
                                       "source": "Connection.Start server_properties as decoded by pika"}
    linger_rst = "{linger,{true,0}}" in (listen_options or "").replace(" ", "")

    closes = events(client, "connection_close")
    if name in ("healthy-heartbeats", "channel-error-404", "large-messages", "many-connections", "blocked",
                "flow-confirms-acks", "clean-close-s96", "refused-then-connected"):
        x["close"] = {
            "initiated_by": "client",
            "how": "Connection.Close from client, Connection.Close-Ok from broker (pika BlockingConnection.close())",
            "count": len(closes),
            "close_called_at": [c["time"] for c in closes],
            "broker_log": [log_src(e) for e in find(log, "closing")][:3],
            "source": "client events 'connection_close'/'connection_closed' and broker log 'closing AMQP connection'",
        }
    if name == "healthy-heartbeats":
        idle_and_heartbeats(x, client)
        x["errors"] = {"client_exceptions": len(client.get("exceptions", [])),
                       "broker_error_lines": len([e for e in log if e["level"] in ("error",)])}
    if name == "flow-confirms-acks":
        roles = client.get("roles") or {}
        x["connection_roles"] = [{"client_port": c.get("client_port"), "role": roles.get(str(c.get("client_port"))),
                                  "connection_name": c.get("connection_name")} for c in conns]
        x["connection_roles_source"] = "client: the port of each BlockingConnection and what the scenario did with it"
        x["flow"] = flow_expect(client)
    if name in ("missed-heartbeats-104", "missed-heartbeats-fin"):
        mh = find(log, "missed_heartbeats")
        silent = events(client, "silent_start"), events(client, "silent_end")
        exc = exc_during(client, "basic_publish")
        late = [e for e in events(client, "basic_publish") if e.get("n") == 2]
        x["heartbeat_timeout_s"] = {
            "value": int(re.search(r"timeout: (\d+)s", mh[0]["message"]).group(1)) if mh else None,
            "source": log_src(mh[0]) if mh else "no 'missed heartbeats' line in the broker log"}
        x["stopped_heartbeating"] = {
            "side": "client" if mh else None,
            "silent_from": silent[0][0]["time"] if silent[0] else None,
            "silent_to": silent[1][0]["time"] if silent[1] else None,
            "pika_heartbeats_sent": sum(len(v["sent"]) for v in client.get("heartbeats", {}).values()),
            "source": "broker log 'missed heartbeats from client'; client events silent_start/silent_end "
                      "(time.sleep without process_data_events); pika heartbeat hook"}
        x["connection_dropped_by"] = {
            "side": "broker" if mh else None,
            "at": mh[0]["time"] if mh else None,
            "tcp": "RST" if linger_rst else "FIN",
            **({"tcp_listen_options": (listen_options or "").strip()} if name == "missed-heartbeats-fin" else {}),
            # RabbitMQ writes "Error on AMQP connection ... caused a connection exception" when it sends
            # Connection.Close with an error code (see connection-forced-320); pika saw none either.
            "amqp_close_method_sent": bool([e for e in log if "Error on AMQP connection" in e["message"]]
                                           or events(client, "received_connection_close")),
            "source": "broker log 'closing AMQP connection ... missed heartbeats from client' and no "
                      "'Error on AMQP connection' line; pika decoded no Connection.Close; " + (
                          "RST because the broker's tcp_listen_options has linger {true,0}: " if linger_rst else
                          "FIN because the broker's tcp_listen_options has linger off (scripts/broker with "
                          "AMQPSCOPE_BROKER_LINGER=off): ") + (listen_options or "?").strip()}
        oe = client.get("os_errors", [])
        if name == "missed-heartbeats-104":
            x["late_publish"] = {
                "at": late[0]["time"] if late else None,
                "send_syscall_failed": bool(oe) and oe[0].get("syscall") == "send",
                "source": "client event basic_publish n=2; client_os_error (the send() of the publish frames "
                          "failed, so they were not written to the socket)"}
        else:
            x["late_publish"] = late_publish_fin(client, late, oe, obs)
        if exc:
            e = exc[0]
            x["client_error"] = {k: e.get(k) for k in ("class", "qualified_class", "message", "errno", "errno_name",
                                                      "strerror", "errno_source", "time")}
            x["client_error"].update({k: e[k] for k in ("ssl_errno", "ssl_errno_name") if k in e})
            x["client_error"]["during"] = e.get("during")
            x["client_error"]["source"] = "exception raised by pika's basic_publish"
        oe = client.get("os_errors", [])
        if oe:
            x["client_os_error"] = {k: oe[0].get(k) for k in ("syscall", "class", "errno", "errno_name", "strerror", "time", "source")}
            x["client_os_error"].update({k: oe[0][k] for k in ("ssl_errno", "ssl_errno_name") if k in oe[0]})
    if name == "channel-error-404":
        items = []
        cc = [e for e in client.get("exceptions", []) if e.get("class") == "ChannelClosedByBroker"]
        for i, ev in enumerate(events(client, "received_channel_close")):
            exc = cc[i:i + 1]  # in order: the n-th Channel.Close pika decoded raised the n-th exception
            items.append({
                "channel": ev["channel"], "reply_code": ev["reply_code"], "reply_text": ev["reply_text"],
                "class_id": ev["class_id"], "method_id": ev["method_id"],
                "pika_exception": exc[0]["class"] if exc else None,
                "pika_during": exc[0]["during"] if exc else None,
                "source": ev["source"] + "; pika exception " + (exc[0]["class"] if exc else "?")})
        x["channel_errors"] = items
        x["channel_errors_broker_log"] = [log_src(e) for e in find(log, "channel_error")]
    if name == "large-messages":
        x["messages"] = client.get("result")
        x["published"] = [{"n": e["n"], "body_size": e["body_size"], "body_sha256": e.get("body_sha256")}
                          for e in events(client, "basic_publish")]
        x["delivered"] = [{"delivery_tag": e["delivery_tag"], "body_size": e["body_size"], "body_sha256": e["body_sha256"]}
                          for e in events(client, "delivery")]
        x["messages_source"] = ("client: basic_publish/delivery events; body_frames_per_message computed as "
                                "ceil(size / (negotiated frame_max - 8))")
    if name == "many-connections":
        x["broker_log_counts"] = {k: len(find(log, k)) for k in ("accepting", "closing", "client_closed_tcp")}
        x["client_exceptions"] = len(client.get("exceptions", []))
        x["messages"] = client.get("result")
    if name == "connection-forced-320":
        rc = events(client, "received_connection_close")
        exc = exc_during(client, "process_data_events")
        x["connection_close_from_broker"] = {
            "reply_code": rc[0]["reply_code"] if rc else None, "reply_text": rc[0]["reply_text"] if rc else None,
            "class_id": rc[0]["class_id"] if rc else None, "method_id": rc[0]["method_id"] if rc else None,
            "reason_given_to_rabbitmqctl": client.get("close_reason_given"),
            "source": rc[0]["source"] if rc else "no Connection.Close seen by pika"}
        if exc:
            e = exc[0]
            x["client_error"] = {k: e.get(k) for k in ("class", "qualified_class", "message", "reply_code",
                                                      "reply_text", "errno", "time", "during")}
            x["client_error"]["source"] = "exception raised by pika's process_data_events"
        frames = [f for fl in (client.get("frames") or {}).values() for f in fl]
        x["close"] = {
            "initiated_by": "broker",
            "how": "Connection.Close(320) from broker after `rabbitmqctl close_connection`",
            "pika_sent_close_ok": any(f[1] == "sent" and str(f[4]).startswith("Connection.CloseOk") for f in frames),
            "source": "pika frame hooks (client.frames): frames pika decoded / handed to its transport"}
        x["broker_log"] = [log_src(e) for e in log if e["kind"] in ("close_connection_request", "connection_exception",
                                                                   "connection_forced", "closing")]
    if name == "blocked":
        b, u = events(client, "connection_blocked"), events(client, "connection_unblocked")
        x["blocked"] = {"at": b[0]["time"] if b else None, "reason": b[0].get("reason") if b else None,
                        "unblocked_at": u[0]["time"] if u else None,
                        "source": "pika on_connection_blocked/unblocked callbacks (Connection.Blocked/Unblocked)"}
        x["watermark"] = [{"action": e["action"], "time": e["time"]} for e in client.get("events", [])
                          if e["action"] in ("watermark_lowered", "watermark_restored")]
        x["broker_log"] = [log_src(e) for e in log if e["kind"] in ("memory_alarm_set", "memory_alarm_cleared",
                                                                   "publishers_blocked", "watermark")]
    if name == "clean-close-s96":
        clean_close_expect(x, client, log)
    if name == "refused-then-connected":
        refused_expect(x, client)
    if name == "haproxy-idle":
        haproxy_expect(x, client, log, listen_options, obs)
    if name == "broker-restart":
        broker_restart_expect(x, client, log)
    return x


def ctl_call(client, command):
    """The first rabbitmqctl call of the client (scripts/broker ctl) whose first argument is `command`."""
    e = next((e for e in events(client, "rabbitmqctl") if (e.get("argv") or [None])[0] == command), None)
    if e is None:
        return None
    return {"argv": ["rabbitmqctl"] + e["argv"], "started": e["started"], "returned": e["time"],
            "seconds": round(e["t"] - datetime.datetime.fromisoformat(e["started"]).timestamp(), 3),
            "rc": e["rc"], "stdout": e["stdout"], "stderr": e["stderr"] or None}


FORCED_REASON = re.compile(r'connection_forced: "(.*)"', re.S)


def broker_restart_expect(x, client, log):
    """broker-restart: the operator's rabbitmqctl stop_app / start_app, and per client its port, the Connection.Close
    pika decoded, what process_data_events raised, when its thread exited, and the broker's log lines for its
    connection; closes: the same summed up over the clients."""
    conns = sorted(client.get("connections", []), key=lambda c: c.get("label") or "")
    stop, start = ctl_call(client, "stop_app"), ctl_call(client, "start_app")
    ready, req = events(client, "all_ready"), events(client, "restart_requested")
    stop_t = datetime.datetime.fromisoformat(stop["started"]).timestamp() if stop else None
    start_t = datetime.datetime.fromisoformat(start["started"]).timestamp() if start else None
    conn_entries = [e for e in log if "client_port" in e or e.get("connection_pid")]
    node_entries = [e for e in log if e not in conn_entries]
    x["restart"] = {
        "how": "rabbitmqctl stop_app, then rabbitmqctl start_app, through scripts/broker ctl (the operator restarts the "
               "RabbitMQ application; the Erlang node, its configuration and its log file stay)",
        "all_ready_at": ready[0]["time"] if ready else None,
        "requested_at": req[0]["time"] if req else None,
        "stop_app": stop, "start_app": start,
        "broker_running_after": client.get("broker_running_after"),
        "broker_log_stop": [log_src(e) for e in node_entries if stop_t and e["t"] >= stop_t
                            and (not start_t or e["t"] < start_t)],
        "broker_log_start": {"entries": len([e for e in node_entries if start_t and e["t"] >= start_t]),
                             "first": next((log_src(e) for e in node_entries if start_t and e["t"] >= start_t), None),
                             "last": next((log_src(e) for e in reversed(node_entries) if start_t and e["t"] >= start_t),
                                          None)},
        "source": "client events all_ready, restart_requested and rabbitmqctl (argv, started = just before the call, "
                  "returned, rc, output); broker log lines that name no connection, between stop_app's start and "
                  "start_app's start (broker_log_stop) and from start_app's start on (broker_log_start)"}
    rcc, exc = events(client, "received_connection_close"), exc_during(client, "process_data_events")
    by_port = lambda items, p: [e for e in items if p is not None and e.get("client_port") == p]
    items = []
    for c in conns:
        p = c.get("client_port")
        connected, pub = by_port(events(client, "connected"), p), by_port(events(client, "basic_publish"), p)
        got, raised, exited = by_port(rcc, p), by_port(exc, p), by_port(events(client, "client_exit"), p)
        own = [e for e in log if e.get("client_port") == p]
        pids = {e.get("connection_pid") for e in own} | {e["erlang_pid"] for e in own}
        own = [e for e in log if e.get("client_port") == p or e.get("connection_pid") in pids - {None}]
        closing = [e for e in own if e["kind"] in ("closing", "connection_forced", "connection_exception")]
        item = {
            "connection": c.get("label"), "connection_name": c.get("connection_name"), "client_port": p,
            "connected_at": connected[0]["time"] if connected else None,
            "published_at": pub[0]["time"] if pub else None,
            "close_received": {"reply_code": got[0]["reply_code"], "reply_text": got[0]["reply_text"],
                               "class_id": got[0]["class_id"], "method_id": got[0]["method_id"],
                               "at": got[0]["time"], "t": round(got[0]["t"], 6)} if got else None,
            "pika_sent_close_ok": bool(frames_of(client, p, "sent", "Connection.CloseOk")),
            "exception": {k: raised[0].get(k) for k in ("class", "qualified_class", "message", "reply_code",
                                                         "reply_text", "errno", "errno_name", "time", "during")}
                         if raised else None,
            "exited_at": exited[0]["time"] if exited else None,
            "reconnected": len(connected) > 1,
            "broker_connection_pid": next((e.get("connection_pid") for e in own if e["kind"] == "accepting"), None),
            "broker_log": [log_src(e) for e in own],
            "broker_log_close": [{"time": e["time"], "level": e["level"], "kind": e["kind"],
                                  "message": e["message"]} for e in closing],
            "source": "client: socket getsockname() (port), events connected/basic_publish/client_exit, the "
                      "received_connection_close hook (Connection.Close as pika decoded it), the exception "
                      "process_data_events raised, pika frame hooks (Close-Ok handed to the transport); broker log "
                      "lines naming the port or the connection's Erlang pid"}
        items.append(item)
    x["clients"] = items
    ct = sorted(i["close_received"]["t"] for i in items if i["close_received"])
    classes = {}
    for i in items:
        k = (i["exception"] or {}).get("class") or "none"
        classes[k] = classes.get(k, 0) + 1
    forced = [e for i in items for e in i["broker_log_close"] if e["kind"] == "connection_exception"]
    ft = sorted(datetime.datetime.fromisoformat(e["time"]).timestamp() for e in forced)
    x["closes"] = {
        "initiated_by": "broker",
        "how": "Connection.Close from the broker to every client while `rabbitmqctl stop_app` stopped the RabbitMQ "
               "application",
        "clients": len(items),
        "close_received": len(ct),
        "reply": sorted({"%s %s" % (i["close_received"]["reply_code"], i["close_received"]["reply_text"])
                         for i in items if i["close_received"]}),
        "class_method": sorted({"%s.%s" % (i["close_received"]["class_id"], i["close_received"]["method_id"])
                                for i in items if i["close_received"]}),
        "first_at": iso_t(ct[0]) if ct else None, "last_at": iso_t(ct[-1]) if ct else None,
        "spread_ms": round((ct[-1] - ct[0]) * 1000, 3) if ct else None,
        "first_after_stop_app_started_s": round(ct[0] - stop_t, 3) if ct and stop_t else None,
        "exceptions": classes,
        "errnos": sorted({i["exception"]["errno"] for i in items if i["exception"] and i["exception"].get("errno")}),
        "pika_sent_close_ok": len([i for i in items if i["pika_sent_close_ok"]]),
        "reconnected": len([i for i in items if i["reconnected"]]),
        "broker_log_connection_exception": {
            "count": len(forced),
            "reasons": sorted({m.group(1) for m in (FORCED_REASON.search(e["message"]) for e in forced) if m}),
            "levels": sorted({e["level"] for e in forced}),
            "first_at": iso_t(ft[0]) if ft else None, "last_at": iso_t(ft[-1]) if ft else None,
            "spread_ms": round((ft[-1] - ft[0]) * 1000, 3) if ft else None},
        "broker_log_closing_lines": len([e for i in items for e in i["broker_log_close"] if e["kind"] == "closing"]),
        "source": "summed up from clients[]: the times pika decoded the broker's Connection.Close (hook), the "
                  "exceptions process_data_events raised, the broker's 'Error on AMQP connection ... caused a "
                  "connection exception connection_forced' lines and its 'closing AMQP connection' lines"}


def frames_of(client, port, direction, detail_prefix):
    return [f for f in (client.get("frames") or {}).get(str(port), [])
            if f[1] == direction and str(f[4]).startswith(detail_prefix)]


def idle_and_heartbeats(x, client):
    """The idle window the client serviced, the heartbeats pika sent and received, and its result."""
    idle = events(client, "idle_start"), events(client, "idle_end")
    x["idle_window"] = {"from": idle[0][0]["time"] if idle[0] else None, "to": idle[1][0]["time"] if idle[1] else None,
                        "source": "client events idle_start/idle_end (process_data_events loop)"}
    x["heartbeats_both_directions"] = {
        "pika_sent": sum(len(v["sent"]) for v in client.get("heartbeats", {}).values()),
        "pika_received": sum(len(v["received"]) for v in client.get("heartbeats", {}).values()),
        "source": "pika HeartbeatChecker hooks (_send_heartbeat_frame / received)"}
    x["messages"] = client.get("result")


def clean_close_expect(x, client, log):
    """clean-close-s96: messages, heartbeats both ways, and that the close was clean per pika and the broker."""
    conns = client.get("connections", [])
    port = conns[0].get("client_port") if conns else None
    idle_and_heartbeats(x, client)
    x["published"] = [{"n": e["n"], "body_size": e["body_size"], "body_sha256": e.get("body_sha256")}
                      for e in events(client, "basic_publish")]
    x["delivered"] = [{"delivery_tag": e["delivery_tag"], "body_size": e["body_size"], "body_sha256": e["body_sha256"]}
                      for e in events(client, "delivery")]
    x["messages_source"] = "client: basic_publish/delivery events (each delivery acked with basic_ack)"
    closed = events(client, "connection_closed")
    reason = (closed[0].get("close_reason") or {}) if closed else {}
    sent_close = frames_of(client, port, "sent", "Connection.Close(")
    got_close_ok = frames_of(client, port, "recv", "Connection.CloseOk")
    closing = find(log, "closing")
    clean = (reason.get("class") == "ConnectionClosedByClient" and reason.get("reply_code") == 200
             and not client.get("exceptions") and bool(sent_close) and bool(got_close_ok)
             and bool(closing) and all(e["level"] == "info" for e in closing)
             and not [e for e in log if e["level"] in ("error", "warning")])
    x["close"].update({
        "clean": clean,
        "pika_close_reason": reason,
        "pika_sent": [f[4] for f in sent_close], "pika_sent_at": [iso_t(f[0]) for f in sent_close],
        "pika_decoded": [f[4] for f in got_close_ok], "pika_decoded_at": [iso_t(f[0]) for f in got_close_ok],
        "broker_log_levels": sorted({e["level"] for e in closing}),
        "clean_source": "pika: the on-close reason ConnectionClosedByClient(200, 'Normal shutdown'), no exception, "
                        "Connection.Close(200) handed to the transport and Connection.CloseOk decoded (client.frames); "
                        "broker log: 'closing AMQP connection' at info with no warning/error line (an abrupt close "
                        "logs 'client unexpectedly closed TCP connection' at warning)"})
    x["errors"] = {"client_exceptions": len(client.get("exceptions", [])),
                   "broker_error_or_warning_lines": len([e for e in log if e["level"] in ("error", "warning")])}


PIKA_CONNECT_FAILED = re.compile(r"TCP Connection attempt failed: (\w+)\((\d+), '([^']*)'\); dest=.*?\('([^']*)', (\d+)")
PIKA_SOCKET_FAILED = re.compile(r"Socket failed to connect: .*; error=(\d+) \(([^)]*)\)")


def refused_expect(x, client):
    """refused-then-connected: each connect() pika made (client.connect_attempts) and pika's own log about them."""
    atts = client.get("connect_attempts") or []
    plog = client.get("pika_log") or []
    refused, ok = [a for a in atts if a.get("result") == "failed"], [a for a in atts if a.get("result") == "connected"]
    items = []
    for a in refused:
        err = a.get("error") or {}
        logged = [e for e in plog if a["t_connect"] - 0.001 <= e["t"] <= a["t_result"] + 0.01
                  and e["logger"].startswith("pika.adapters.utils.")
                  and ("failed" in e["message"] or "failure" in e["message"])]
        parsed = None
        for e in logged:
            m = PIKA_CONNECT_FAILED.search(e["message"])
            if m and m.group(4) == a["address"]:
                parsed = {"class": m.group(1), "errno": int(m.group(2)), "errno_name": errno_mod.errorcode.get(int(m.group(2))),
                          "strerror": m.group(3), "dest": [m.group(4), int(m.group(5))], "time": e["time"],
                          "message": e["message"]}
                break
        items.append({
            "address": a["address"], "port": a["port"], "family": a["family"],
            "client_addr": a.get("client_addr"), "client_port": a.get("client_port"),
            "connect_at": a.get("time_connect"), "refused_at": a.get("time_result"),
            "t_connect": a["t_connect"], "t_result": a.get("t_result"),
            "ms_to_refusal": round((a["t_result"] - a["t_connect"]) * 1000, 3) if a.get("t_result") else None,
            "class": err.get("class"), "errno": err.get("errno"), "errno_name": err.get("errno_name"),
            "strerror": err.get("strerror"),
            "pika_log_errno": parsed,
            "pika_log": [{"time": e["time"], "level": e["level"], "logger": e["logger"], "message": e["message"]}
                         for e in logged],
            "source": a.get("source", "") + "; pika_log: pika's own ERROR records about the attempt (connection_workflow "
                      "'TCP Connection attempt failed', io_services_utils 'Socket failed to connect')"})
    x["refused_attempts"] = items
    x["hosts_tried"] = {"value": client.get("hosts_tried"), "source": "client: the hosts of the ConnectionParameters "
                        "list given to pika.BlockingConnection, in order"}
    if ok:
        a = ok[0]
        x["fallback"] = {
            "address": a["address"], "port": a["port"], "family": a["family"], "client_port": a.get("client_port"),
            "connect_at": a.get("time_connect"), "connected_at": a.get("time_result"),
            "ms_after_refusal": round((a["t_connect"] - refused[-1]["t_result"]) * 1000, 3) if refused else None,
            "ms_first_connect_to_connected": round((a["t_result"] - atts[0]["t_connect"]) * 1000, 3),
            "source": a.get("source")}


HAPROXY_STATE_1 = {"C": "the TCP session was unexpectedly aborted by the client",
                   "S": "the TCP session was unexpectedly aborted by the server, or the server explicitly refused it",
                   "c": "the client-side timeout expired while waiting for the client to send or receive data",
                   "s": "the server-side timeout expired while waiting for the server to send or receive data",
                   "-": "normal session completion, both the client and the server closed with nothing left in "
                        "the buffers"}
HAPROXY_STATE_2 = {"C": "the proxy was waiting for the CONNECTION to establish on the server",
                   "D": "the session was in the DATA phase",
                   "-": "normal session completion after end of data transfer"}


def haproxy_expect(x, client, log, listen_options, obs):
    """haproxy-idle: the proxy's config and session log line, both legs and their ports, what the broker logged
    for the haproxy->broker leg, the idle window, pika's exception and the late publish's send() calls."""
    hp = client.get("haproxy") or {}
    conns = client.get("connections", [])
    front = conns[0] if conns else {}
    sess = hp.get("sessions") or []
    sv = sess[0] if sess else {}
    back_port = sv.get("backend_source_port")
    x["proxy"] = {
        "software": hp.get("version"), "listen": hp.get("listen"), "server": hp.get("server"),
        "mode": "tcp", "timeouts": hp.get("timeouts"), "log_format": hp.get("log_format"), "config": hp.get("config"),
        "source": "the haproxy.cfg the client wrote and ran (haproxy -f CFG -db, stopped with SIGTERM afterwards); "
                  "haproxy -v"}
    ts = sv.get("termination_state") or "??"
    x["proxy_session_log"] = {
        "line": sv.get("raw"), "read_at": sv.get("time_read"),
        "fields": {k: v for k, v in sv.items() if k not in ("raw", "t_read", "time_read")},
        "termination_state": sv.get("termination_state"),
        "termination_state_meaning": [HAPROXY_STATE_1.get(ts[0]), HAPROXY_STATE_2.get(ts[1])],
        "meaning_source": "HAProxy 2.6 configuration manual (/usr/share/doc/haproxy/configuration.txt.gz), 8.5 "
                          "'Session state at disconnection'",
        "timers": "Tw/Tc/Tt in ms: time waiting in queues, time to connect to the server, total session time "
                  "(accept to close)",
        "count": len(sess),
        "source": "haproxy's log on its stdout (log stdout format raw, log-format = the tcplog format + %bi:%bp), "
                  "each line read by the client with the time it arrived (client.haproxy.output)"}
    back_log = [e for e in log if back_port and e.get("client_port") == back_port]
    pids = {e.get("connection_pid") for e in back_log} | {e["erlang_pid"] for e in back_log}
    back_log = [e for e in log if (back_port and e.get("client_port") == back_port)
                or e.get("connection_pid") in pids or e["erlang_pid"] in pids]
    accepting = [e for e in back_log if e["kind"] == "accepting"]
    x["legs"] = [
        {"leg": "client->haproxy", "client_port": front.get("client_port"), "server_port": front.get("broker_port"),
         "source": front.get("ports_source", "client socket getsockname()/getpeername()")},
        {"leg": "haproxy->broker", "client_port": back_port, "server_port": int(hp.get("server", ":0").rsplit(":", 1)[1]),
         "broker_log_accepting_port": accepting[0].get("client_port") if accepting else None,
         "source": "haproxy's session log %bp (the backend connection's source port); broker log "
                   + (log_src(accepting[0]) if accepting else "(no 'accepting AMQP connection' line)")}]
    x["broker_log_back_leg"] = [log_src(e) for e in back_log]
    x["broker_saw_close"] = {
        "kind": [e["kind"] for e in back_log if e["kind"] in ("closing", "client_closed_tcp", "missed_heartbeats")],
        "at": [e["time"] for e in back_log if e["kind"] in ("closing", "client_closed_tcp", "missed_heartbeats")],
        "source": "broker log lines of the haproxy->broker leg's connection (its port or Erlang pid)"}
    silent = events(client, "silent_start"), events(client, "silent_end")
    x["idle"] = {"from": silent[0][0]["time"] if silent[0] else None, "to": silent[1][0]["time"] if silent[1] else None,
                 "seconds": silent[0][0].get("seconds") if silent[0] else None,
                 "heartbeat_negotiated": ((front.get("tune") or {}).get("negotiated") or {}).get("heartbeat"),
                 "source": "client events silent_start/silent_end (time.sleep without process_data_events); "
                           "heartbeat from pika's Tune-Ok (0: disabled)"}
    exc = exc_during(client, "basic_publish")
    if exc:
        e = exc[0]
        x["client_error"] = {k: e.get(k) for k in ("class", "qualified_class", "message", "errno", "errno_name",
                                                  "strerror", "errno_source", "time")}
        x["client_error"]["during"] = e.get("during")
        x["client_error"]["source"] = "exception raised by pika's basic_publish (the late publish)"
    oe = client.get("os_errors", [])
    if oe:
        x["client_os_error"] = {k: oe[0].get(k) for k in ("syscall", "class", "errno", "errno_name", "strerror", "time", "source")}
    late = [e for e in events(client, "basic_publish") if e.get("n") == 2]
    x["late_publish"] = late_publish_fin(client, late, oe, obs)


def late_publish_fin(client, late, oe, obs):
    """missed-heartbeats-fin: the late publish, each send() pika made for it (client.sends: one per frame) and
    whether its bytes reached the wire after the broker's FIN (tshark)."""
    conns = client.get("connections", [])
    port = str(conns[0].get("client_port")) if conns else None
    t0 = late[0]["t"] if late else None
    sends = [s for s in (client.get("sends") or {}).get(port, []) if t0 is not None and s[0] >= t0]
    frames = [f for f in (client.get("frames") or {}).get(port, []) if t0 is not None and f[0] >= t0 and f[1] == "sent"]
    calls = []
    for i, (ta, tb, asked, sent, err) in enumerate(sends):
        c = {"t": ta, "time": iso_t(ta), "bytes": asked, "returned": sent,
             "frame": frames[i][4] if i < len(frames) else None}
        if err is not None:
            c.update(errno=err, errno_name=errno_mod.errorcode.get(err))
        calls.append(c)
    taken = sum(s[3] or 0 for s in sends)
    out = {"at": late[0]["time"] if late else None, "t": round(t0, 6) if t0 else None,
           "send_syscall_failed": bool(oe) and oe[0].get("syscall") == "send",
           "send_calls": calls,
           "bytes_taken_by_kernel": taken,
           "source": "client event basic_publish n=2; client.sends (every send() pika made, one per marshaled "
                     "frame, in order: frame = the frame pika handed over in that position); client_os_error"}
    streams = (obs or {}).get("connections") or []
    idx = next((i for i, c in enumerate(streams) if str(c["client_port"]) == port), None)
    s = streams[idx] if idx is not None else None
    wire = (s or {}).get("data_after_broker_fin")
    if wire is not None:
        segs = wire["client_segments"]
        rst = [e for e in s["close_sequence"] if e["from"] == "broker" and "RST" in e["flags"]
               and segs and e["frame"] > segs[0]["frame"]]
        out["reached_wire"] = {
            "value": bool(segs), "after_broker_fin_at": iso_t(wire["broker_fin_t"]),
            "segments": [{"frame": g["frame"], "time": iso_t(g["t"]), "tcp_len": g["tcp_len"],
                          "amqp_frames": g["amqp_frames"]} for g in segs],
            "payload_bytes": sum(g["tcp_len"] for g in segs),
            "broker_rst_after_it": ({"frame": rst[0]["frame"], "time": iso_t(rst[0]["t"])} if rst else None),
            "source": "tshark (capture_observed.connections[%d].data_after_broker_fin): client segments with payload "
                      "after the broker's FIN, and the broker's RST after them" % idx}
    return out


def checks(name, x, obs, client=None):
    """Compare expect with what tshark decodes; each check is (name, ok)."""
    if not obs:
        return {}
    c = {}
    conns = obs["connections"]
    # refused connects and a proxy's legs to the broker are TCP connections of their own
    extra = [r.get("client_port") for r in x.get("refused_attempts", [])] + [
        g.get("client_port") for g in x.get("legs", []) if g["leg"] == "haproxy->broker"]
    c["tcp_connections == client connections"] = len(conns) == x["connections"]["count"] + len(extra)
    c["client ports match"] = sorted(s["client_port"] for s in conns) == sorted(
        p for p in x["connections"]["client_ports"] + extra if p)
    # Every AMQP frame on the wire is one pika sent / decoded, in order. Frames pika handed over after
    # the connection's first FIN/RST may miss the wire (compare_frames). Frames the broker sent that pika
    # never decoded are accepted when the client lost the connection (an exception was raised: it was
    # not reading) or when they came after the client's FIN/RST.
    lost = bool((client or {}).get("exceptions"))
    for d, label in (("client_to_broker", "client->broker"), ("broker_to_client", "broker->client")):
        fv = [(s.get("frames_vs_pika") or {}).get(d, {}) for s in conns]
        c["AMQP frames %s on the wire == pika's" % label] = bool(fv) and all(
            f.get("match") == "equal" or (f.get("match", "different") != "different"
                                          and (d == "client_to_broker" or lost or f.get("all_after_client_fin_or_rst")))
            for f in fv)
    if x.get("tls"):
        t = (conns[0].get("tls") or {}) if conns else {}
        c["TLS version on the wire == client's"] = t.get("version") == x["tls"]["version"]
        c["TLS cipher suite on the wire == client's"] = bool(t.get("cipher_suite")) and t.get("cipher_suite") == x["tls"]["cipher_iana"]
        c["SNI on the wire == client's"] = t.get("sni") == x["tls"]["sni"]
        c["every TLS application-data record decrypted to AMQP"] = all(
            (s.get("tls") or {}).get("app_data_records_without_amqp", 1) == 0 for s in conns)
    if name == "missed-heartbeats-104" and conns:
        s = conns[0]
        seq = s["close_sequence"]
        c["first close is RST from broker"] = bool(seq) and seq[0]["from"] == "broker" and "RST" in seq[0]["flags"]
        silent_from = x["stopped_heartbeating"]["silent_from"]
        if silent_from and s.get("heartbeat_times"):
            t0 = datetime.datetime.fromisoformat(silent_from).timestamp()
            c["no client heartbeats while silent"] = not [t for t in s["heartbeat_times"]["client"] if t > t0]
            c["broker heartbeats while silent"] = len([t for t in s["heartbeat_times"]["broker"] if t > t0]) > 0
    if name == "missed-heartbeats-fin" and conns:
        s = conns[0]
        seq = s["close_sequence"]
        lp = x.get("late_publish") or {}
        rw = lp.get("reached_wire") or {}
        c["first close is FIN from broker"] = bool(seq) and seq[0]["from"] == "broker" and "FIN" in seq[0]["flags"] \
            and "RST" not in seq[0]["flags"]
        silent_from = x["stopped_heartbeating"]["silent_from"]
        if silent_from and s.get("heartbeat_times"):
            t0 = datetime.datetime.fromisoformat(silent_from).timestamp()
            c["no client heartbeats while silent"] = not [t for t in s["heartbeat_times"]["client"] if t > t0]
            c["broker heartbeats while silent"] = len([t for t in s["heartbeat_times"]["broker"] if t > t0]) > 0
        c["late publish on the wire after the broker's FIN == bytes pika's send() got in"] = bool(rw.get("value")) \
            and rw.get("payload_bytes") == lp.get("bytes_taken_by_kernel")
        c["broker RST after the late publish"] = bool(rw.get("broker_rst_after_it"))
        c["no Connection.Close from the broker"] = not [m for m in s["methods"] if m["method"] == "10.50"]
    if name == "flow-confirms-acks" and conns:
        fx = x["flow"]
        roles = {r["client_port"]: r["role"] for r in x.get("connection_roles", [])}
        pub = next((s for s in conns if roles.get(s["client_port"]) == "publisher"), None)
        con = next((s for s in conns if roles.get(s["client_port"]) == "consumer"), None)
        pf, cf = (pub or {}).get("flow") or {}, (con or {}).get("flow") or {}
        k = fx["counts"]
        # client-side expectation of every basic method, per direction (all connections together)
        want = {"client_to_broker": {"basic.publish": k["publishes"], "basic.ack": k["acks"], "basic.nack": k["nacks"],
                                     "basic.reject": k["rejects"], "basic.return": 0, "basic.deliver": 0,
                                     "basic.qos": 1},
                "broker_to_client": {"basic.publish": 0, "basic.ack": k["confirmed"], "basic.nack": k["nacked"],
                                     "basic.reject": 0, "basic.return": k["returns"], "basic.deliver": k["deliveries"],
                                     "basic.qos": 0}}
        got = obs.get("basic_method_counts") or {}
        for m in BASIC_METHODS.values():
            c["%s per direction == client's" % m] = all(
                (got.get(d) or {}).get(m) == want[d][m] for d in ("client_to_broker", "broker_to_client"))
        wp = pf.get("publishes") or []
        c["publish seqs on the wire (tshark publish_number) == client's"] = \
            [p["publish_number"] for p in wp] == [p["seq"] for p in fx["publishes"]]
        c["confirm of each publish on the wire == client's outcome"] = len(wp) == len(fx["publishes"]) and all(
            (w["confirm"] == "ack" and (w["returned"] == (p["outcome"] == "returned")) and p["outcome"] in ("ack", "returned"))
            or (w["confirm"] == "nack" and p["outcome"] == "nack")
            for w, p in zip(wp, fx["publishes"]))
        c["returns on the wire: 312 NO_ROUTE, for the client's returned publishes"] = [
            (w["seq"], w.get("reply_code")) for w in wp if w["returned"]] == [
            (p["seq"], p.get("reply_code")) for p in fx["publishes"] if p["outcome"] == "returned"]
        c["message ids of the publishes on the wire == client's"] = [w["message_id"] for w in wp] == [
            p["message_id"] for p in fx["publishes"]]
        c["wire confirm latency <= client confirm latency, every publish"] = len(wp) == len(fx["publishes"]) and all(
            w.get("wire_latency_ms") is not None and w["wire_latency_ms"] <= (p["t_return"] - p["t_call"]) * 1000 + 1e-3
            for w, p in zip(wp, fx["publishes"]))
        wd = cf.get("deliveries") or []
        c["deliveries on the wire (tag, redelivered, message id) == client's"] = [
            (d["delivery_tag"], d["redelivered"], d["message_id"]) for d in wd] == [
            (d["delivery_tag"], d["redelivered"], d["message_id"]) for d in fx["deliveries"]]
        c["settlements on the wire (kind, tag, multiple, requeue) == client's"] = [
            (s["kind"], s["delivery_tag"], s["multiple"], s["requeue"]) for s in cf.get("settlements") or []] == [
            (s["kind"], s["delivery_tag"], s["multiple"], bool(s["requeue"]) if s["kind"] != "ack" else None)
            for s in fx["settlements"]]
        c["basic.qos prefetch_count on the wire == client's"] = cf.get("prefetch_count") == k["prefetch"]
        c["max unacked on the wire == client's == prefetch"] = cf.get("max_unacked") == k["max_unacked"] == k["prefetch"]
        client_settle = {}
        for s in fx["settlements"]:
            for tag in s["settles"]:
                client_settle[tag] = s["t"]
        c["wire ack latency >= client ack latency, every delivery"] = len(wd) == len(fx["deliveries"]) and all(
            w.get("wire_latency_ms") is not None
            and w["wire_latency_ms"] + 1e-3 >= (client_settle[d["delivery_tag"]] - d["t"]) * 1000
            for w, d in zip(wd, fx["deliveries"]))
    if name == "clean-close-s96" and conns:
        ms = conns[0]["methods"]
        c["Connection.Close(200) from client, Close-Ok from broker on the wire"] = [
            (m["from"], m["method"], m.get("reply_code")) for m in ms if m["method"] in ("10.50", "10.51")] == [
            ("client", "10.50", 200), ("broker", "10.51", None)]
        hb = conns[0]["heartbeat_frames"]
        c["heartbeats both ways"] = hb["client"] > 0 and hb["broker"] > 0
        c["clean close per pika and the broker log"] = bool(x["close"].get("clean"))
        tw = x.get("twin") or {}
        c["cut capture and full twin: the same packets"] = bool(tw.get("same_packets"))
        c["cut capture: snaplen 96 in its header, no packet longer"] = (tw.get("snaplen_header") or {}).get("cut") == 96 \
            and (tw.get("max_captured_length_cut") or 0) <= 96
    if name == "refused-then-connected" and conns:
        for r in x.get("refused_attempts", []):
            s = next((s for s in conns if s["client_port"] == r.get("client_port")), None)
            c["refused attempt [%s]:%s on the wire: client SYN, RST from the server, no data" % (r["address"], r["port"])] = bool(s) \
                and s.get("server_addr") == r["address"] and [y["flags"] for y in s.get("syns", [])] == ["SYN"] \
                and [(e["from"], "RST" in e["flags"]) for e in s["close_sequence"]] == [("broker", True)] \
                and not s["amqp_frames"]["client"] and not s["amqp_frames"]["broker"]
            c["errno in pika's log == the connector's (ECONNREFUSED)"] = bool(r.get("pika_log_errno")) \
                and r["pika_log_errno"]["errno"] == r.get("errno") and r.get("errno_name") == "ECONNREFUSED"
        fb = x.get("fallback") or {}
        s = next((s for s in conns if s["client_port"] == fb.get("client_port")), None)
        c["fallback connection to %s on the wire after the refused one" % fb.get("address")] = bool(s) \
            and s.get("server_addr") == fb.get("address") and all(
                s["first_frame"] > t["last_frame"] for t in conns if t is not s)
    if name == "haproxy-idle" and conns:
        legs = {g["leg"]: g for g in x.get("legs", [])}
        by_leg = {s.get("leg"): s for s in conns}
        c["both legs on the wire with the logged ports"] = all(
            by_leg.get(k) is not None and by_leg[k]["client_port"] == legs.get(k, {}).get("client_port")
            for k in ("client->haproxy", "haproxy->broker"))
        c["haproxy->broker port == the broker log's"] = legs.get("haproxy->broker", {}).get("client_port") == \
            legs.get("haproxy->broker", {}).get("broker_log_accepting_port")
        c["no heartbeat frames on either leg"] = all(
            s["heartbeat_frames"]["client"] == 0 and s["heartbeat_frames"]["broker"] == 0 for s in conns)
        f, b = by_leg.get("client->haproxy"), by_leg.get("haproxy->broker")
        c["haproxy closes first on both legs"] = bool(f and b and f["close_sequence"] and b["close_sequence"]) and \
            f["close_sequence"][0]["from"] == "broker" and b["close_sequence"][0]["from"] == "client"
        tt = ((x.get("proxy_session_log") or {}).get("fields") or {}).get("Tt")
        c["haproxy session time Tt >= timeout client"] = isinstance(tt, int) and tt >= 4000
    if name == "channel-error-404" and conns:
        codes = [m.get("reply_code") for m in conns[0]["methods"] if m["method"] == "20.40" and m["from"] == "broker"]
        c["Channel.Close 404 x2 on the wire"] = codes == [404, 404]
    if name == "connection-forced-320" and conns:
        codes = [m.get("reply_code") for m in conns[0]["methods"] if m["method"] == "10.50"]
        c["Connection.Close 320 on the wire"] = 320 in codes
    if name == "healthy-heartbeats" and conns:
        hb = conns[0]["heartbeat_frames"]
        c["heartbeats both ways"] = hb["client"] > 0 and hb["broker"] > 0
    if name == "large-messages" and conns:
        c["frame_max 4096 in Tune-Ok"] = (conns[0].get("tune_ok") or {}).get("frame_max") == 4096
    if name == "broker-restart" and conns:
        items = {i["client_port"]: i for i in x.get("clients", [])}
        wire = {s["client_port"]: [m for m in s["methods"] if m["method"] == "10.50" and m["from"] == "broker"]
                for s in conns}
        c["one Connection.Close from the broker on every connection"] = all(len(m) == 1 for m in wire.values())
        c["each Close on the wire (reply code, text) == the one pika decoded"] = bool(items) and all(
            len(wire.get(p) or []) == 1 and i["close_received"] is not None
            and (wire[p][0].get("reply_code"), wire[p][0].get("reply_text")) == (
                i["close_received"]["reply_code"], i["close_received"]["reply_text"])
            for p, i in items.items())
        ts = [m[0]["t"] for m in wire.values() if m]
        c["the broker's Closes on the wire within 1 s of each other"] = bool(ts) and max(ts) - min(ts) <= 1.0
        stop = (x.get("restart") or {}).get("stop_app") or {}
        stop_t = datetime.datetime.fromisoformat(stop["started"]).timestamp() if stop.get("started") else None
        c["every connection opened before stop_app, closed after it started"] = stop_t is not None and all(
            s["first_time"] < stop_t and (not wire[s["client_port"]] or wire[s["client_port"]][0]["t"] > stop_t)
            for s in conns)
        c["every client's exception carries its Close's reply code"] = bool(items) and all(
            i["exception"] is not None and i["close_received"] is not None
            and i["exception"].get("reply_code") == i["close_received"]["reply_code"] for i in items.values())
        c["a broker log connection_forced error line for every client"] = bool(items) and all(
            any(e["kind"] == "connection_exception" and "connection_forced" in e["message"] for e in i["broker_log_close"])
            for i in items.values())
        c["broker running again after start_app"] = bool(((x.get("restart") or {}).get("broker_running_after")
                                                          or {}).get("value"))
    if name == "blocked" and conns:
        ms = [m["method"] for m in conns[0]["methods"]]
        c["Connection.Blocked/Unblocked on the wire"] = "10.60" in ms and "10.61" in ms
    return c


def close_story(obs):
    if not obs or not obs["connections"]:
        return "no tcp"
    parts = []
    for s in obs["connections"][:1]:
        seq = [(e["frame"], "%s:%s" % (e["from"], "RST" if "RST" in e["flags"] else "FIN")) for e in s["close_sequence"]]
        seq += [(a["frame"], "%s:alert(%s)" % (a["from"], a["name"] or a["description"]))
                for a in (s.get("tls") or {}).get("alerts", [])]
        parts.append(" ".join(x for _, x in sorted(seq)) or "open")
        if s.get("tls"):
            parts.insert(0, "%s %s" % (s["tls"]["version"], s["tls"]["cipher_suite"]))
    if len(obs["connections"]) > 1:
        parts.append("(+%d more conns)" % (len(obs["connections"]) - 1))
    return " ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--client-rc", type=int, default=0)
    ap.add_argument("--broker-log", required=True)
    ap.add_argument("--broker-log-path", default="")
    ap.add_argument("--broker-version", default="")
    ap.add_argument("--listen-options", default="")
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--tcpdump-stderr", default="")
    ap.add_argument("--recorded-by", default="")
    ap.add_argument("--amqp-port", type=int, default=AMQP_PORT, help="the broker's port (5671 for TLS)")
    ap.add_argument("--keylog", default="", help="TLS captures: the client's NSS key log file")
    ap.add_argument("--broker-otp", default="", help="the broker's Erlang/OTP version")
    ap.add_argument("--ssl-options", default="", help="TLS captures: the broker's ssl_options")
    ap.add_argument("--filter", default="", help="tcpdump's filter (default: tcp port AMQP_PORT)")
    ap.add_argument("--broker-log-file", default="", help="the name of the broker log excerpt saved beside the capture")
    ap.add_argument("--broker-log-format", default="text", help="text, or json (RabbitMQ's JSON log formatter)")
    ap.add_argument("--broker-log-formatter", default="", help="the broker's file log formatter module")
    ap.add_argument("--proxy-port", type=int, default=0, help="haproxy-idle: the proxy's port")
    ap.add_argument("--full-twin", default="", help="clean-close-s96: the -s 0 twin of the cut --pcap")
    ap.add_argument("--snaplen", type=int, default=0, help="clean-close-s96: tcpdump -s of --pcap")
    ap.add_argument("--twin-tcpdump-stderr", default="", help="clean-close-s96: the -s 96 tcpdump's stderr")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    with open(a.client) as f:
        client = json.load(f)
    with open(a.broker_log, errors="replace") as f:
        log = parse_broker_log(f.read())
    def tcpdump_counts(path):
        counts = {}
        if path and os.path.exists(path):
            txt = open(path).read()
            for key, pat in (("captured", r"(\d+) packets? captured"), ("received_by_filter", r"(\d+) packets? received by filter"),
                             ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
                m = re.search(pat, txt)
                if m:
                    counts[key] = int(m.group(1))
        return counts
    # clean-close-s96: --pcap is the cut capture (-s 96, its own tcpdump: --twin-tcpdump-stderr), --full-twin its
    # -s 0 twin (--tcpdump-stderr), which tshark decodes
    tcpdump = tcpdump_counts(a.twin_tcpdump_stderr if a.full_twin else a.tcpdump_stderr)
    decoded = a.full_twin or a.pcap
    # ports of this scenario's TCP connections besides pika's: refused connects, a proxy's leg to the broker
    own_ports = [c.get("client_port") for c in client.get("connections", [])]
    own_ports += [t.get("client_port") for t in client.get("connect_attempts") or [] if t.get("result") != "connected"]
    own_ports += [x.get("backend_source_port") for x in (client.get("haproxy") or {}).get("sessions") or []]
    log, log_left_out = own_entries(log, own_ports)
    kind = client.get("base_scenario") or a.scenario
    obs = observe(decoded, a.amqp_port, a.keylog or None, client, kind, a.proxy_port or None)
    if obs is not None and a.full_twin:
        obs["decoded_file"] = os.path.basename(decoded)
    x = build_expect(kind, client, log, a.listen_options, a.amqp_port, obs)
    if a.full_twin:
        x["twin"] = compare_twin(a.pcap, a.full_twin, a.snaplen)
    if a.broker_log_format != "text":
        ex = next((e for e in log if e["kind"] == "missed_heartbeats"), None) or (log[0] if log else None)
        x["broker_log_format"] = {
            "value": a.broker_log_format, "formatter": a.broker_log_formatter or None,
            "example_entry": {k: ex[k] for k in ("time", "level", "erlang_pid", "message", "domain") if k in ex} if ex else None,
            "source": "scripts/broker with AMQPSCOPE_BROKER_LOG_FORMAT=json (rabbitmq.conf log.file.formatter = json); "
                      "formatter: rabbitmqctl eval of the file output's formatter in application:get_env(rabbit, log); "
                      "every broker_log entry here was parsed from one JSON line (time, level, msg, pid, domain)"}
    x["scenario"] = a.scenario
    if kind != a.scenario:
        x["base_scenario"] = kind
    tls = next((c["tls"] for c in client.get("connections", []) if c.get("tls")), None)
    if tls:
        x["tls"] = {"version": tls["version"], "cipher": tls["cipher"], "cipher_iana": iana_cipher(tls["cipher"]),
                    "sni": tls["sni"], "keylog_file": tls["keylog_file"],
                    "source": tls["source"] + "; cipher_iana: `openssl ciphers -V -stdname` on this machine"}
    truth = {
        "schema": "amqpscope-capture-truth/1",
        "scenario": a.scenario,
        "capture": {
            "file": os.path.basename(a.pcap),
            "bytes": os.path.getsize(a.pcap),
            "tcpdump": tcpdump,
            "filter": a.filter or "tcp port %d" % a.amqp_port, "interface": "lo",
            "recorded_by": a.recorded_by or "scripts/record-captures " + a.scenario,
        },
        "versions": {
            "rabbitmq": a.broker_version.strip(),
            "rabbitmq_source": "rabbitmqctl version",
            "pika": client.get("pika_version"),
            "python": client.get("python_version"),
        },
    }
    if a.full_twin:
        truth["capture"].update({
            "cut": True, "snaplen": a.snaplen, "snaplen_in_file_header": pcap_snaplen(a.pcap),
            "full_twin": {"file": os.path.basename(a.full_twin), "bytes": os.path.getsize(a.full_twin),
                          "snaplen": 0, "snaplen_in_file_header": pcap_snaplen(a.full_twin),
                          "tcpdump": tcpdump_counts(a.tcpdump_stderr)},
            "how": "two tcpdumps on lo with the same filter running at the same time: -s %d wrote %s (every packet "
                   "cut to its first %d bytes), -s 0 wrote %s (whole packets); capture_observed is decoded from the "
                   "full twin" % (a.snaplen, os.path.basename(a.pcap), a.snaplen, os.path.basename(a.full_twin))})
    if a.broker_otp:
        truth["versions"]["erlang_otp"] = a.broker_otp.strip().strip('"')
        truth["versions"]["erlang_otp_source"] = "rabbitmqctl eval (the OTP_VERSION file of the broker's Erlang)"
    if tls:
        truth["versions"]["openssl_client"] = tls.get("openssl")
        truth["tls"] = dict(x["tls"], keylog_file=os.path.basename(a.keylog) if a.keylog else tls["keylog_file"])
        truth["capture"]["keylog"] = truth["tls"]["keylog_file"]
    truth.update({
        "broker": {
            "address": client.get("broker_address"),
            "tcp_listen_options": a.listen_options.strip(),
            "tcp_listen_options_source": "rabbitmqctl eval 'application:get_env(rabbit, tcp_listen_options).'",
            "log_file": a.broker_log_path,
        },
        "expect": x,
        "client": {k: client.get(k) for k in ("started", "finished", "failing_call", "result", "connections",
                                              "connect_attempts", "hosts_tried", "haproxy",
                                              "events", "exceptions", "os_errors", "heartbeats", "frames",
                                              "scenario_error", "pika_log", "pika_log_dropped",
                                              "close_reason_given", "broker_connection_pid", "base_scenario",
                                              "tls_requested", "sends", "roles", "flow_plan", "flow_consumer_state",
                                              "restart_plan", "broker_running_after")
                   if client.get(k) is not None},
        "client_exit_status": a.client_rc,
        "broker_log": log,
        "capture_observed": obs,
    })
    if log_left_out:
        truth["broker_log_left_out"] = {
            "entries": log_left_out,
            "why": "they name other clients' connections (port or Erlang pid) that used the broker while this "
                   "scenario ran"}
    if a.broker_log_file:
        truth["broker"]["log_excerpt"] = a.broker_log_file
        truth["broker"]["log_excerpt_what"] = ("the bytes the broker appended to log_file while the scenario ran, "
                                               "as they are (broker_log below is parsed from them)")
    if a.broker_log_format != "text":
        truth["broker"]["log_format"] = a.broker_log_format
        truth["broker"]["log_formatter"] = a.broker_log_formatter or None
    if (client.get("haproxy") or {}).get("version"):
        truth["versions"]["haproxy"] = client["haproxy"]["version"]
        truth["versions"]["haproxy_source"] = "haproxy -v"
    if a.ssl_options:
        truth["broker"]["ssl_options"] = a.ssl_options.strip()
        truth["broker"]["ssl_options_source"] = "rabbitmqctl eval 'application:get_env(rabbit, ssl_options).'"
    truth["checks"] = checks(kind, x, obs, client)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(truth, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, a.out)

    # one-line summary
    exc = client.get("exceptions", [])
    err = ""
    if exc:
        e = exc[0]
        err = " %s%s%s%s" % (e["class"], " errno=%s(%s)" % (e["errno"], e.get("errno_name")) if e.get("errno") else "",
                             " ssl_errno=%s(%s)" % (e["ssl_errno"], e.get("ssl_errno_name")) if e.get("ssl_errno") else "",
                           " code=%s" % e["reply_code"] if e.get("reply_code") else "")
        if len(exc) > 1:
            err += " (+%d)" % (len(exc) - 1)
    bad = [k for k, ok in truth["checks"].items() if not ok]
    print("%-22s %s %6d B %4s pkts  conns=%-2s close=[%s]%s  checks=%s%s" % (
        a.scenario, "ok  " if a.client_rc == 0 else "FAIL", truth["capture"]["bytes"], tcpdump.get("captured", "?"),
        obs["tcp_connections"] if obs else "?", close_story(obs), err,
        "%d/%d" % (len(truth["checks"]) - len(bad), len(truth["checks"])), (" FAILED: " + "; ".join(bad)) if bad else ""))
    return 0 if a.client_rc == 0 and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
