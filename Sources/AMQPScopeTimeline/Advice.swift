// What to do about each diagnosis, by client library where the cause is known. One table, read by people:
// keep each line a plain sentence. Matching is on the product in Connection.Start-Ok's client_properties.

package struct AdviceRule: Sendable {
    /// The diagnosis code it applies to.
    package var code: DiagnosisCode
    /// A lower-cased fragment of client_properties.product ("pika", "bunny", ...); nil applies to every client.
    package var product: String?
    package var text: String
    /// The protocol it applies to: nil both, true AMQP 1.0 only, false 0-9-1 only.
    package var amqp10: Bool? = nil
}

package enum AdviceTable {
    package static let rules: [AdviceRule] = [
        AdviceRule(
            code: .missedHeartbeats, product: "pika",
            text:
                "pika's BlockingConnection sends heartbeats only while the application is inside "
                + "connection.process_data_events() or connection.sleep(); a thread that blocks elsewhere (a long "
                + "request, time.sleep, waiting on a web server such as uwsgi between requests) starves them. "
                + "Call process_data_events() regularly, run the connection in its own thread, or use a "
                + "connection per unit of work."
        ),
        AdviceRule(
            code: .missedHeartbeats, product: "py-amqp",
            text:
                "py-amqp (Celery/kombu) sends heartbeats only when the application calls "
                + "connection.heartbeat_check(); make sure the worker's event loop keeps calling it at least "
                + "twice per interval."
        ),
        AdviceRule(
            code: .missedHeartbeats, product: "bunny",
            text:
                "Bunny sends heartbeats from its own I/O thread: silence usually means the process was stopped (GC "
                + "pause, CPU starvation, SIGSTOP) or the network between the hosts dropped traffic."
        ),
        AdviceRule(
            code: .missedHeartbeats, product: nil,
            text:
                "Find out why the silent side stopped sending: a blocked application thread, a paused process, or a "
                + "network element dropping its traffic. If a proxy or load balancer sits between the peers, its "
                + "idle timeout must be longer than the heartbeat interval.",
            amqp10: false
        ),
        AdviceRule(
            code: .idleTimeoutInPath, product: nil,
            text:
                "Enable heartbeats with a timeout well under the intermediary's idle timeout (a heartbeat frame goes "
                + "out every half timeout), or raise that timeout: haproxy's timeout client and timeout server, an AWS "
                + "Network Load Balancer's TCP idle timeout (350 s by default), an Azure Load Balancer's (4 minutes), "
                + "a NAT or firewall's connection tracking. A client should also reconnect when a write fails."
        ),
        AdviceRule(
            code: .reset, product: nil,
            text:
                "The side that got the RST must reconnect; an application should treat this errno as 'connection "
                + "lost' and retry with a fresh connection and channel."
        ),
        AdviceRule(
            code: .writeAfterClose, product: "pika",
            text:
                "pika wrote on a connection the broker had already closed: handle pika.exceptions.StreamLostError / "
                + "AMQPConnectionError around basic_publish by reconnecting and republishing (with publisher "
                + "confirms if messages must not be lost)."
        ),
        AdviceRule(
            code: .writeAfterClose, product: nil,
            text:
                "The writer did not notice the peer's close before writing; check for the close (read the socket, or "
                + "handle the library's connection-closed callback) and reconnect before publishing."
        ),
        AdviceRule(
            code: .abruptClose, product: nil,
            text:
                "A TCP close without Connection.Close means one side (or something between them) gave up on the "
                + "connection: look for a missed heartbeat, a crashed process, or a proxy/load balancer/NAT idle "
                + "timeout at the time of the close.",
            amqp10: false
        ),
        AdviceRule(
            code: .connectionError, product: nil,
            text:
                "The reply text says why. 320 CONNECTION_FORCED comes from an operator (rabbitmqctl close_connection) "
                + "or a broker shutting down; 501/505 FRAME_ERROR/UNEXPECTED_FRAME point to a client library bug "
                + "or a corrupting middlebox.",
            amqp10: false
        ),
        AdviceRule(
            code: .channelError, product: nil,
            text:
                "A channel error closes only that channel: declare what is used (or use passive declares "
                + "deliberately), check names and permissions, and open a new channel after handling it."
        ),
        AdviceRule(
            code: .blocked, product: nil,
            text:
                "The broker stops reading from publishers while a resource alarm (memory or disk) is set: consumers "
                + "need to catch up, or the broker needs more memory or disk. Publishers should watch "
                + "Connection.Blocked rather than time out."
        ),
        AdviceRule(
            code: .messagesAtRisk, product: "pika",
            text:
                "pika neither republishes nor remembers what it published: use channel.confirm_delivery() so a "
                + "publish raises when it is not confirmed, keep what was not confirmed, and publish it again on a new "
                + "connection; make consumers idempotent, since unacknowledged deliveries come again."
        ),
        AdviceRule(
            code: .messagesAtRisk, product: nil,
            text:
                "Republish what was not confirmed (publisher confirms tell which), and make consumers idempotent: the "
                + "broker redelivers every delivery that was not acknowledged, with the redelivered flag set."
        ),
        AdviceRule(
            code: .consumerSaturated, product: nil,
            text:
                "The consumer holds all the deliveries its prefetch allows while it works on them: make the work "
                + "faster, acknowledge as soon as each message is handled, run more consumers, or raise the prefetch "
                + "if the work is I/O-bound."
        ),
        AdviceRule(
            code: .slowConfirms, product: nil,
            text:
                "Confirms wait until the broker has the message safely (written to disk for persistent messages on "
                + "durable and quorum queues): look at the broker's disk and fsync latency, queue length and "
                + "replication; publish in batches and wait for confirms asynchronously rather than one at a time."
        ),
        AdviceRule(
            code: .redeliveryLoop, product: nil,
            text:
                "A message that fails every time comes back every time when it is nacked or rejected with requeue: "
                + "reject it without requeue after a few attempts (to a dead-letter exchange), or count attempts in a "
                + "header; quorum queues can cap deliveries with delivery-limit."
        ),
        AdviceRule(
            code: .unroutable, product: nil,
            text:
                "No queue is bound for that exchange and routing key: check the binding and the key, declare the "
                + "queue before publishing, or give the exchange an alternate exchange so that nothing is returned or "
                + "dropped."
        ),
        AdviceRule(
            code: .heartbeatsDisabled, product: nil,
            text:
                "With heartbeats off, neither side notices a dead peer and proxies or NAT tables drop idle "
                + "connections silently; negotiate a heartbeat (RabbitMQ's default is 60 s) shorter than every "
                + "idle timeout on the path."
        ),
        AdviceRule(
            code: .protocolViolation, product: nil,
            text:
                "Malformed frames mean a client or broker bug, a corrupting middlebox, or non-AMQP traffic on an AMQP "
                + "port; look at the first malformed frame's bytes."
        ),
        AdviceRule(
            code: .captureIncomplete, product: nil,
            text:
                "Capture with a larger snap length (-s 0), start before the connection opens, and check the capturing "
                + "host's drop counters, so that the whole story is in the file."
        ),
    ]

    /// AMQP 1.0's lines: the 1.0 clients by what they put in open's properties (product) or by their own texts.
    package static let rules10: [AdviceRule] = [
        AdviceRule(
            code: .missedHeartbeats, product: "proton",
            text:
                "Qpid Proton (C, C++, Python) reads its socket and checks idle timeouts only while its event loop "
                + "runs: in Container.run(), or inside BlockingConnection calls (send, receive, wait). An application "
                + "that blocks longer than the idle timeout elsewhere (time.sleep, a slow request) makes Proton give up "
                + "with local-idle-timeout expired although the broker's empty frames arrived. Run the container in "
                + "its own thread, call into the connection regularly, or open it with a longer idle_timeout (Proton "
                + "advertises half of it).",
            amqp10: true),
        AdviceRule(
            code: .missedHeartbeats, product: "amqpnetlite",
            text:
                "AMQP.NET Lite sends empty frames from its own heartbeat timer once Connection.IdleTimeout is set: "
                + "silence points at a stalled process (GC, thread-pool starvation) or the network.",
            amqp10: true),
        AdviceRule(
            code: .missedHeartbeats, product: "azsdk",
            text:
                "The Azure SDKs keep their AMQP connection alive themselves: a silent client usually means its "
                + "process was starved or suspended, or a proxy/NAT on the path dropped the idle connection (Service "
                + "Bus and Event Hubs close connections idle for their own timeout; use AMQP over WebSockets on 443 "
                + "behind restrictive proxies).",
            amqp10: true),
        AdviceRule(
            code: .missedHeartbeats, product: "rabbitmq",
            text:
                "RabbitMQ's own AMQP 1.0 clients (for RabbitMQ 4) keep the connection alive from their own I/O "
                + "threads: a silent client points at a stalled or paused process or at the network. Their "
                + "connection recovery reconnects, but what was published and not yet settled must be published "
                + "again by the application.",
            amqp10: true),
        AdviceRule(
            code: .missedHeartbeats, product: nil,
            text:
                "In AMQP 1.0 each side advertises idle-time-out in open and its peer must send a frame (at least an "
                + "empty one) within it. Find out why the silent side stopped: a blocked event loop, a paused process, "
                + "or the network; a proxy or load balancer on the path must allow longer idle periods than that.",
            amqp10: true),
        AdviceRule(
            code: .connectionError, product: nil,
            text:
                "The condition says why: amqp:connection:forced comes from an operator or a broker shutting down; "
                + "amqp:unauthorized-access and a failed SASL outcome from credentials or permissions; "
                + "amqp:resource-limit-exceeded from a limit such as an idle timeout; amqp:connection:framing-error "
                + "and amqp:decode-error point to a client or broker bug.",
            amqp10: true),
        AdviceRule(
            code: .sessionError, product: nil,
            text:
                "An end with an error takes every link of the session with it. RabbitMQ's AMQP 1.0 plugin answers an "
                + "attach to a missing queue this way (amqp:not-found) without an attach in reply: declare the queue "
                + "first, or check the address (/amq/queue/NAME in RabbitMQ 3.x, /queues/NAME in 4.x), then begin a "
                + "new session.",
            amqp10: true),
        AdviceRule(
            code: .linkError, product: nil,
            text:
                "A detach with an error ends one link: check the address and the user's permissions on it, then "
                + "attach a new link; amqp:link:detach-forced means the peer gave up the link (an operator, a deleted "
                + "queue, a failover).",
            amqp10: true),
        AdviceRule(
            code: .abruptClose, product: nil,
            text:
                "A TCP close without a close performative means one side (or something between them) gave up: look "
                + "for an idle timeout that fired, a crashed process, or a proxy/load balancer/NAT timeout at that "
                + "time. RabbitMQ's AMQP 1.0 plugin ends connections that missed their idle timeout with an RST and no "
                + "close.",
            amqp10: true),
    ]

    /// The advice for a code, most specific first: the client's own line when its product matches, then the generic
    /// one.
    package static func advice(for code: DiagnosisCode, clientProduct: String?, amqp10: Bool = false) -> [String] {
        let product = clientProduct?.lowercased() ?? ""
        let rules = (Self.rules + Self.rules10).filter { $0.code == code && ($0.amqp10 == nil || $0.amqp10 == amqp10) }
        let specific = rules.filter { $0.product.map { product.contains($0) } == true }
        let generic = rules.filter { $0.product == nil }
        return (specific.isEmpty ? generic : specific).map(\.text)
    }
}
