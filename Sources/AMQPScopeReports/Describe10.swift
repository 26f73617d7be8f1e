// Readable one-line descriptions of AMQP 1.0 frames and values, and their JSON.
import AMQPScopeAMQP10
import AMQPScopePackets
import AMQPScopeTimeline

extension Describe {
    /// "attach name=\"sender-1\" handle=0 role=sender target=/queues/orders": the fields that carry information.
    package static func performative(_ frame: AMQP10Frame) -> String {
        guard let p = frame.performative else { return "empty frame (heartbeat)" }
        var parts = [p.name]
        // Concrete overloads, not an existential: descriptions are made for every key frame of every story.
        func add(_ name: String, _ value: String?) {
            if let value { parts.append(name + "=" + value) }
        }
        func add<T: BinaryInteger>(_ name: String, _ value: T?) {
            if let value { parts.append(name + "=" + String(value)) }
        }
        func quoted(_ text: String?, limit: Int = 80) -> String? {
            text.map { "\"" + Format.safe($0, limit: limit) + "\"" }
        }
        switch p {
        case .open(let o):
            add("container-id", quoted(o.containerID))
            add("hostname", quoted(o.hostname))
            add("max-frame-size", o.maxFrameSize)
            add("channel-max", o.channelMax)
            add("idle-time-out", o.idleTimeOut)
            for key in ["product", "version", "platform"] {
                add(key, quoted(o.properties[key]?.text, limit: 60))
            }
        case .begin(let b):
            add("remote-channel", b.remoteChannel)
            add("next-outgoing-id", b.nextOutgoingID)
            add("incoming-window", b.incomingWindow)
            add("outgoing-window", b.outgoingWindow)
            add("handle-max", b.handleMax)
        case .attach(let a):
            add("name", quoted(a.name))
            add("handle", a.handle)
            add("role", a.role.rawValue as String?)
            if let s = a.source { add("source", quoted(s.address ?? (s.dynamic ? "(dynamic)" : "(none)"))) }
            if let t = a.target { add("target", quoted(t.address ?? (t.dynamic ? "(dynamic)" : "(none)"))) }
            if a.source == nil { parts.append("source=null") }
            if a.target == nil { parts.append("target=null") }
            add("snd-settle-mode", a.sndSettleMode)
            add("rcv-settle-mode", a.rcvSettleMode)
            add("initial-delivery-count", a.initialDeliveryCount)
        case .flow(let f):
            add("next-incoming-id", f.nextIncomingID)
            add("incoming-window", f.incomingWindow)
            add("next-outgoing-id", f.nextOutgoingID)
            add("outgoing-window", f.outgoingWindow)
            add("handle", f.handle)
            add("delivery-count", f.deliveryCount)
            add("link-credit", f.linkCredit)
            add("available", f.available)
            if f.drain { parts.append("drain") }
            if f.echo { parts.append("echo") }
        case .transfer(let t):
            add("handle", t.handle)
            add("delivery-id", t.deliveryID)
            if let length = t.deliveryTagLength { add("delivery-tag", "\(length) bytes") }
            if t.settled == true { parts.append("settled") }
            if t.more { parts.append("more") }
            if t.aborted { parts.append("aborted") }
            if let state = t.state { add("state", state.name) }
            parts.append("\(t.payloadLength) payload bytes")
        case .disposition(let d):
            add("role", d.role.rawValue)
            add("first", d.first)
            add("last", d.last)
            if d.settled { parts.append("settled") }
            if let state = d.state { add("state", state.name) }
            if case .rejected(let e?)? = d.state { parts.append(error(e)) }
        case .detach(let d):
            add("handle", d.handle)
            if d.closed { parts.append("closed") }
            if let e = d.error { parts.append(error(e)) }
        case .end(let e), .close(let e):
            if let e { parts.append(error(e)) }
        case .saslMechanisms(let m):
            add("mechanisms", m.map { Format.safe($0, limit: 40) }.joined(separator: ","))
        case .saslInit(let i):
            add("mechanism", Format.safe(i.mechanism, limit: 40))
            add("user", quoted(i.user, limit: 60))
            if let length = i.initialResponseLength {
                parts.append(
                    i.initialResponse.map { "initial-response=\"\(Format.safe(String(decoding: $0, as: UTF8.self)))\"" }
                        ?? "initial-response=\(length) bytes (redacted)")
            }
            add("hostname", quoted(i.hostname))
        case .saslChallenge(let length), .saslResponse(let length):
            parts.append("\(length) bytes (not shown)")
        case .saslOutcome(let o):
            parts.append("code=\(o.code) (\(o.codeName))")
        }
        if frame.type == 0 && !(p.descriptor == .open || p.descriptor == .close) {
            parts.insert("[ch \(frame.channel)]", at: 1)
        }
        return parts.joined(separator: " ")
    }

