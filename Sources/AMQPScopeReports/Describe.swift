// Readable one-line descriptions of AMQP methods, frames and values (tshark-like, but for people).
import AMQPScopeCodec
import AMQPScopePackets
import AMQPScopeReassembly
import AMQPScopeTimeline

package enum Describe {
    /// "queue.declare queue=orders durable" — arguments that carry information, secrets already redacted.
    package static func method(_ method: Method) -> String {
        // Built in one string, not joined from an array: reports and live capture describe every key frame.
        var text = method.name
        text.reserveCapacity(96)
        func add(_ part: String) {
            text.append(" ")
            text.append(part)
        }
        switch method {
        case .connectionStart(let m):
            add("version=\(m.versionMajor)-\(m.versionMinor)")
            for part in peer(m.serverProperties) { add(part) }
            add("mechanisms=\(Format.safe(m.mechanisms.text, limit: 60))")
        case .connectionStartOk(let m):
            for part in peer(m.clientProperties) { add(part) }
            add("mechanism=\(Format.safe(m.mechanism))")
            if let user = Credentials.user(mechanism: m.mechanism, response: m.response) {
                add("user=\(Format.safe(user, limit: 60))")
            }
        case .connectionTune(let m):
            add("channel_max=\(m.channelMax) frame_max=\(m.frameMax) heartbeat=\(m.heartbeat)")
        case .connectionTuneOk(let m):
            add("channel_max=\(m.channelMax) frame_max=\(m.frameMax) heartbeat=\(m.heartbeat)")
        case .connectionClose(let m):
            add("\(m.replyCode) \(replyName(m.replyCode)) \"\(Format.safe(m.replyText))\"")
            if m.classId != 0 { add("(in \(AMQPSpec.methodName(classID: m.classId, methodID: m.methodId)))") }
        case .channelClose(let m):
            add("\(m.replyCode) \(replyName(m.replyCode)) \"\(Format.safe(m.replyText))\"")
            if m.classId != 0 { add("(in \(AMQPSpec.methodName(classID: m.classId, methodID: m.methodId)))") }
        case .connectionBlocked(let m):
            add("reason=\"\(Format.safe(m.reason))\"")
        default:
            for argument in method.namedArguments {
                guard let value = Self.argument(argument.value) else { continue }
                if case .bit = argument.value {
                    add(argument.name)
                } else {
                    add("\(argument.name)=\(value)")
                }
            }
        }
        return text
    }

    /// A frame: method description, content header summary, body size or "heartbeat".
    package static func frame(_ frame: Frame) -> String {
        frame.cut ? whole(frame) + " (cut by the capture: the rest unknown)" : whole(frame)
    }

    static func whole(_ frame: Frame) -> String {
        switch frame.content {
        case .method(let m): return method(m)
        case .header(let h):
            var text = "content-header body-size=\(h.bodySize)"
            if let type = h.properties.contentType { text += " content-type=\(Format.safe(type, limit: 60))" }
            if let mode = h.properties.deliveryMode { text += " delivery-mode=\(mode)" }
            return text
        case .body(let length): return "content-body \(length) bytes"
        case .heartbeat: return "heartbeat"
        }
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

    /// Product, version and connection name from client or server properties.
    package static func peer(_ table: FieldTable) -> [String] {
        var out: [String] = []
        if let product = table.string("product") { out.append("product=\"\(Format.safe(product, limit: 60))\"") }
        if let version = table.string("version") { out.append("version=\"\(Format.safe(version, limit: 40))\"") }
        if let name = table.string("connection_name") {
            out.append("connection_name=\"\(Format.safe(name, limit: 60))\"")
        }
        return out
    }

    package static func replyName(_ code: UInt16) -> String { AMQPSpec.replyCodes[code]?.name ?? "UNKNOWN" }

    /// An argument worth showing, or nil for empty strings, false bits, zero tickets and empty tables.
    static func argument(_ value: ArgumentValue) -> String? {
        switch value {
        case .bit(let b): return b ? "" : nil
        case .octet(let v): return String(v)
        case .short(let v): return v == 0 ? nil : String(v)
        case .long(let v): return String(v)
        case .longlong(let v): return String(v)
        case .timestamp(let v): return String(v)
        case .shortString(let s): return s.isEmpty ? nil : "\"\(Format.safe(s, limit: 80))\""
        case .longString(let s): return s.bytes.isEmpty ? nil : "\"\(Format.safe(s.text, limit: 80))\""
        case .table(let t): return t.entries.isEmpty ? nil : "{\(t.entries.count) entries}"
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
