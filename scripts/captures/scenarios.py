#!/usr/bin/env python3
"""pika clients for scripts/record-captures: python3 scenarios.py SCENARIO OUT.json

Each scenario talks to the private broker on 127.0.0.1 (scripts/broker) and records what the client
saw (actions with timestamps, exceptions with errno, negotiated tune values) in OUT.json. haproxy-idle goes
through a haproxy it runs itself (127.0.0.1:5673); refused-then-connected tries [::1]:5672 first;
broker-restart restarts the broker's RabbitMQ application (rabbitmqctl stop_app, start_app) under 40 clients.
The tls* scenarios run a plain scenario's client over TLS (port 5671, pika.SSLOptions); the NSS key
log goes to $AMQPSCOPE_TLS_KEYLOG.
Exit status is 0 when the scenario ran as designed (including the failures it is meant to provoke),
1 when something unexpected happened (recorded under "scenario_error").
"""

import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pika
import pika.exceptions

from common import HOST, PORT, Recorder, fail_hard, iso, now

HEARTBEAT = 2


def body_of(n, size):
    """Deterministic body: a short header then a repeating pattern."""
    head = ("amqpscope message %d size %d\n" % (n, size)).encode()
    pattern = bytes(range(32, 127))
    rest = (pattern * (size // len(pattern) + 1))[: max(0, size - len(head))]
    return (head + rest)[:size]


def publish(rec, ch, routing_key, body, n, exchange="", **kw):
    rec.event("basic_publish", n=n, exchange=exchange, routing_key=routing_key, body_size=len(body),
              channel=ch.channel_number, **kw)
    ch.basic_publish(exchange=exchange, routing_key=routing_key, body=body,
                     properties=pika.BasicProperties(content_type="application/octet-stream", delivery_mode=1))


def consume(rec, conn, ch, queue, count, limit=10.0):
    """basic_consume until `count` deliveries arrived (acking each), then cancel."""
    got = []

    def on_message(chan, method, props, body):
        got.append(body)
        rec.event("delivery", channel=chan.channel_number, delivery_tag=method.delivery_tag,
                  routing_key=method.routing_key, redelivered=method.redelivered, body_size=len(body),
                  body_sha256=hashlib.sha256(body).hexdigest())
        chan.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on_message, consumer_tag="amqpscope-consumer")
    rec.event("basic_consume", channel=ch.channel_number, queue=queue, consumer_tag=tag)
    deadline = time.time() + limit
    while len(got) < count and time.time() < deadline:
        conn.process_data_events(time_limit=0.2)
    ch.basic_cancel(tag)
    rec.event("basic_cancel", channel=ch.channel_number, consumer_tag=tag, received=len(got))
    return got


def close(rec, conn, label, reason=False):
    """conn.close(); with reason, the connection_closed event also says why pika closed the connection: the
    exception pika passes to on-close callbacks (ConnectionClosedByClient(200, 'Normal shutdown') once the
    broker's Close-Ok arrived) and when the callback ran."""
    got = []
    if reason:
        conn._impl.add_on_close_callback(lambda _c, r: got.append((now(), r)))
    rec.event("connection_close", connection=label)
    conn.close()
    extra = {}
    if reason:
        t, r = got[0] if got else (None, None)
        extra["close_reason"] = {"class": type(r).__name__ if r is not None else None,
                                 "reply_code": getattr(r, "reply_code", None),
                                 "reply_text": getattr(r, "reply_text", None),
                                 "callback_time": iso(t) if t else None,
                                 "source": "pika on-close callback (Connection.add_on_close_callback): the "
                                           "exception pika closed the connection with"}
    rec.event("connection_closed", connection=label, is_closed=conn.is_closed, **extra)


def declare(rec, ch, queue, **kw):
    ok = ch.queue_declare(queue, **kw)
    rec.event("queue_declare", channel=ch.channel_number, queue=queue, message_count=ok.method.message_count, **kw)
    return ok


# --- scenarios ---------------------------------------------------------------------------------

def healthy_heartbeats(rec, tls=None):
    conn = rec.connect("healthy", tls=tls, heartbeat=HEARTBEAT)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.healthy"
    declare(rec, ch, q, exclusive=True)
    bodies = [body_of(i, 64) for i in range(1, 4)]
    for i, b in enumerate(bodies, 1):
        publish(rec, ch, q, b, i)
    got = consume(rec, conn, ch, q, len(bodies))
    rec.data["result"] = {"published": len(bodies), "consumed": len(got), "bodies_match": got == bodies}
    idle = 7.0
    rec.event("idle_start", seconds=idle, how="connection.process_data_events(time_limit=0.5) in a loop")
    end = time.time() + idle
    while time.time() < end:
        conn.process_data_events(time_limit=0.5)
    rec.event("idle_end")
    close(rec, conn, "healthy")


def missed_heartbeats_104(rec, tls=None, label="silent"):
    conn = rec.connect(label, tls=tls, heartbeat=HEARTBEAT)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.silent"
    declare(rec, ch, q, exclusive=True)
    publish(rec, ch, q, body_of(1, 64), 1)
    silent_then_late_publish(
        rec, conn, ch, q, 10.0, "time.sleep() without process_data_events: pika reads nothing and sends no heartbeats",
        "late publish after the silent period")


def silent_then_late_publish(rec, conn, ch, q, seconds, how, note):
    """The application stops servicing the connection for `seconds`, then publishes again and records what failed."""
    rec.event("silent_start", seconds=seconds, how=how)
    time.sleep(seconds)
    rec.event("silent_end")
    rec.data["failing_call"] = "basic_publish"
    try:
        publish(rec, ch, q, body_of(2, 64), 2, note=note)
        rec.event("late_publish_returned_without_error")
        # Not expected; give pika a chance to notice the dead socket so the truth says what happened.
        conn.process_data_events(time_limit=1)
    except Exception as e:  # the point of the scenario
        rec.exception("basic_publish", e)
    rec.event("after_failure", connection_is_closed=conn.is_closed, channel_is_closed=ch.is_closed)
    if not conn.is_closed:
        try:
            conn.close()
        except Exception as e:
            rec.exception("connection_close", e)


def missed_heartbeats_fin(rec):
    """The missed-heartbeats-104 client against a broker whose listener has linger off
    (scripts/record-captures restarts it with AMQPSCOPE_BROKER_LINGER=off), so the broker closes with a FIN.
    Every send() pika makes is recorded (client.sends): which frames of the late publish the kernel took."""
    rec.trace_sends()
    missed_heartbeats_104(rec, label="silent-fin")


# flow-confirms-acks: publisher confirms and returns on one connection, a prefetch-limited consumer with
# acks, a multiple ack after a saturated stretch, requeueing nacks, a redelivery loop and rejects on another.
FLOW_MESSAGES = 40
FLOW_UNROUTABLE = (7, 14, 22, 29, 36)     # published with a routing key that has no binding
FLOW_PREFETCH = 5
FLOW_HOLD_FIRST = 9                       # its delivery starts the stretch: hold FLOW_PREFETCH deliveries
FLOW_HOLD_SECONDS = 6.0
FLOW_NACK_ONCE = (17, 18)                 # basic_nack(requeue=True) once, acked when redelivered
FLOW_POISON = 24                          # basic_nack(requeue=True) FLOW_POISON_NACKS times, then basic_reject(requeue=False)
FLOW_POISON_NACKS = 6
FLOW_REJECT = 31                          # basic_reject(requeue=False) at once
FLOW_EXCHANGE = "amqpscope.flow"
FLOW_QUEUE = "amqpscope.flow"
FLOW_KEY, FLOW_KEY_UNROUTED = "flow.ok", "flow.nowhere"


def flow_message_id(n):
    return "m%02d" % n


def flow_consumer(rec, ready, failed):
    """Consumer connection: prefetch 5, manual acks; behaviour by message id (see FLOW_*)."""
    conn = rec.connect("flow-consumer", heartbeat=60)
    rec.data["roles"][str(rec.data["connections"][-1].get("client_port"))] = "consumer"
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number, connection="flow-consumer")
    ch.exchange_declare(FLOW_EXCHANGE, exchange_type="direct", auto_delete=True)
    rec.event("exchange_declare", exchange=FLOW_EXCHANGE, type="direct", auto_delete=True)
    declare(rec, ch, FLOW_QUEUE, exclusive=True)
    ch.queue_bind(FLOW_QUEUE, FLOW_EXCHANGE, routing_key=FLOW_KEY)
    rec.event("queue_bind", queue=FLOW_QUEUE, exchange=FLOW_EXCHANGE, routing_key=FLOW_KEY)
    ch.basic_qos(prefetch_count=FLOW_PREFETCH)
    rec.event("basic_qos", prefetch_count=FLOW_PREFETCH, connection="flow-consumer")

    routed = {flow_message_id(n) for n in range(1, FLOW_MESSAGES + 1) if n not in FLOW_UNROUTABLE}
    done = set()                 # message ids settled for good (acked, or rejected/nacked without requeue)
    unacked = {}                 # delivery_tag -> message id, as the client sees it
    seen = {}                    # message id -> deliveries so far
    hold = {"active": False, "tags": [], "full_at": None, "done": False}

    def settle(kind, tag, multiple=False, requeue=None):
        t = time.time()  # just before the call
        if kind == "ack":
            ch.basic_ack(delivery_tag=tag, multiple=multiple)
        elif kind == "nack":
            ch.basic_nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        else:
            ch.basic_reject(delivery_tag=tag, requeue=requeue)
        tags = sorted(d for d in unacked if d <= tag) if multiple else [tag]
        rec.event("settle", connection="flow-consumer", t_call=t, kind=kind, delivery_tag=tag, multiple=multiple,
                  requeue=requeue, settles=tags, message_ids=[unacked[d] for d in tags])
        for d in tags:
            mid = unacked.pop(d)
            if kind == "ack" or not requeue:
                done.add(mid)

    def on_message(chan, method, props, body):
        t = time.time()
        mid = props.message_id
        tag = method.delivery_tag
        unacked[tag] = mid
        seen[mid] = seen.get(mid, 0) + 1
        rec.event("delivery", connection="flow-consumer", t_callback=t, channel=chan.channel_number,
                  delivery_tag=tag, redelivered=method.redelivered, message_id=mid,
                  header_n=(props.headers or {}).get("amqpscope-n"), routing_key=method.routing_key,
                  body=body.decode(), unacked_after=len(unacked))
        if not hold["done"] and (hold["active"] or mid == flow_message_id(FLOW_HOLD_FIRST)):
            hold["active"] = True
            hold["tags"].append(tag)
            if len(hold["tags"]) == FLOW_PREFETCH:
                hold["full_at"] = time.time()
                rec.event("hold_full", connection="flow-consumer", unacked=len(unacked), tags=list(hold["tags"]),
                          seconds=FLOW_HOLD_SECONDS)
            return
        if mid == flow_message_id(FLOW_POISON):
            if seen[mid] <= FLOW_POISON_NACKS:
                settle("nack", tag, requeue=True)
            else:
                settle("reject", tag, requeue=False)
        elif mid in [flow_message_id(n) for n in FLOW_NACK_ONCE] and not method.redelivered:
            settle("nack", tag, requeue=True)
        elif mid == flow_message_id(FLOW_REJECT):
            settle("reject", tag, requeue=False)
        else:
            settle("ack", tag)

    tag = ch.basic_consume(FLOW_QUEUE, on_message, auto_ack=False, consumer_tag="amqpscope-flow-consumer")
    rec.event("basic_consume", channel=ch.channel_number, queue=FLOW_QUEUE, consumer_tag=tag, auto_ack=False)
    ready.set()
    deadline = time.time() + 60
    try:
        while done != routed and time.time() < deadline and not failed.is_set():
            conn.process_data_events(time_limit=0.05)
            if hold["full_at"] is not None and not hold["done"] and time.time() >= hold["full_at"] + FLOW_HOLD_SECONDS:
                if set(unacked) != set(hold["tags"]):
                    raise RuntimeError("unacked %s besides the held %s" % (sorted(unacked), hold["tags"]))
                hold["done"], hold["active"] = True, False
                settle("ack", hold["tags"][-1], multiple=True)
        if done != routed:
            raise RuntimeError("consumer: not settled within 60 s: %s" % sorted(routed - done))
    finally:
        rec.data["flow_consumer_state"] = {"settled": len(done), "expected": len(routed), "unacked": sorted(unacked)}
    ch.basic_cancel(tag)
    rec.event("basic_cancel", channel=ch.channel_number, consumer_tag=tag)
    close(rec, conn, "flow-consumer")