    /// "error amqp:not-found \"NOT_FOUND - no queue ...\"".
    package static func error(_ e: AMQP10Error) -> String {
        "error \(Format.safe(e.condition, limit: 80))"
            + (e.description.map { " \"\(Format.safe($0, limit: 300))\"" } ?? "")
    }

    /// "idle-time-out client 1000 ms, server 60000 ms; max-frame-size client 4294967295, server 131072; ...".
    package static func negotiated10(_ s: AMQP10Story) -> String {
        let client = s.open(sentBy: .client)
        let server = s.open(sentBy: .server)
        func pair<T>(_ get: (Open) -> T?, _ unit: String = "") -> String {
            let c = client.flatMap(get).map { "\($0)\(unit)" } ?? "none"
            let v = server.flatMap(get).map { "\($0)\(unit)" } ?? "none"
            return "client \(c), server \(v)"
        }
        var parts = [
            "idle-time-out " + pair({ $0.idleTimeOut.flatMap { $0 == 0 ? nil : $0 } }, " ms"),
            "max-frame-size " + pair { $0.maxFrameSize },
            "channel-max " + pair { $0.channelMax },
        ]
        if client == nil || server == nil { parts.append("(an open is missing from the capture)") }
        return parts.joined(separator: "; ")
    }

    /// An AMQP 1.0 value as JSON: maps with text keys as objects, binary as hex, described values as
    /// {"descriptor": ..., "value": ...}.
    package static func json(_ value: AMQP10Value) -> JSON {
        switch value {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .ubyte(let v): return .int(Int64(v))
        case .ushort(let v): return .int(Int64(v))
        case .uint(let v): return .int(Int64(v))
        case .ulong(let v): return v <= UInt64(Int64.max) ? .int(Int64(v)) : .string(String(v))
        case .byte(let v): return .int(Int64(v))
        case .short(let v): return .int(Int64(v))
        case .int(let v): return .int(Int64(v))
        case .long(let v): return .int(v)
        case .float(let v): return .double(Double(v))
        case .double(let v): return .double(v)
        case .decimal(let bytes), .uuid(let bytes), .binary(let bytes): return .string(hex(bytes))
        case .char(let c): return .string(Unicode.Scalar(c).map { String(Character($0)) } ?? "")
        case .timestamp(let ms): return .int(ms)
        case .string(let s), .symbol(let s): return .string(s)
        case .list(let values), .array(let values): return .array(values.map(json))
        case .map(let entries):
            if entries.allSatisfy({ $0.key.text != nil }) {
                return .object(entries.map { ($0.key.text!, json($0.value)) })
            }
            return .array(entries.map { .array([json($0.key), json($0.value)]) })
        case .described(let descriptor, let inner):
            let name = descriptor.unsigned.flatMap { AMQP10Descriptor(rawValue: $0)?.name } ?? descriptor.text
            return .object([("descriptor", name.map(JSON.string) ?? json(descriptor)), ("value", json(inner))])
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }
}
