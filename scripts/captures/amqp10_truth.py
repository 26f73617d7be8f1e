#!/usr/bin/python3
"""Builds captures/amqp10/NAME.truth.json from what the Proton client and the broker recorded (AMQP 1.0).

Inputs (all written by scripts/record-captures-amqp10):
  --client        the client's JSON (scripts/captures/amqp10_scenarios.py): actions, Proton events,
                  exceptions with conditions, Proton's frame trace
  --broker-log    the bytes the broker appended to its log while the scenario ran: RabbitMQ's log file,
                  or the Proton example broker's stdout/stderr (its PN_TRACE_FRM frame trace and the
                  conditions it prints), each line stamped with UTC time by scripts/proton-broker
  --pcap          the capture, already cut down to the scenario's client ports
  --keylog        TLS scenarios (rabbitmq10-tls-*): the NSS key log the client's LD_PRELOAD shim wrote, with which
                  tshark decrypts the capture (-o tls.keylog_file:FILE -d tcp.port==PORT,tls)

Sections of the output, like the AMQP 0-9-1 truth files (captures/README.md):
  client, broker_log, broker   ground truth as the two programs recorded it
  expect                       the facts a decoder should find, each with a "source"
  capture_observed             what tshark decodes from the pcap (a cross-check, NOT ground truth)
  checks                       expect vs capture_observed
Prints one summary line.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

from make_truth import iana_cipher, observe_tls
from tshark_tcp import tcp_packets

PERFORMATIVES = {16: "open", 17: "begin", 18: "attach", 19: "flow", 20: "transfer", 21: "disposition",
                 22: "detach", 23: "end", 24: "close"}
SASL = {64: "sasl-mechanisms", 65: "sasl-init", 66: "sasl-challenge", 67: "sasl-response", 68: "sasl-outcome"}


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")


# --- frame traces (Proton's TRACE_FRM text, client and Proton broker) --------------------------

_ERR = re.compile(r'error=@error\(29\) \[condition=:"?([^",\]]+)"?(?:, description="((?:[^"\\]|\\.)*)")?')
_IDLE = re.compile(r"idle-time-out=0x([0-9a-f]+)")


def frame_kind(text):
    """'open', 'flow', 'sasl-init', 'empty', 'header:AMQP', 'header:SASL', 'EOS' from one trace line."""
    text = text.strip()
    m = re.match(r"@([a-z-]+)\(\d+\)", text)
    if m:
        return m.group(1)
    if text.startswith("(EMPTY FRAME)"):
        return "empty"
    if text in ("AMQP", "SASL"):
        return "header:" + text
    if text.startswith("EOS"):
        return "EOS"
    return "other"


def frame_error(text):
    m = _ERR.search(text)
    if not m:
        return None
    desc = m.group(2)
    if desc is not None:
        desc = desc.replace("\\x27", "'").replace("\\x22", '"').replace("\\x0a", "\n")
    return {"condition": m.group(1), "description": desc}


def summarize_trace(frames):
    """frames: [[t, 'sent'|'recv', channel, text]] -> counts per direction, empties, errors, open values."""
    out = {"sent": {}, "recv": {}, "empty_times": {"sent": [], "recv": []}, "errors": [], "open": {}}
    for t, d, ch, text in frames:
        if d not in ("sent", "recv"):
            continue
        k = frame_kind(text)
        out[d][k] = out[d].get(k, 0) + 1
        if k == "empty":
            out["empty_times"][d].append(t)
        if k == "open":
            m = _IDLE.search(text)
            out["open"][d] = {"idle_time_out_ms": int(m.group(1), 16) if m else None, "time": iso(t)}
        e = frame_error(text)
        if e:
            out["errors"].append({"t": t, "time": iso(t), "direction": d, "performative": k, **e})
    return out


def intervals(ts):
    if len(ts) < 2:
        return None
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    return {"count": len(ts), "median_s": round(statistics.median(gaps), 3), "min_s": round(min(gaps), 3),
            "max_s": round(max(gaps), 3), "first": iso(ts[0]), "last": iso(ts[-1])}


# --- broker logs -------------------------------------------------------------------------------

RMQ_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d) \[(\w+)\] <([\d.]+)> ?(.*)$")
CONN_ADDR = re.compile(r"\((\d+\.\d+\.\d+\.\d+):(\d+) -> (\d+\.\d+\.\d+\.\d+):(\d+)")
CONN_PID = re.compile(r"connection <([\d.]+)>")


def rmq_classify(msg):
    rules = [("accepting", "accepting AMQP connection"), ("authenticated", "authenticated and granted access"),
             ("login_refused", "login refused"),
             ("missed_heartbeats", "missed heartbeats from client"),
             ("connection_error_1_0", "Error on AMQP 1.0 connection"),
             ("session_closed", "Closing session for connection"), ("channel_error", "caused a channel exception"),
             ("channel_error", "Channel error on connection"),
             ("close_connection_request", "Closing connection"), ("closing", "closing AMQP connection"),
             ("client_closed_tcp", "client unexpectedly closed TCP connection")]
    for kind, needle in rules:
        if needle in msg:
            return kind
    return "other"


def parse_rabbit_log(text, ports):
    entries = []
    for raw in text.splitlines():
        m = RMQ_LINE.match(raw)
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
        t = datetime.datetime.fromisoformat(e.pop("time_raw"))
        e["t"] = t.timestamp()
        e["time"] = t.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")
        m = CONN_ADDR.search(e["message"])
        if m:
            e["client_port"], e["broker_port"] = int(m.group(2)), int(m.group(4))
        m = CONN_PID.search(e["message"])
        if m:
            e["connection_pid"] = m.group(1)
        e["kind"] = rmq_classify(e["message"])
    # Keep only this scenario's connections: entries naming our client ports, then (twice) entries by or
    # about the Erlang processes those name (reader, session, channel processes of the 1.0 connection).
    pids = set()
    for e in entries:
        if e.get("client_port") in ports:
            pids.add(e["erlang_pid"])
            if e.get("connection_pid"):
                pids.add(e["connection_pid"])
    for _ in range(2):
        for e in entries:
            if e.get("connection_pid") in pids or e["erlang_pid"] in pids:
                pids.add(e["erlang_pid"])
    kept = [e for e in entries if e.get("client_port") in ports or e["erlang_pid"] in pids
            or e.get("connection_pid") in pids]
    return kept, len(entries) - len(kept)


PROTON_LINE = re.compile(r"^(\S+) (.*)$")
PROTON_FRAME = re.compile(r"^\[(0x[0-9a-f]+)\]:\s*(?:AMQP|IO|SASL)?:?FRAME:\s*(\d*)\s*(->|<-)\s*(.*)$")


def parse_proton_log(text):
    """The example broker's stdout/stderr: frame trace lines and printed conditions, each stamped."""
    entries, frames = [], []
    for raw in text.splitlines():
        m = PROTON_LINE.match(raw)
        if not m:
            continue
        try:
            t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
        except ValueError:
            continue
        msg = m.group(2)
        fm = PROTON_FRAME.match(msg)
        if fm:
            frames.append([round(t, 6), "sent" if fm.group(3) == "->" else "recv",
                           int(fm.group(2)) if fm.group(2) else None, fm.group(4)[:1500], fm.group(1)])
            continue
        kind = "condition" if msg.startswith("PN_") else "other"
        entries.append({"t": t, "time": iso(t), "kind": kind, "message": msg})
    return entries, frames