def flow_confirms_acks(rec):
    rec.data["roles"] = {}
    rec.data["flow_plan"] = {
        "messages": FLOW_MESSAGES, "unroutable": list(FLOW_UNROUTABLE), "prefetch": FLOW_PREFETCH,
        "hold": {"first": flow_message_id(FLOW_HOLD_FIRST), "deliveries": FLOW_PREFETCH, "seconds": FLOW_HOLD_SECONDS,
                 "then": "one basic_ack(multiple=True) of the last held delivery"},
        "nack_requeue_once": [flow_message_id(n) for n in FLOW_NACK_ONCE],
        "poison": {"message_id": flow_message_id(FLOW_POISON), "nacks_requeue": FLOW_POISON_NACKS,
                   "then": "basic_reject(requeue=False)"},
        "reject": flow_message_id(FLOW_REJECT), "others": "basic_ack at once",
        "exchange": FLOW_EXCHANGE, "queue": FLOW_QUEUE, "routing_key": FLOW_KEY, "unrouted_key": FLOW_KEY_UNROUTED}
    ready, failed = threading.Event(), threading.Event()
    errors = []

    def consumer():
        try:
            flow_consumer(rec, ready, failed)
        except Exception as e:
            errors.append(e)
            rec.exception("consumer", e)
            failed.set()
            ready.set()

    th = threading.Thread(target=consumer, name="consumer")
    th.start()
    ready.wait(30)
    if failed.is_set() or not ready.is_set():
        th.join(70)
        raise RuntimeError("the consumer did not start: %r" % errors)

    conn = rec.connect("flow-publisher", heartbeat=60)
    rec.data["roles"][str(rec.data["connections"][-1].get("client_port"))] = "publisher"
    try:
        ch = conn.channel()
        rec.event("channel_open", channel=ch.channel_number, connection="flow-publisher")
        ch.confirm_delivery()
        rec.event("confirm_delivery", channel=ch.channel_number, connection="flow-publisher")
        for n in range(1, FLOW_MESSAGES + 1):
            if failed.is_set():
                break
            key = FLOW_KEY_UNROUTED if n in FLOW_UNROUTABLE else FLOW_KEY
            mid = flow_message_id(n)
            props = pika.BasicProperties(content_type="text/plain", delivery_mode=1, message_id=mid,
                                         headers={"amqpscope-n": n})
            body = ("amqpscope flow message %s\n" % mid).encode()
            outcome, extra = "ack", {}
            t_call = time.time()
            try:
                ch.basic_publish(FLOW_EXCHANGE, key, body, properties=props, mandatory=True)
            except pika.exceptions.UnroutableError as e:
                outcome = "returned"
                m = e.messages[0].method if e.messages else None
                extra = {"reply_code": m.reply_code if m else None, "reply_text": m.reply_text if m else None,
                         "exception": type(e).__name__}
            except pika.exceptions.NackError as e:
                outcome, extra = "nack", {"exception": type(e).__name__}
            t_return = time.time()
            # seq: the publish's number on the channel as confirms count them (1-based; returned ones count too)
            rec.event("publish", connection="flow-publisher", seq=n, n=n, message_id=mid, exchange=FLOW_EXCHANGE,
                      routing_key=key, mandatory=True, body_size=len(body), t_call=t_call, t_return=t_return,
                      outcome=outcome, **extra)
            conn.sleep(0.05)
        close(rec, conn, "flow-publisher")
    finally:
        if not conn.is_closed:
            failed.set()
        th.join(90)
    if errors:
        raise RuntimeError("consumer failed: %r" % errors[0])


