"""The TCP walk both truth builders (make_truth.py for 0-9-1, amqp10_truth.py for 1.0) share over tshark's JSON:
per client port, a stream record with its packets, first and last frame, and its FIN/RST sequence."""


def flags_of(tcp):
    """The TCP flags of a tshark "tcp" layer, by name."""
    ft = tcp.get("tcp.flags_tree", {})
    return [n for n, k in (("SYN", "tcp.flags.syn"), ("FIN", "tcp.flags.fin"), ("RST", "tcp.flags.reset"),
                           ("PSH", "tcp.flags.push"), ("ACK", "tcp.flags.ack")) if ft.get(k) == "1"]


def tcp_packets(pkts, broker_port, streams, fields, close_time=None):
    """Yields (stream, side, layers, frame number, epoch time) for every TCP packet of tshark's JSON `pkts`, after
    counting it in `streams` (by client port; a new stream gets the common keys and `fields()`). A FIN or RST is
    appended to the stream's close_sequence, with an ISO "time" when `close_time` formats one. broker_port: the
    server's port, or several (a proxy's and the broker's): the "broker" side of a stream is the one on any of
    them, and the stream's broker_port is the one it used."""
    server_ports = set(broker_port) if isinstance(broker_port, (list, tuple, set, frozenset)) else {broker_port}
    for pk in pkts:
        layers = pk["_source"]["layers"]
        fr, tcp = layers.get("frame", {}), layers.get("tcp")
        if not tcp:
            continue
        num = int(fr.get("frame.number", 0))
        t = float(fr.get("frame.time_epoch", 0))
        sp, dp = int(tcp["tcp.srcport"]), int(tcp["tcp.dstport"])
        side = "broker" if sp in server_ports else "client"
        cport = dp if side == "broker" else sp
        s = streams.get(cport)
        if s is None:
            s = streams[cport] = {"client_port": cport, "broker_port": sp if side == "broker" else dp,
                                  "tcp_stream": int(tcp.get("tcp.stream", -1)), "first_frame": num,
                                  "first_time": t, "packets": 0, **fields()}
        s["packets"] += 1
        s["last_frame"], s["last_time"] = num, t
        fl = flags_of(tcp)
        if "FIN" in fl or "RST" in fl:
            entry = {"frame": num, "t": t}
            if close_time:
                entry["time"] = close_time(t)
            entry.update({"from": side, "src_port": sp, "flags": ",".join(f for f in fl if f in ("FIN", "RST", "ACK")),
                          "tcp_len": int(tcp.get("tcp.len", 0))})
            s["close_sequence"].append(entry)
        yield s, side, layers, num, t