# --- capture (tshark) ---------------------------------------------------------------------------

def tshark_cmd(pcap, port, keylog=None):
    if keylog:  # decrypt with the key log; AMQP is then dissected inside the TLS records
        return ["tshark", "-r", pcap, "-o", "tls.keylog_file:" + keylog, "-d", "tcp.port==%d,tls" % port, "-T", "json",
                "--no-duplicate-keys", "-J", "frame tcp tls amqp"]
    return ["tshark", "-r", pcap, "-d", "tcp.port==%d,amqp" % port, "-T", "json", "--no-duplicate-keys",
            "-J", "frame tcp amqp"]


def tshark_json(pcap, port, keylog=None):
    try:
        p = subprocess.run(tshark_cmd(pcap, port, keylog), capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        print("amqp10_truth: tshark failed: %r" % e, file=sys.stderr)
        return None


def _find_key(obj, suffix):
    """First value whose key ends with suffix, anywhere in a tshark JSON tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith(suffix) and not isinstance(v, (dict, list)):
                return v
            r = _find_key(v, suffix)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = _find_key(v, suffix)
            if r is not None:
                return r
    return None


def client_randoms(tls):
    """The ClientHello random(s) in one packet's tls layer (to match against the key log)."""
    out = []
    for layer in tls if isinstance(tls, list) else [tls] if tls else []:
        recs = layer.get("tls.record") if isinstance(layer, dict) else None
        for r in recs if isinstance(recs, list) else [recs] if recs else []:
            hs = r.get("tls.handshake") if isinstance(r, dict) else None
            for h in hs if isinstance(hs, list) else [hs] if hs else []:
                if isinstance(h, dict) and h.get("tls.handshake.type") == "1":
                    rnd = _find_key(h, "tls.handshake.random")
                    if rnd:
                        out.append(rnd.replace(":", "").lower())
    return out


def observe(pcap, broker_port, keylog=None):
    pkts = tshark_json(pcap, broker_port, keylog)
    if pkts is None:
        return None
    streams = {}
    fields = lambda: {"protocol_headers": {"client": [], "broker": []}, "frames": {"client": {}, "broker": {}},
                      "empty_frames": {"client": [], "broker": []},
                      "open": {}, "errors": [], "performatives": [], "close_sequence": []}
    for s, side, L, num, t in tcp_packets(pkts, broker_port, streams, fields, close_time=iso):
        amqp = L.get("amqp")
        if keylog:
            # make_truth's TLS walk (handshake parameters, records by content type, alerts); its "heartbeat"
            # record lengths are here those of records that hold one AMQP 1.0 empty frame and nothing else
            alist = [a for a in (amqp if isinstance(amqp, list) else [amqp] if amqp else []) if "amqp.type" in a]
            only_empty = len(alist) == 1 and alist[0].get("amqp.length") == "8"
            observe_tls(s, side, num, t, L.get("tls"), [8] if only_empty else [], bool(amqp))
            if side == "client":
                for rnd in client_randoms(L.get("tls")):
                    s["tls"].setdefault("client_randoms", []).append(rnd)
        if amqp is None:
            continue
        for a in amqp if isinstance(amqp, list) else [amqp]:
            if "amqp.init.id" in a:
                s["protocol_headers"][side].append({"frame": num, "protocol_id": int(a["amqp.init.id"]),
                                                    "version": "%s.%s.%s" % (a.get("amqp.init.version_major"),
                                                                             a.get("amqp.init.version_minor"),
                                                                             a.get("amqp.init.version_revision"))})
                continue
            if "amqp.type" not in a:
                continue
            counts = s["frames"][side]
            if "amqp.performative" in a:
                name = PERFORMATIVES.get(int(a["amqp.performative"]), "performative-%s" % a["amqp.performative"])
            elif "amqp.sasl.method" in a:
                name = SASL.get(int(a["amqp.sasl.method"]), "sasl-%s" % a["amqp.sasl.method"])
            elif a.get("amqp.length") == "8":
                name = "empty"
            else:
                name = "undecoded"
            counts[name] = counts.get(name, 0) + 1
            if name == "empty":
                s["empty_frames"][side].append(round(t, 6))
                continue
            args = a.get("amqp.method.arguments")
            if name in ("sasl-init", "sasl-outcome") and isinstance(args, dict):
                sasl = s.setdefault("sasl", {})
                if name == "sasl-init":
                    sasl["mechanism"] = args.get("amqp.sasl.mechanism")
                else:
                    code = args.get("amqp.sasl.saslCode")
                    sasl.update({"outcome_code": int(code) if code is not None else None, "outcome_frame": num,
                                 "outcome_time": iso(t)})
            if name == "open" and isinstance(args, dict):
                it = args.get("amqp.performative.arguments.idleTimeout")
                s["open"][side] = {"frame": num, "idle_time_out_ms": int(it) if it is not None else None,
                                   "container_id": args.get("amqp.performative.arguments.containerId")}
            entry = {"frame": num, "t": round(t, 6), "from": side, "channel": int(a.get("amqp.channel", -1)),
                     "performative": name}
            cond = _find_key(args, ".condition") if isinstance(args, (dict, list)) else None
            if cond is not None:
                entry["error"] = {"condition": cond, "description": _find_key(args, ".description")}
                s["errors"].append({"frame": num, "time": iso(t), "from": side, "performative": name,
                                    **entry["error"]})
            if name not in ("flow",) and len(s["performatives"]) < 80:
                s["performatives"].append(entry)
    how = ("-o tls.keylog_file:%s -d tcp.port==%d,tls" % (os.path.basename(keylog), broker_port) if keylog
           else "-d tcp.port==%d,amqp" % broker_port)
    out = {"source": "tshark %s -T json on the capture (decoder cross-check, not ground truth)" % how,
           "packets": len(pkts), "tcp_connections": len(streams), "connections": []}
    for s in sorted(streams.values(), key=lambda x: x["first_frame"]):
        (s.get("tls") or {}).pop("_client_app_data_seen", None)
        e = s.pop("empty_frames")
        s["empty_frame_intervals"] = {k: intervals(v) for k, v in e.items()}
        s["empty_frame_times"] = {k: (v if len(v) <= 60 else v[:60]) for k, v in e.items()}
        out["connections"].append(s)
    return out


# --- expect ------------------------------------------------------------------------------------

def events(client, action):
    return [e for e in client.get("events", []) if e.get("action") == action]


def first_event_time(client, action):
    ev = events(client, action)
    return ev[0]["time"] if ev else None


def build_expect(name, client, broker_kind, broker_port, log, proton_frames):
    x = {"scenario": name}
    conns = client.get("connections", [])
    x["connections"] = {"count": len(conns), "client_ports": [c.get("client_port") for c in conns],
                        "broker_port": broker_port,
                        "source": "client socket getsockname()/getpeername() (proton Transport's socket)"}
    traces = {label: summarize_trace(fr) for label, fr in (client.get("frames") or {}).items()}
    x["per_connection"] = []
    for c in conns:
        tr = traces.get(c["label"]) or {}
        o = tr.get("open", {})
        x["per_connection"].append({
            "client_port": c.get("client_port"),
            "client_local_idle_timeout_s": c.get("local_idle_timeout_s"),
            "client_open_idle_time_out_ms": (o.get("sent") or {}).get("idle_time_out_ms"),
            "broker_open_idle_time_out_ms": (o.get("recv") or {}).get("idle_time_out_ms"),
            "broker_container_id": c.get("remote_container"),
            "broker_properties": c.get("remote_properties"),
            "frames_sent_by_client": tr.get("sent"),
            "frames_received_by_client": tr.get("recv"),
            "empty_frames_received": intervals(tr.get("empty_times", {}).get("recv", [])),
            "empty_frames_sent": intervals(tr.get("empty_times", {}).get("sent", [])),
            "errors_in_frames": tr.get("errors"),
            "source": "Proton's frame trace in the client (Transport.trace(TRACE_FRM) with a tracer that stamps "
                      "each frame as Proton writes it to / reads it from its buffers; 'sent' frames that the "
                      "socket could not take never reached the wire); open values as Proton printed them",
        })
    exc = client.get("exceptions", [])
    if exc:
        e = exc[0]
        x["client_error"] = {k: e.get(k) for k in ("class", "qualified_class", "message", "condition",
                                                  "during", "time", "endpoint_state")}
        x["client_error"]["source"] = "exception raised by Proton's %s (first of %d)" % (e.get("during"), len(exc))
    x["client_conditions"] = [{k: c.get(k) for k in ("time", "event", "endpoint", "condition")}
                              for c in client.get("conditions", []) if c.get("condition")]
    silent = events(client, "silent_start")
    if silent:
        x["silent_window"] = {"from": silent[0]["time"], "to": first_event_time(client, "silent_end"),
                              "seconds": silent[0].get("seconds"), "how": silent[0].get("how"),
                              "source": "client events silent_start/silent_end"}
    if events(client, "broker_sigstop"):
        x["broker_frozen"] = {"sigstop_at": first_event_time(client, "broker_sigstop"),
                              "sigcont_at": first_event_time(client, "broker_sigcont"),
                              "pid": client.get("broker_pid"), "source": "client events broker_sigstop/broker_sigcont"}
    if client.get("result"):
        x["messages"] = client["result"]
        x["messages"]["received"] = [{k: e.get(k) for k in ("time", "body", "presettled_by_broker")}
                                     for e in events(client, "received")]
        x["messages"]["sent_outcomes"] = [{k: e.get(k) for k in ("time", "n", "remote_state", "settled")}
                                          for e in events(client, "send_settled")]
    if broker_kind == "proton":
        bt = summarize_trace([f[:4] for f in proton_frames])
        x["broker_side"] = {
            "frames_sent_by_broker": bt["sent"], "frames_received_by_broker": bt["recv"],
            "errors_in_frames": bt["errors"],
            "printed_conditions": [{"time": e["time"], "message": e["message"]} for e in log if e["kind"] == "condition"],
            "source": "the example broker's PN_TRACE_FRM frame trace and what broker.c printed (scripts/proton-broker log)"}
    else:
        x["broker_log"] = ["%s [%s] %s" % (e["time"], e["level"], e["message"].replace("\n", " ")[:300])
                           for e in log if e["kind"] != "other" or e["level"] in ("warning", "error")]
        mh = [e for e in log if e["kind"] == "missed_heartbeats"]
        if mh:
            m = re.search(r"timeout: (\S+)", mh[0]["message"])
            x["missed_heartbeats"] = {"at": mh[0]["time"], "timeout_text": m.group(1) if m else None,
                                      "source": "broker log: " + mh[0]["message"].replace("\n", " ")[:200]}
    if client.get("tls"):
        x["tls"] = expect_tls(client["tls"])
    if client.get("sasl"):
        x["sasl"] = expect_sasl(client, log)
    if client.get("close_reason_given"):
        x["close_reason_given_to_rabbitmqctl"] = client["close_reason_given"]
    for k in ("rabbit_heartbeat_before", "broker_connection_pid", "failing_call"):
        if client.get(k) is not None:
            x[k] = client[k]
    return x


def expect_tls(tls):
    kl = tls.get("keylog") or {}
    return {"version": tls.get("protocol"), "cipher": tls.get("cipher"), "cipher_iana": iana_cipher(tls.get("cipher")),
            "sni": tls.get("peer_hostname"), "peer_cert_subject": tls.get("peer_cert_subject"),
            "keylog_file": kl.get("file"), "keylog_lines": kl.get("lines"), "keylog_labels": kl.get("labels"),
            "keylog_client_randoms": kl.get("client_randoms"),
            "source": "Proton's SSL object in the client (protocol_name(), cipher_name(), peer_hostname: the SNI it "
                      "sent and the name it verified); the key log as the LD_PRELOAD shim wrote it; cipher_iana: "
                      "`openssl ciphers -V -stdname` on this machine"}


_SASL_OUTCOME = re.compile(r"@sasl-outcome\(68\) \[code=0x([0-9a-f]+)")
_SASL_INIT = re.compile(r"@sasl-init\(65\) \[mechanism=:\"?([^\s,\]\"]+)")


def expect_sasl(client, log):
    """A SASL failure: Proton's SASL outcome and condition, its frame trace, and the broker's log line."""
    sasl = client["sasl"]
    x = {"mechanism": sasl.get("mechanism"), "outcome_code": sasl.get("outcome"),
         "outcome_name": sasl.get("outcome_name"), "client_condition": sasl.get("transport_condition")}
    init_t = outcome_t = eos_t = None
    for fr in (client.get("frames") or {}).values():
        for t, d, ch, text in fr:
            m = _SASL_INIT.match(text.strip())
            if m and d == "sent":
                x["mechanism_in_trace"], init_t = m.group(1), t
            m = _SASL_OUTCOME.match(text.strip())
            if m and d == "recv":
                x["outcome_code_in_trace"], outcome_t = int(m.group(1), 16), t
                x["outcome_read_at"] = iso(t)
            if d == "sent" and frame_kind(text) == "EOS" and eos_t is None:
                eos_t = t
    if init_t and outcome_t:
        x["outcome_after_sasl_init_s"] = round(outcome_t - init_t, 3)
    if eos_t:
        x["client_closed_at"] = iso(eos_t)
        x["client_closed_after_outcome_s"] = round(eos_t - outcome_t, 3) if outcome_t else None
    refused = [e for e in log if e["kind"] == "login_refused"]
    if refused:
        e = refused[0]
        m = re.search(r'\{symbol,<<"([^"]+)">>\}', e["message"])
        d = re.search(r'\{utf8,<<"((?:[^"\\]|\\.)*)">>\}', e["message"])
        x["broker_closed_at"] = e["time"]
        x["broker_condition"] = m.group(1) if m else None
        x["broker_description"] = d.group(1) if d else None
        x["broker_log"] = "%s [%s] %s" % (e["time"], e["level"], " ".join(e["message"].split())[:400])
    x["source"] = ("client: Proton's SASL object after BlockingConnection() raised (mech, pn_sasl_outcome) and the "
                   "transport condition; *_in_trace and the times: Proton's frame trace (sasl-init sent, sasl-outcome "
                   "read, EOS sent = the client closing its socket); broker_*: the broker log's 'closing AMQP "
                   "connection' entry (the time it logged it, then closed the socket)")
    return x


def checks(name, x, obs, broker_kind):
    if not obs:
        return {}
    c = {}
    conns = obs["connections"]
    c["tcp_connections == client connections"] = len(conns) == x["connections"]["count"]
    c["client ports match"] = sorted(s["client_port"] for s in conns) == sorted(p for p in x["connections"]["client_ports"] if p)
    by_port = {s["client_port"]: s for s in conns}
    for pc in x["per_connection"]:
        s = by_port.get(pc["client_port"])
        if not s:
            continue
        p = pc["client_port"]
        if (pc["frames_sent_by_client"] or {}).get("open") or (pc["frames_received_by_client"] or {}).get("open") \
                or s["open"]:   # (no Open either way, e.g. a SASL failure: nothing to compare)
            c["%d: client Open idle-time-out on the wire" % p] = (s["open"].get("client") or {}).get("idle_time_out_ms") == pc["client_open_idle_time_out_ms"]
            c["%d: broker Open idle-time-out on the wire" % p] = (s["open"].get("broker") or {}).get("idle_time_out_ms") == pc["broker_open_idle_time_out_ms"]
        # Every frame Proton read came off the wire from the broker, and every frame Proton wrote is on the
        # wire from the client (unless its socket refused it). Frames on the wire that the client never
        # read (it stopped reading, or closed first) are listed, not counted as a failure.
        def clean(d):
            return {k: v for k, v in (d or {}).items() if not k.startswith("header") and k not in ("EOS", "other")}
        got_b, got_c = s["frames"]["broker"], s["frames"]["client"]
        read = clean(pc["frames_received_by_client"])
        c["%d: every frame Proton read is on the wire from the broker" % p] = all(got_b.get(k, 0) >= v for k, v in read.items())
        unread = {k: got_b.get(k, 0) - read.get(k, 0) for k in got_b if got_b.get(k, 0) > read.get(k, 0)}
        if unread:
            c["%d: broker frames on the wire the client never read" % p] = unread
        sent = clean(pc["frames_sent_by_client"])
        c["%d: every client frame on the wire is one Proton sent" % p] = all(sent.get(k, 0) >= v for k, v in got_c.items())
        unsent = {k: v - got_c.get(k, 0) for k, v in sent.items() if v > got_c.get(k, 0)}
        if unsent:
            c["%d: frames Proton sent that never reached the wire" % p] = unsent
        bs = x.get("broker_side")
        if bs:
            bsent = clean(bs["frames_sent_by_broker"])
            c["%d: every broker frame on the wire is one the Proton broker sent" % p] = all(bsent.get(k, 0) >= v for k, v in got_b.items())
            bunsent = {k: v - got_b.get(k, 0) for k, v in bsent.items() if v > got_b.get(k, 0)}
            if bunsent:
                c["%d: frames the Proton broker sent that never reached the wire" % p] = bunsent
            c["%d: client frames on the wire == the Proton broker's received frames" % p] = clean(bs["frames_received_by_broker"]) == got_c
        wire_errors = [(e["from"], e["performative"], e["condition"]) for e in s["errors"]]
        trace_errors = [("broker" if e["direction"] == "recv" else "client", e["performative"], e["condition"])
                        for e in (pc["errors_in_frames"] or [])]
        c["%d: client errors on the wire were sent by Proton" % p] = \
            {e for e in wire_errors if e[0] == "client"} <= {e for e in trace_errors if e[0] == "client"}
        c["%d: broker errors Proton read are on the wire" % p] = \
            {e for e in trace_errors if e[0] == "broker"} <= {e for e in wire_errors if e[0] == "broker"}
    if x.get("tls"):
        tl = [s.get("tls") or {} for s in conns]
        t = tl[0] if tl else {}
        c["TLS version on the wire == Proton's"] = t.get("version") == x["tls"]["version"]
        c["TLS cipher suite on the wire == Proton's"] = bool(t.get("cipher_suite")) and \
            t.get("cipher_suite") == x["tls"]["cipher_iana"]
        c["SNI on the wire == Proton's peer_hostname"] = t.get("sni") == x["tls"]["sni"]
        c["the key log's client random is the ClientHello's"] = bool(t.get("client_randoms")) and \
            t.get("client_randoms") == x["tls"]["keylog_client_randoms"]
        c["every TLS application-data record decrypted to AMQP"] = all(
            o.get("app_data_records_without_amqp", 1) == 0 for o in tl)
    if x.get("sasl"):
        sa = (conns[0].get("sasl") or {}) if conns else {}
        c["SASL mechanism on the wire == Proton's"] = sa.get("mechanism") == x["sasl"]["mechanism"]
        c["sasl-outcome code on the wire == Proton's outcome"] = sa.get("outcome_code") == x["sasl"]["outcome_code"]
        c["Proton's outcome == the code in its frame trace"] = x["sasl"].get("outcome_code_in_trace") == x["sasl"]["outcome_code"]
    # values that are not booleans are explanations; keep them
    return c


def close_story(obs):
    if not obs or not obs["connections"]:
        return "no tcp"
    s = obs["connections"][0]
    return " ".join("%s:%s" % (e["from"], "RST" if "RST" in e["flags"] else "FIN") for e in s["close_sequence"]) or "open"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--broker-kind", choices=("proton", "rabbitmq"), required=True)
    ap.add_argument("--broker-port", type=int, required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--client-rc", type=int, default=0)
    ap.add_argument("--broker-log", required=True)
    ap.add_argument("--broker-log-path", default="")
    ap.add_argument("--broker-version", default="")
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--raw-pcap", default="")
    ap.add_argument("--filter", default="")
    ap.add_argument("--tcpdump-stderr", default="")
    ap.add_argument("--keylog", default="", help="TLS scenarios: the NSS key log to decrypt the capture with")
    ap.add_argument("--recorded-by", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    with open(a.client) as f:
        client = json.load(f)
    ports = {c.get("client_port") for c in client.get("connections", []) if c.get("client_port")}
    with open(a.broker_log, errors="replace") as f:
        text = f.read()
    proton_frames = []
    dropped = 0
    if a.broker_kind == "proton":
        log, proton_frames = parse_proton_log(text)
    else:
        log, dropped = parse_rabbit_log(text, ports)
    tcpdump = {}
    if a.tcpdump_stderr and os.path.exists(a.tcpdump_stderr):
        txt = open(a.tcpdump_stderr).read()
        for key, pat in (("captured", r"(\d+) packets? captured"), ("received_by_filter", r"(\d+) packets? received by filter"),
                         ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
            m = re.search(pat, txt)
            if m:
                tcpdump[key] = int(m.group(1))
    obs = observe(a.pcap, a.broker_port, a.keylog or None)
    x = build_expect(a.scenario, client, a.broker_kind, a.broker_port, log, proton_frames)
    tshark_version = subprocess.run(["tshark", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    truth = {
        "schema": "amqpscope-capture-truth/1",
        "protocol": "AMQP 1.0",
        "scenario": a.scenario,
        "capture": {
            "file": os.path.basename(a.pcap), "bytes": os.path.getsize(a.pcap), "tcpdump": tcpdump,
            "filter": a.filter, "interface": "lo",
            "recorded_with": "tcpdump -i lo 'tcp port %d', then tcpdump -r with the filter above (only this "
                             "scenario's client ports)" % a.broker_port,
            "recorded_by": a.recorded_by,
        },
        "versions": {
            "broker": a.broker_version.strip(),
            "broker_source": "rabbitmqctl version" if a.broker_kind == "rabbitmq" else "pkg-config / dpkg",
            "proton_python": client.get("proton_version"),
            "python": client.get("python_version"),
            "python_executable": client.get("python_executable"),
            "tshark": tshark_version,
        },
        "broker": {"kind": a.broker_kind, "address": "127.0.0.1:%d" % a.broker_port, "log_file": a.broker_log_path,
                   "log_lines_of_other_connections_dropped": dropped},
        "expect": x,
        "client": {k: client.get(k) for k in ("started", "finished", "failing_call", "result", "connections",
                                              "events", "exceptions", "conditions", "frames", "proton_log",
                                              "scenario_error", "close_reason_given", "broker_connection_pid",
                                              "broker_pid", "rabbit_heartbeat_before", "tls_requested", "tls",
                                              "credentials_given", "sasl")
                   if client.get(k) is not None},
        "client_exit_status": a.client_rc,
        "broker_log": log,
        "capture_observed": obs,
    }
    if proton_frames:
        truth["broker_frames"] = proton_frames
    if x.get("tls"):
        truth["tls"] = dict(x["tls"], keylog_file=os.path.basename(a.keylog) if a.keylog else x["tls"]["keylog_file"])
        truth["capture"]["keylog"] = truth["tls"]["keylog_file"]
        truth["capture"]["recorded_with"] += ("; TLS: decrypt with tshark -o tls.keylog_file:%s -d tcp.port==%d,tls"
                                              % (truth["tls"]["keylog_file"], a.broker_port))
        if (client.get("tls") or {}).get("openssl"):
            truth["versions"]["openssl_client"] = client["tls"]["openssl"]
    truth["checks"] = checks(a.scenario, x, obs, a.broker_kind)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)

    exc = client.get("exceptions", [])
    err = ""
    if exc:
        e = exc[0]
        err = " %s%s" % (e["class"], " %s" % e["condition"]["name"] if e.get("condition") else "")
    if x.get("sasl"):
        err += " sasl-outcome=%s" % x["sasl"].get("outcome_code")
    if x.get("tls"):
        err = " %s %s%s" % (x["tls"]["version"], x["tls"]["cipher_iana"], err)
    bools = {k: v for k, v in truth["checks"].items() if isinstance(v, bool)}
    bad = [k for k, ok in bools.items() if not ok]
    print("%-30s %s %6d B %4s pkts  conns=%-2s close=[%s]%s  checks=%d/%d%s" % (
        a.scenario, "ok  " if a.client_rc == 0 else "FAIL", truth["capture"]["bytes"], tcpdump.get("captured", "?"),
        obs["tcp_connections"] if obs else "?", close_story(obs), err, len(bools) - len(bad), len(bools),
        (" FAILED: " + "; ".join(bad)) if bad else ""))
    return 0 if a.client_rc == 0 and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