def channel_error_404(rec):
    conn = rec.connect("chan404", heartbeat=HEARTBEAT)
    # 1) synchronous: passive Queue.Declare of a queue that does not exist.
    ch1 = conn.channel(channel_number=1)
    rec.event("channel_open", channel=ch1.channel_number)
    missing_q = "amqpscope.no-such-queue"
    try:
        rec.event("queue_declare_passive", channel=ch1.channel_number, queue=missing_q)
        ch1.queue_declare(missing_q, passive=True)
        rec.event("queue_declare_passive_ok_unexpected")
    except pika.exceptions.ChannelClosedByBroker as e:
        rec.exception("queue_declare(passive=True)", e, channel=ch1.channel_number)
    # 2) asynchronous: Basic.Publish to an exchange that does not exist; the broker answers with
    #    Channel.Close 404, which pika sees while servicing the connection.
    ch2 = conn.channel(channel_number=2)  # explicit: pika would reuse 1
    rec.event("channel_open", channel=ch2.channel_number)
    closed = []
    ch2._impl.add_on_close_callback(lambda chan, reason: closed.append((time.time(), chan.channel_number, reason)))
    missing_x = "amqpscope.no-such-exchange"
    publish(rec, ch2, "rk", body_of(1, 32), 1, exchange=missing_x)
    end = time.time() + 2
    while not closed and time.time() < end:
        conn.process_data_events(time_limit=0.2)
    for t, num, reason in closed:
        rec.exception("basic_publish (Channel.Close delivered to on_close callback)", reason, channel=num,
                      callback_time=t)
    rec.event("channel_state", channel=ch2.channel_number, is_closed=ch2.is_closed)
    # 3) the connection is still fine: a third channel works, then a clean close.
    ch3 = conn.channel(channel_number=3)
    rec.event("channel_open", channel=ch3.channel_number)
    declare(rec, ch3, "amqpscope.chan404-ok", exclusive=True)
    close(rec, conn, "chan404")


