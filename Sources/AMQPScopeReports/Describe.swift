// Readable one-line descriptions of AMQP methods, frames and values (tshark-like, but for people).
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

package enum Describe {
    /// "queue.declare queue=orders durable" — arguments that carry information, secrets already redacted.
    package static func method(_ method: Method) -> String {
        var text = ""
        text.reserveCapacity(96)
        write(method, into: &text)
        return text
    }

    /// `method`'s words, written into `s`: reports and live capture describe every key frame.
    package static func write<S: TextSink & ~Copyable>(_ method: Method, into s: inout S) {
        s.write(method.name)
        switch method {
        case .connectionStart(let m):
            s.write(" version=")
            s.write(m.versionMajor)
            s.write("-")
            s.write(m.versionMinor)
            peer(m.serverProperties, into: &s)
            s.write(" mechanisms=")
            s.write(Format.safe(m.mechanisms.text, limit: 60))
        case .connectionStartOk(let m):
            peer(m.clientProperties, into: &s)
            s.write(" mechanism=")
            s.write(Format.safe(m.mechanism))
            if let user = Credentials.user(mechanism: m.mechanism, response: m.response) {
                s.write(" user=")
                s.write(Format.safe(user, limit: 60))
            }
        case .connectionTune(let m):
            tune(m.channelMax, m.frameMax, m.heartbeat, into: &s)
        case .connectionTuneOk(let m):
            tune(m.channelMax, m.frameMax, m.heartbeat, into: &s)
        case .connectionClose(let m):
            close(m.replyCode, m.replyText, m.classId, m.methodId, into: &s)
        case .channelClose(let m):
            close(m.replyCode, m.replyText, m.classId, m.methodId, into: &s)
        case .connectionBlocked(let m):
            s.write(" reason=\"")
            s.write(Format.safe(m.reason))
            s.write("\"")
        default:
            for argument in method.namedArguments { write(argument, into: &s) }
        }
    }

    private static func tune<S: TextSink & ~Copyable>(
        _ channelMax: UInt16, _ frameMax: UInt32, _ heartbeat: UInt16, into s: inout S
    ) {
        s.write(" channel_max=")
        s.write(channelMax)
        s.write(" frame_max=")
        s.write(frameMax)
        s.write(" heartbeat=")
        s.write(heartbeat)
    }

    private static func close<S: TextSink & ~Copyable>(
        _ code: UInt16, _ text: String, _ classID: UInt16, _ methodID: UInt16, into s: inout S
    ) {
        s.write(" ")
        s.write(code)
        s.write(" ")
        s.write(replyName(code))
        s.write(" \"")
        s.write(Format.safe(text))
        s.write("\"")
        if classID != 0 {
            s.write(" (in ")
            s.write(AMQPSpec.methodName(classID: classID, methodID: methodID))
            s.write(")")
        }
    }

    /// A frame: method description, content header summary, body size or "heartbeat".
    package static func frame(_ frame: Frame) -> String {
        var text = ""
        write(frame, into: &text)
        return text
    }

    /// `frame`'s words, written into `s`.
    package static func write<S: TextSink & ~Copyable>(_ frame: Frame, into s: inout S) {
        switch frame.content {
        case .method(let m): write(m, into: &s)
        case .header(let h):
            s.write("content-header body-size=")
            s.write(h.bodySize)
            if let type = h.properties.contentType {
                s.write(" content-type=")
                s.write(Format.safe(type, limit: 60))
            }
            if let mode = h.properties.deliveryMode {
                s.write(" delivery-mode=")
                s.write(mode)
            }
        case .body(let length):
            s.write("content-body ")
            s.write(length)
            s.write(" bytes")
        case .heartbeat: s.write("heartbeat")
        }
        if frame.cut { s.write(" (cut by the capture: the rest unknown)") }
    }

    /// "packet 20 at 09:30:35.239831: last frame from the client" (not escaped: each report escapes for itself).
    package static func evidence(_ e: Evidence) -> String {
        (e.packetNumber > 0 ? "packet \(e.packetNumber) " : "") + "at \(Format.time(e.time).suffix(15)): \(e.what)"
    }

    /// "heartbeat 2 s (server proposed 60 s), frame_max 131072, channel_max 2047": one wording for every report.
    package static func negotiated(_ n: Negotiated) -> String {
        var text = "heartbeat \(n.heartbeat == 0 ? "off (0)" : "\(n.heartbeat) s")"
        if n.inferred { text += " (inferred from the heartbeat cadence; no Tune in the capture)" }
        if let proposed = n.serverProposed, proposed.heartbeat != n.heartbeat {
            text += " (server proposed \(proposed.heartbeat) s)"
        }
        if let fm = n.frameMax { text += ", frame_max \(fm)" }
        if let cm = n.channelMax { text += ", channel_max \(cm)" }
        return text
    }

    /// Product, version and connection name from client or server properties, each after a space.
    static func peer<S: TextSink & ~Copyable>(_ table: FieldTable, into s: inout S) {
        if let product = table.string("product") {
            s.write(" product=\"")
            s.write(Format.safe(product, limit: 60))
            s.write("\"")
        }
        if let version = table.string("version") {
            s.write(" version=\"")
            s.write(Format.safe(version, limit: 40))
            s.write("\"")
        }
        if let name = table.string("connection_name") {
            s.write(" connection_name=\"")
            s.write(Format.safe(name, limit: 60))
            s.write("\"")
        }
    }

    package static func replyName(_ code: UInt16) -> String { AMQPSpec.replyCodes[code]?.name ?? "UNKNOWN" }

    /// An argument worth showing, after a space: nothing for empty strings, false bits, zero tickets and empty
    /// tables; a true bit by its name alone.
    static func write<S: TextSink & ~Copyable>(_ argument: NamedValue, into s: inout S) {
        func name() {
            s.write(" ")
            s.write(argument.name)
        }
        switch argument.value {
        case .bit(let b):
            if b { name() }
        case .octet(let v):
            name()
            s.write("=")
            s.write(v)
        case .short(let v):
            guard v != 0 else { return }
            name()
            s.write("=")
            s.write(v)
        case .long(let v):
            name()
            s.write("=")
            s.write(v)
        case .longlong(let v), .timestamp(let v):
            name()
            s.write("=")
            s.write(v)
        case .shortString(let text):
            guard !text.isEmpty else { return }
            name()
            s.write("=\"")
            s.write(Format.safe(text, limit: 80))
            s.write("\"")
        case .longString(let text):
            guard !text.bytes.isEmpty else { return }
            name()
            s.write("=\"")
            s.write(Format.safe(text.text, limit: 80))
            s.write("\"")
        case .table(let t):
            guard !t.entries.isEmpty else { return }
            name()
            s.write("={")
            s.write(t.entries.count)
            s.write(" entries}")
        }
    }

    /// A field value as JSON.
    package static func json(_ value: FieldValue) -> JSON {
        switch value {
        case .boolean(let b): return .bool(b)
        case .int8(let v): return .int(Int64(v))
        case .uint8(let v): return .int(Int64(v))
        case .int16(let v): return .int(Int64(v))
        case .uint16(let v): return .int(Int64(v))
        case .int32(let v): return .int(Int64(v))
        case .uint32(let v): return .int(Int64(v))
        case .int64(let v): return .int(v)
        case .float(let v): return .double(Double(v))
        case .double(let v): return .double(v)
        case .decimal(let scale, let v): return .string("\(v)e-\(scale)")
        case .longString(let s): return .string(s.text)
        case .array(let a): return .array(a.map(json))
        case .timestamp(let t): return .int(Int64(bitPattern: t))
        case .table(let t): return json(t)
        case .void: return .null
        case .byteArray(let bytes):
            return .string(bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined())
        }
    }

    package static func json(_ table: FieldTable) -> JSON {
        .object(table.entries.map { ($0.key, json($0.value)) })
    }

    package static func json(_ value: ArgumentValue) -> JSON {
        switch value {
        case .octet(let v): return .int(Int64(v))
        case .short(let v): return .int(Int64(v))
        case .long(let v): return .int(Int64(v))
        case .longlong(let v): return .int(Int64(bitPattern: v))
        case .bit(let b): return .bool(b)
        case .shortString(let s): return .string(s)
        case .longString(let s): return .string(s.text)
        case .table(let t): return json(t)
        case .timestamp(let t): return .int(Int64(bitPattern: t))
        }
    }
}
