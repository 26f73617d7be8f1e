// Prometheus metrics of a live capture (`capture --metrics-listen`): the engine's running totals turned into
// counters and gauges on a swift-prometheus registry, served over HTTP by a small SwiftNIO listener in Prometheus's
// text format, or OpenMetrics when the scraper asks for it. Labels stay bounded: server address:port (at most 64,
// then "other"), direction, type, how, code, severity, errno; never client ports, and queue names only when asked.
import AMQPScope
import CoreMetrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// The registry and what has been pushed into it. Updated from the capture loop only; the HTTP listener reads the
/// registry, which is thread-safe.
final class MetricsExporter: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let labelQueues: Bool
    private var counters: [String: Prometheus.Counter] = [:]
    private var pushed: [String: Int] = [:]
    private var gauges: [String: Prometheus.Gauge] = [:]
    private var histograms: [String: ValueHistogram] = [:]
    /// The servers named in labels: the same bound as the engine's totals (the first ones seen), the rest "other".
    private var servers: Set<String> = []

    static let latencyHelp = [
        "amqpscope_confirm_latency_seconds": "Publish to publisher-confirm latency, of connections that ended.",
        "amqpscope_ack_latency_seconds": "Delivery to consumer-ack latency, of connections that ended.",
    ]

    /// Latency histogram buckets (seconds): 1 ms to 30 s.
    static let latencyBuckets: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
    ]

    init(labelQueues: Bool, version: String) {
        self.labelQueues = labelQueues
        // swift-metrics: anything instrumented with it reports into the same registry; amqpscope's own metrics are
        // made on the registry directly so that each carries its HELP text.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        // The latency histograms exist from the start (empty until a connection with confirms or acks ends).
        for (name, help) in Self.latencyHelp { _ = histogram(name, [], help: help) }
        let info: Prometheus.Gauge = registry.makeGauge(
            name: "amqpscope_build_info", labels: [("version", version)], help: "amqpscope's version (always 1).")
        info.set(to: 1.0)
    }

    static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    /// Brings a counter up to `total` (counts only grow: a smaller total is ignored).
    func count(_ name: String, _ labels: [(String, String)], total: Int, help: String) {
        let key = Self.key(name, labels)
        let delta = total - pushed[key, default: 0]
        let counter = counters[key] ?? registry.makeCounter(name: name, labels: labels, help: help)
        counters[key] = counter
        guard delta > 0 else { return }
        counter.increment(by: Int64(delta))
        pushed[key] = total
    }

    /// Adds `n` to a counter.
    func add(_ name: String, _ labels: [(String, String)], _ n: Int = 1, help: String) {
        let key = Self.key(name, labels)
        count(name, labels, total: pushed[key, default: 0] + n, help: help)
    }

    func gauge(_ name: String, _ labels: [(String, String)], _ value: Double, help: String) {
        let key = Self.key(name, labels)
        let gauge = gauges[key] ?? registry.makeGauge(name: name, labels: labels, help: help)
        gauges[key] = gauge
        gauge.set(to: value)
    }

    func histogram(_ name: String, _ labels: [(String, String)], help: String) -> ValueHistogram {
        let key = Self.key(name, labels)
        if let h = histograms[key] { return h }
        let h = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(
                metricName: String(name.dropLast("_seconds".count)), unitName: "seconds", helpText: help),
            labels: labels, buckets: Self.latencyBuckets)
        histograms[key] = h
        return h
    }

    /// The label of a server: its address:port while fewer than `TrafficTotals.maximumServers` are named, else "other"
    /// (a host that talks to ever new servers must not grow the exposition without bound).
    func serverLabel(_ key: String) -> String {
        if servers.contains(key) { return key }
        guard key != "other", servers.count < TrafficTotals.maximumServers else { return "other" }
        servers.insert(key)
        return key
    }

    /// The engine's totals, the libpcap counts and what the engine buffers, as of now.
    func update(
        _ totals: TrafficTotals, overdueNow: [HeartbeatOverdue], pcap: CaptureStatistics?, captured: Int,
        buffered: Int, tracked: Int
    ) {
        // Servers past the bound are added up under "other"; a server's label never changes, so counters only grow.
        var labelled = TrafficTotals()
        for (server, s) in totals.servers.sorted(by: { $0.key < $1.key }) { labelled.add(s, as: serverLabel(server)) }
        for (server, s) in labelled.servers {
            let at = [("server", server)]
            gauge("amqpscope_connections_open", at, Double(s.open), help: "AMQP and other TCP connections open now.")
            count(
                "amqpscope_connections_opened_total", at, total: s.opened, help: "TCP connections seen opening.")
            for how in ["close", "fin", "rst", "evicted"] {
                count(
                    "amqpscope_connections_closed_total", at + [("how", how)], total: s.closed[how, default: 0],
                    help:
                        "Connections ended: close (an AMQP close completed), fin, rst, or evicted by amqpscope (idle, too "
                        + "many).")
            }
            for d in Direction.allCases {
                let dir = at + [("direction", d == .clientToServer ? "client_to_server" : "server_to_client")]
                count(
                    "amqpscope_heartbeats_total", dir, total: s.heartbeats[d],
                    help: "Heartbeat frames (AMQP 1.0: empty frames) by direction.")
                count(
                    "amqpscope_bytes_total", dir, total: s.bytes[d], help: "TCP payload bytes by direction.")
                for (type, n) in s.frames[d] {
                    count(
                        "amqpscope_frames_total", dir + [("type", type)], total: n,
                        help: "AMQP frames by direction and type (0-9-1 frame type, or 1.0 performative).")
                }
            }
            for (errno, n) in s.resets {
                count(
                    "amqpscope_resets_total", at + [("errno", errno)], total: n,
                    help: "TCP resets, by the errno the receiving socket's next call gets (none: no call sees one).")
            }
            count(
                "amqpscope_reassembly_gaps_total", at, total: s.gaps,
                help: "Stretches of a TCP stream that were never captured.")
        }
        var byServer: [String: Int] = [:]
        for o in overdueNow { byServer[serverLabel(o.info.server.description), default: 0] += 1 }
        for server in Set(labelled.servers.keys).union(byServer.keys) {
            gauge(
                "amqpscope_heartbeat_overdue", [("server", server)], Double(byServer[server, default: 0]),
                help: "Connection sides silent past their heartbeat interval while the peer keeps sending, now.")
        }
        count("amqpscope_capture_packets_total", [], total: captured, help: "Packets amqpscope read from libpcap.")
        if let pcap {
            count(
                "amqpscope_capture_received_total", [], total: pcap.received,
                help: "Packets the capture filter accepted (libpcap ps_recv).")
            count(
                "amqpscope_capture_dropped_total", [("by", "kernel")], total: pcap.dropped,
                help: "Packets dropped before amqpscope read them: by the kernel buffer, or by the interface.")
            count(
                "amqpscope_capture_dropped_total", [("by", "interface")], total: pcap.interfaceDropped,
                help: "Packets dropped before amqpscope read them: by the kernel buffer, or by the interface.")
        }
        gauge("amqpscope_buffered_bytes", [], Double(buffered), help: "Bytes reassembly and the decoders hold now.")
        gauge("amqpscope_tracked_connections", [], Double(tracked), help: "TCP connections tracked now.")
    }

    /// A side fell overdue (once per silence).
    func overdueStarted(_ o: HeartbeatOverdue) {
        add(
            "amqpscope_heartbeat_overdue_total", [("server", serverLabel(o.info.server.description))],
            help: "Times a connection side went silent past its heartbeat interval while the peer kept sending.")
    }

    /// A diagnosis, once, as the live report prints it.
    func diagnosis(_ d: Diagnosis) {
        add(
            "amqpscope_diagnoses_total", [("code", d.code.rawValue), ("severity", d.severity.rawValue)],
            help: "Diagnoses made, by code and severity.")
    }

    /// An ended connection's confirm and ack latencies, and with --metrics-label-queues its deliveries per queue.
    func ended(_ record: ConnectionRecord) {
        guard let flow = record.flow else { return }
        let at = [("server", serverLabel(record.info.server.description))]
        for (name, buckets) in [
            ("amqpscope_confirm_latency_seconds", flow.confirmBuckets),
            ("amqpscope_ack_latency_seconds", flow.ackBuckets),
        ] where !buckets.isEmpty {
            let h = histogram(name, [], help: Self.latencyHelp[name]!)
            for b in buckets {
                // Each latency at its bucket's upper bound (HdrHistogram buckets are 1 % wide).
                for _ in 0..<min(b.count, 100_000) { h.record(b.upToMilliseconds / 1000) }
            }
        }
        if labelQueues {
            for part in flow.byQueue where part.name.hasPrefix("queue ") && part.deliveries > 0 {
                add(
                    "amqpscope_queue_deliveries_total", at + [("queue", String(part.name.dropFirst(6)))],
                    part.deliveries, help: "Deliveries per queue (only with --metrics-label-queues).")
            }
        }
    }

    /// The exposition: Prometheus text, or OpenMetrics (its counter families named without `_total`, and `# EOF`).
    func render(openMetrics: Bool) -> (contentType: String, body: [UInt8]) {
        let text = registry.emitToString()
        guard openMetrics else { return ("text/plain; version=0.0.4; charset=utf-8", Array(text.utf8)) }
        return ("application/openmetrics-text; version=1.0.0; charset=utf-8", Array(Self.openMetrics(text).utf8))
    }

    /// Prometheus text as OpenMetrics 1.0: a counter family's HELP and TYPE name it without `_total`.
    static func openMetrics(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        var counters = Set<Substring>()
        for line in lines where line.hasPrefix("# TYPE ") && line.hasSuffix(" counter") {
            let name = line.dropFirst(7).prefix { $0 != " " }
            if name.hasSuffix("_total") { counters.insert(name) }
        }
        var out = ""
        for line in lines {
            var l = line
            for prefix in ["# HELP ", "# TYPE "] where l.hasPrefix(prefix) {
                let name = l.dropFirst(prefix.count).prefix { $0 != " " }
                if counters.contains(name) {
                    l = Substring(prefix + name.dropLast(6) + l.dropFirst(prefix.count + name.count))
                }
            }
            out += l + "\n"
        }
        return out + "# EOF\n"
    }
}

/// The libpcap counts the metrics report.
struct CaptureStatistics: Sendable {
    var received: Int
    var dropped: Int
    var interfaceDropped: Int
}

/// Serves `/metrics` on one event-loop thread.
final class MetricsServer {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    /// Listens on `host:port` (port 0: any free one, see `port`).
    init(host: String, port: Int, exporter: MetricsExporter) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(exporter: exporter))
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// The port it listens on.
    var port: Int { channel.localAddress?.port ?? 0 }

    func stop() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// GET /metrics: the exposition; anything else: 404.
final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let exporter: MetricsExporter
    var head: HTTPRequestHead?

    init(exporter: MetricsExporter) { self.exporter = exporter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            respond(context, head)
            self.head = nil
        }
    }

    func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        var status = HTTPResponseStatus.ok
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
        if path == "/metrics" && (head.method == .GET || head.method == .HEAD) {
            let accept = head.headers["accept"].joined(separator: ",")
            (contentType, body) = exporter.render(openMetrics: accept.contains("application/openmetrics-text"))
        } else {
            status = .notFound
            body = Array("amqpscope serves /metrics\n".utf8)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        if head.method != .HEAD {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        guard !head.isKeepAlive else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
    }
}