def large_messages(rec):
    conn = rec.connect("large", heartbeat=HEARTBEAT, frame_max=4096)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.large"
    declare(rec, ch, q, exclusive=True)
    sizes = [20000, 33333, 65536]
    bodies = [body_of(i, s) for i, s in enumerate(sizes, 1)]
    for i, b in enumerate(bodies, 1):
        publish(rec, ch, q, b, i, body_sha256=hashlib.sha256(b).hexdigest())
    got = consume(rec, conn, ch, q, len(bodies))
    fm = conn._impl.params.frame_max
    rec.data["result"] = {
        "published": len(bodies), "consumed": len(got), "bodies_match": got == bodies,
        "body_sizes": sizes,
        # frame payload = frame_max - 8 (7 header bytes + frame-end octet)
        "body_frames_per_message": [-(-s // (fm - 8)) for s in sizes],
        "frame_max_negotiated": fm,
    }
    close(rec, conn, "large")


def many_connections(rec, n=20):
    barrier = threading.Barrier(n, timeout=30)
    errors = []

    def worker(i):
        label = "c%02d" % i
        try:
            conn = rec.connect(label, heartbeat=HEARTBEAT)
            ch = conn.channel()
            q = "amqpscope.many.%s" % label
            declare(rec, ch, q, exclusive=True)
            barrier.wait()
            publish(rec, ch, q, body_of(i, 48), 1, connection=label)
            ok = ch.queue_declare(q, passive=True)
            rec.event("queue_depth", connection=label, queue=q, message_count=ok.method.message_count)
            barrier.wait()
            close(rec, conn, label)
        except Exception as e:
            errors.append(e)
            rec.exception("worker %s" % label, e)

    threads = [threading.Thread(target=worker, args=(i,), name="client-%02d" % i) for i in range(1, n + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rec.data["result"] = {"connections": n, "errors": len(errors)}
    if errors:
        raise RuntimeError("%d of %d workers failed" % (len(errors), n))


# broker-restart: many idle clients when the operator restarts the RabbitMQ application on the node.
RESTART_CLIENTS = 40
RESTART_WAIT = 3.0        # seconds between all clients ready and `rabbitmqctl stop_app`
RESTART_CLIENT_LIMIT = 40.0  # a client still open this long after it was ready gives up (recorded)


def broker_restart(rec, n=RESTART_CLIENTS):
    """n BlockingConnections (heartbeat 2 s, connection_name amqpscope-restart-NN), each in its own thread: connect,
    declare an exclusive queue, publish one message, then service the connection with process_data_events in a
    loop. RESTART_WAIT s after all are ready the operator restarts the broker's RabbitMQ application through
    scripts/broker ctl: `rabbitmqctl stop_app` (RabbitMQ closes every client connection at once with
    Connection.Close 320 CONNECTION_FORCED), then `rabbitmqctl start_app`. Each client records the Close pika
    decoded (hook: received_connection_close) and what process_data_events raised, then exits: no reconnect."""
    ready = threading.Barrier(n + 1, timeout=60)
    errors = []
    rec.data["restart_plan"] = {
        "clients": n, "heartbeat": HEARTBEAT, "wait_after_ready_s": RESTART_WAIT,
        "operator": ["rabbitmqctl stop_app", "rabbitmqctl start_app"],
        "via": "scripts/broker ctl (rabbitmqctl -n amqpscope@localhost against the private node)",
        "client_loop": "connection.process_data_events(time_limit=0.5) until pika raises; then the thread exits "
                       "(no reconnect)"}

    def worker(i):
        label = "restart-%02d" % i
        port, phase = None, "connect"
        try:
            conn = rec.connect(label, heartbeat=HEARTBEAT)
            port = conn._impl._transport._sock.getsockname()[1]
            phase = "setup"
            ch = conn.channel()
            q = "amqpscope.restart.%s" % label
            ok = ch.queue_declare(q, exclusive=True)
            rec.event("queue_declare", connection=label, client_port=port, channel=ch.channel_number, queue=q,
                      exclusive=True, message_count=ok.method.message_count)
            publish(rec, ch, q, body_of(i, 48), 1, connection=label, client_port=port)
            phase = "ready"
            ready.wait()
            phase = "process_data_events"
            rec.event("servicing", connection=label, client_port=port,
                      how="connection.process_data_events(time_limit=0.5) in a loop")
            deadline = time.time() + RESTART_CLIENT_LIMIT
            while time.time() < deadline:
                conn.process_data_events(time_limit=0.5)
            rec.event("not_closed_within", connection=label, client_port=port, seconds=RESTART_CLIENT_LIMIT)
            errors.append(RuntimeError("%s: not closed within %d s" % (label, RESTART_CLIENT_LIMIT)))
            phase = "close"
            conn.close()
        except Exception as e:
            if phase == "process_data_events":  # the point of the scenario: the broker's close
                rec.exception("process_data_events", e, connection=label, client_port=port)
            else:
                errors.append(e)
                rec.exception("worker %s (%s)" % (label, phase), e, connection=label, client_port=port)
                ready.abort()
                return
        rec.event("client_exit", connection=label, client_port=port, connection_is_closed=conn.is_closed,
                  reconnect=False)

    threads = [threading.Thread(target=worker, args=(i,), name="client-%02d" % i) for i in range(1, n + 1)]
    for t in threads:
        t.start()
    stopped, started = None, None
    try:
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError("not every client connected, declared and published: %r" % errors[:3])
        rec.event("all_ready", clients=n, connections=len(rec.data["connections"]))
        time.sleep(RESTART_WAIT)
        rec.event("restart_requested", how="rabbitmqctl stop_app, then rabbitmqctl start_app (scripts/broker ctl)")
        stopped = rec.ctl("stop_app")
        if stopped.returncode != 0:
            raise RuntimeError("rabbitmqctl stop_app failed (%d): %s" % (stopped.returncode, stopped.stderr.strip()))
        started = rec.ctl("start_app")
        if started.returncode != 0:
            raise RuntimeError("rabbitmqctl start_app failed (%d): %s" % (started.returncode, started.stderr.strip()))
    finally:
        if stopped is not None and (started is None or started.returncode != 0):
            rec.ctl("start_app")  # leave the broker running whatever happened
        for t in threads:
            t.join(RESTART_CLIENT_LIMIT + 10)
    running = rec.ctl("eval", "rabbit:is_running().")
    rec.data["broker_running_after"] = {
        "value": running.stdout.strip().splitlines()[-1:] == ["true"],
        "source": "rabbitmqctl eval 'rabbit:is_running().' after start_app and after every client thread ended"}
    rec.data["result"] = {"clients": n, "closed_by_broker": len(exc_during_loop(rec)), "errors": len(errors)}
    if errors:
        raise RuntimeError("%d of %d clients failed: %r" % (len(errors), n, errors[0]))
    if not rec.data["broker_running_after"]["value"]:
        raise RuntimeError("the RabbitMQ application is not running after start_app: %r" % running.stdout)


def exc_during_loop(rec):
    with rec.lock:
        return [e for e in rec.data["exceptions"] if e.get("during") == "process_data_events"]


def find_connection_pid(rec, client_port, tries=10):
    for _ in range(tries):
        p = rec.ctl("list_connections", "--silent", "pid", "peer_port", "name")
        for line in p.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1].strip() == str(client_port):
                return parts[0].strip()
        time.sleep(0.5)
    return None


def connection_forced_320(rec, tls=None):
    conn = rec.connect("forced", tls=tls, heartbeat=HEARTBEAT)
    info = rec.data["connections"][-1]
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.forced"
    declare(rec, ch, q, exclusive=True)
    publish(rec, ch, q, body_of(1, 64), 1)
    reason = "amqpscope test: closed by operator"
    rec.data["close_reason_given"] = reason

    def operator():
        pid = find_connection_pid(rec, info.get("client_port"))
        rec.data["broker_connection_pid"] = pid
        if pid:
            rec.event("close_connection_requested", broker_connection_pid=pid, reason=reason)
            rec.ctl("close_connection", pid, reason)

    op = threading.Thread(target=operator, name="operator")
    op.start()
    rec.data["failing_call"] = "process_data_events"
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            conn.process_data_events(time_limit=0.5)
        rec.event("not_closed_within_30s")
    except Exception as e:
        rec.exception("process_data_events", e)
    op.join(60)
    rec.event("after_failure", connection_is_closed=conn.is_closed)


def blocked(rec):
    conn = rec.connect("blocked", heartbeat=HEARTBEAT)
    state = {"blocked": None, "unblocked": None}

    def on_blocked(_c, frame):
        state["blocked"] = time.time()
        rec.event("connection_blocked", reason=getattr(frame.method, "reason", None))

    def on_unblocked(_c, _frame):
        state["unblocked"] = time.time()
        rec.event("connection_unblocked")

    conn.add_on_connection_blocked_callback(on_blocked)
    conn.add_on_connection_unblocked_callback(on_unblocked)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.blocked"
    declare(rec, ch, q, exclusive=True)
    publish(rec, ch, q, body_of(1, 64), 1)
    restored = False
    try:
        p = rec.ctl("set_vm_memory_high_watermark", "0.0000001")
        rec.event("watermark_lowered", rc=p.returncode)
        publish(rec, ch, q, body_of(2, 64), 2, note="published during the memory alarm")
        end = time.time() + 10
        while state["blocked"] is None and time.time() < end:
            conn.process_data_events(time_limit=0.2)
        # stay blocked a moment so heartbeats flow while blocked
        end = time.time() + 2
        while time.time() < end:
            conn.process_data_events(time_limit=0.2)
        p = rec.ctl("set_vm_memory_high_watermark", "0.4")
        restored = p.returncode == 0
        rec.event("watermark_restored", rc=p.returncode, value="0.4")
        end = time.time() + 10
        while state["unblocked"] is None and time.time() < end:
            conn.process_data_events(time_limit=0.2)
    finally:
        if not restored:
            rec.ctl("set_vm_memory_high_watermark", "0.4")
    got = consume(rec, conn, ch, q, 2)
    rec.data["result"] = {"blocked_seen": state["blocked"] is not None,
                          "unblocked_seen": state["unblocked"] is not None, "consumed": len(got)}
    close(rec, conn, "blocked")
    if state["blocked"] is None or state["unblocked"] is None:
        raise RuntimeError("Connection.Blocked/Unblocked not both seen within 10 s")


def clean_close_s96(rec):
    """A healthy connection closed cleanly: heartbeat=2, 10 messages of 1000 bytes published, consumed and acked,
    ~5 s of process_data_events (heartbeats both ways), then connection.close(): Channel.Close/Close-Ok and
    Connection.Close(200)/Close-Ok. scripts/record-captures records it twice at once: with tcpdump -s 96 (the
    capture) and -s 0 (its full twin)."""
    conn = rec.connect("clean-s96", heartbeat=HEARTBEAT)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.clean-s96"
    declare(rec, ch, q, exclusive=True)
    bodies = [body_of(i, 1000) for i in range(1, 11)]
    for i, b in enumerate(bodies, 1):
        publish(rec, ch, q, b, i, body_sha256=hashlib.sha256(b).hexdigest())
    got = consume(rec, conn, ch, q, len(bodies))
    rec.data["result"] = {"published": len(bodies), "consumed": len(got), "bodies_match": got == bodies,
                          "body_size": 1000}
    idle = 5.0
    rec.event("idle_start", seconds=idle, how="connection.process_data_events(time_limit=0.5) in a loop")
    end = time.time() + idle
    while time.time() < end:
        conn.process_data_events(time_limit=0.5)
    rec.event("idle_end")
    close(rec, conn, "clean-s96", reason=True)


def refused_then_connected(rec):
    """Happy-eyeballs style fallback: pika.BlockingConnection([params(host='::1'), params(host='127.0.0.1')]).
    The broker listens on 127.0.0.1 only, so the connect() to [::1]:5672 is refused (RST to the SYN:
    ECONNREFUSED) and pika's connection workflow goes on to 127.0.0.1 at once. One message, clean close."""
    rec.trace_connect_attempts()
    hosts = ["::1", HOST]
    rec.data["hosts_tried"] = hosts
    conn = rec.connect("fallback", hosts=hosts, heartbeat=HEARTBEAT)
    ch = conn.channel()
    rec.event("channel_open", channel=ch.channel_number)
    q = "amqpscope.fallback"
    declare(rec, ch, q, exclusive=True)
    publish(rec, ch, q, body_of(1, 64), 1)
    close(rec, conn, "fallback", reason=True)


# haproxy-idle: a private haproxy in TCP mode between pika and the broker.
HAPROXY_PORT = int(os.environ.get("AMQPSCOPE_HAPROXY_PORT", "5673"))
HAPROXY_TIMEOUTS = {"connect": "2s", "client": "4s", "server": "4s"}
# HAProxy's TCP log format (what `option tcplog` logs) followed by the backend connection's source address and
# port (%bi:%bp), which names the haproxy->broker leg.
HAPROXY_LOG_FORMAT = "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq %bi:%bp"
HAPROXY_LOG_LINE = re.compile(
    r"^(?P<client_ip>[\d.]+):(?P<client_port>\d+) \[(?P<accept_date>[^\]]+)\] (?P<frontend>\S+) "
    r"(?P<backend>[^/\s]+)/(?P<server>\S+) (?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tt>\+?-?\d+) (?P<bytes_read>\+?\d+) "
    r"(?P<termination_state>\S\S) (?P<actconn>\d+)/(?P<feconn>\d+)/(?P<beconn>\d+)/(?P<srv_conn>\d+)/"
    r"(?P<retries>\+?\d+) (?P<srv_queue>\d+)/(?P<backend_queue>\d+) (?P<backend_source_ip>[\d.]+):"
    r"(?P<backend_source_port>\d+)$")


def listening(port):
    """Is something listening on TCP port `port` (IPv4 or IPv6)? From /proc/net/tcp*, without connecting."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # LISTEN
                return True
    return False


class Haproxy:
    """haproxy -f CFG -db (foreground) with a config in a temporary directory; every line it writes to stdout
    (its log: `log stdout format raw`) and stderr is kept with the epoch time it was read."""

    def __init__(self, rec):
        self.rec = rec
        self.dir = tempfile.mkdtemp(prefix="amqpscope-haproxy.")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        t = HAPROXY_TIMEOUTS
        self.config = "\n".join([
            "# written by scripts/captures/scenarios.py (haproxy-idle)",
            "global",
            "    log stdout format raw local0 info",
            "    nbthread 1",
            "defaults",
            "    mode tcp",
            "    log global",
            "    log-format \"%s\"" % HAPROXY_LOG_FORMAT,
            "    timeout connect %s" % t["connect"],
            "    timeout client %s" % t["client"],
            "    timeout server %s" % t["server"],
            "frontend amqp_in",
            "    bind %s:%d" % (HOST, HAPROXY_PORT),
            "    default_backend rabbitmq",
            "backend rabbitmq",
            "    server broker %s:%d" % (HOST, PORT),
            ""])
        with open(self.cfg, "w") as f:
            f.write(self.config)
        self.lines = []
        self.proc = None
        self.threads = []

    def _read(self, stream, name):
        for line in iter(stream.readline, ""):
            t = now()
            with self.rec.lock:
                self.lines.append({"t": round(t, 6), "time": iso(t), "stream": name, "line": line.rstrip("\n")})

    def start(self):
        if listening(HAPROXY_PORT):
            raise RuntimeError("something already listens on port %d (scripts/proton-broker?); haproxy-idle needs "
                               "it (AMQPSCOPE_HAPROXY_PORT)" % HAPROXY_PORT)
        argv = ["haproxy", "-f", self.cfg, "-db"]
        self.rec.event("haproxy_start", argv=argv, config_file=self.cfg)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            th = threading.Thread(target=self._read, args=(stream, name), name="haproxy-" + name, daemon=True)
            th.start()
            self.threads.append(th)
        deadline = time.time() + 5
        while not listening(HAPROXY_PORT):  # no probe connection: it would be a session of its own
            if self.proc.poll() is not None or time.time() > deadline:
                time.sleep(0.2)
                raise RuntimeError("haproxy did not listen on %s:%d (exit %s): %s" % (
                    HOST, HAPROXY_PORT, self.proc.poll(), [x["line"] for x in self.lines][-5:]))
            time.sleep(0.05)
        self.rec.event("haproxy_listening", pid=self.proc.pid, address="%s:%d" % (HOST, HAPROXY_PORT))

    def stop(self):
        if self.proc is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # haproxy: SIGTERM = hard stop
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for th in self.threads:
            th.join(2)
        self.rec.event("haproxy_stopped", pid=self.proc.pid, exit_status=self.proc.returncode, signal="SIGTERM")
        shutil.rmtree(self.dir, ignore_errors=True)

    def sessions(self):
        out = []
        for x in list(self.lines):
            m = HAPROXY_LOG_LINE.match(x["line"]) if x["stream"] == "stdout" else None
            if m:
                d = {k: (int(v) if re.fullmatch(r"-?\d+", v) else v) for k, v in m.groupdict().items()}
                out.append(dict(d, raw=x["line"], t_read=x["t"], time_read=x["time"]))
        return out


def haproxy_idle(rec):
    """pika (heartbeat=0: no heartbeats) through a private haproxy in TCP mode (127.0.0.1:5673 -> the broker,
    timeout client/server 4s): one publish, then 7 s idle without servicing the connection, then a late
    publish. haproxy ends the idle session after 4 s. Every send() pika makes is recorded (client.sends)."""
    rec.trace_sends()
    try:
        p = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=10)
    except OSError as e:
        raise RuntimeError("haproxy missing (scripts/setup --broker installs it): %r" % e)
    hp = Haproxy(rec)
    rec.data["haproxy"] = {"version": (p.stdout.splitlines() or [""])[0], "config": hp.config,
                           "timeouts": dict(HAPROXY_TIMEOUTS), "log_format": HAPROXY_LOG_FORMAT,
                           "listen": "%s:%d" % (HOST, HAPROXY_PORT), "server": "%s:%d" % (HOST, PORT)}
    try:
        hp.start()
        conn = rec.connect("haproxy", port=HAPROXY_PORT, heartbeat=0)
        ch = conn.channel()
        rec.event("channel_open", channel=ch.channel_number)
        q = "amqpscope.haproxy"
        declare(rec, ch, q, exclusive=True)
        publish(rec, ch, q, body_of(1, 64), 1)
        silent_then_late_publish(
            rec, conn, ch, q, 7.0,
            "time.sleep() without process_data_events; heartbeat=0, so neither side sends heartbeats",
            "late publish after the idle period")
        # haproxy logs a session when it ends; this one ended 4 s into the idle period
        end = time.time() + 2
        while not hp.sessions() and time.time() < end:
            time.sleep(0.1)
    finally:
        hp.stop()
        rec.data["haproxy"]["pid"] = hp.proc.pid if hp.proc else None
        rec.data["haproxy"]["exit_status"] = hp.proc.returncode if hp.proc else None
        rec.data["haproxy"]["output"] = hp.lines
        rec.data["haproxy"]["sessions"] = hp.sessions()


SCENARIOS = {
    "healthy-heartbeats": healthy_heartbeats,
    "missed-heartbeats-104": missed_heartbeats_104,
    "channel-error-404": channel_error_404,
    "large-messages": large_messages,
    "many-connections": many_connections,
    "connection-forced-320": connection_forced_320,
    "blocked": blocked,
    "flow-confirms-acks": flow_confirms_acks,
    "missed-heartbeats-fin": missed_heartbeats_fin,
    "clean-close-s96": clean_close_s96,
    "refused-then-connected": refused_then_connected,
    "haproxy-idle": haproxy_idle,
    # the missed-heartbeats-104 client; scripts/record-captures restarts the broker with its JSON log formatter
    "missed-heartbeats-jsonlog": functools.partial(missed_heartbeats_104, label="silent-jsonlog"),
    "broker-restart": broker_restart,
}
# Scenarios that run another scenario's client unchanged (make_truth.py builds their expect as that one's).
BASED_ON = {"missed-heartbeats-jsonlog": "missed-heartbeats-104"}

# TLS scenarios: (plain scenario whose client they run, TLS settings). The key log file name comes
# from the environment (scripts/record-captures puts it beside the capture).
TLS_SCENARIOS = {
    "tls13-healthy": ("healthy-heartbeats", {"version": "1.3"}),
    "tls13-missed-heartbeats": ("missed-heartbeats-104", {"version": "1.3"}),
    "tls12-missed-heartbeats": ("missed-heartbeats-104", {"version": "1.2", "ciphers": "ECDHE-RSA-AES128-GCM-SHA256"}),
    "tls12-chacha-healthy": ("healthy-heartbeats", {"version": "1.2", "ciphers": "ECDHE-RSA-CHACHA20-POLY1305"}),
    "tls13-connection-forced": ("connection-forced-320", {"version": "1.3"}),
}
for _name, (_base, _tls) in TLS_SCENARIOS.items():
    SCENARIOS[_name] = functools.partial(SCENARIOS[_base], tls=_tls)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        print("usage: scenarios.py {%s} OUT.json" % "|".join(SCENARIOS), file=sys.stderr)
        return 2
    name, out = sys.argv[1], sys.argv[2]
    many = name in ("many-connections", "broker-restart")
    rec = Recorder(name, out, max_log={"many-connections": 120, "broker-restart": 400}.get(name, 300),
                   log_level=logging.WARNING if many else logging.INFO)
    if name in TLS_SCENARIOS:
        base, tls = TLS_SCENARIOS[name]
        keylog = os.environ.get("AMQPSCOPE_TLS_KEYLOG")
        if keylog:
            SCENARIOS[name].keywords["tls"] = dict(tls, keylog=keylog)
        rec.data["base_scenario"] = base
        rec.data["tls_requested"] = SCENARIOS[name].keywords["tls"]
    if name in BASED_ON:
        rec.data["base_scenario"] = BASED_ON[name]
    rc = 0
    try:
        SCENARIOS[name](rec)
    except Exception as e:
        fail_hard(rec, e)
        print("scenarios.py %s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        rc = 1
    finally:
        rec.write()
    return rc


if __name__ == "__main__":
    sys.exit(main())
