// The message flow's view of a message, and the routine methods read straight from their bytes: what a sink that
// follows the flow, and keeps no frames or messages, takes instead of `Method` values and whole `Message`s.
import AMQPScopePackets

/// What the message flow follows of a message: which method carried it, with only the arguments the flow reads, and
/// how it is known when it comes back. A sink that keeps no messages takes these (`CodecSink.takesFlowMessages`);
/// every `Message` also gives one (`init(_:)`), so the flow is followed the same way from either.
package struct FlowMessage: Equatable {
    /// The method that carried it, as the flow reads it.
    package enum Carrier: Equatable {
        case publish(exchange: String, routingKey: String)
        /// The consumer tag is known by a digest of its UTF-8 bytes (`tagDigest`): a broker echoes the tag's bytes,
        /// and a tag longer than 15 bytes would otherwise be a String allocated for every delivery.
        case deliver(consumerTag: UInt64, deliveryTag: UInt64, redelivered: Bool)
        case getOk(deliveryTag: UInt64, redelivered: Bool)
        /// basic.return, and content methods of other classes.
        case other
    }

    /// The AMQP channel.
    package var channel: UInt16
    package var carrier: Carrier
    /// The capture cut its method short (see `Message.methodCut`).
    package var methodCut = false
    /// A digest of its message-id property (see `Message.messageIDDigest`).
    package var messageIDDigest: UInt64? = nil
    /// Its message-id's first 15 bytes.
    package var messageIDPrefix: MessageIDPrefix? = nil

    package init(channel: UInt16, carrier: Carrier) {
        self.channel = channel
        self.carrier = carrier
    }

    /// The flow's view of a whole message.
    package init(_ message: borrowing Message) {
        let carrier: Carrier
        switch message.method {
        case .basicPublish(let p): carrier = .publish(exchange: p.exchange, routingKey: p.routingKey)
        case .basicDeliver(let d):
            carrier = .deliver(
                consumerTag: Self.tagDigest(d.consumerTag), deliveryTag: d.deliveryTag, redelivered: d.redelivered)
        case .basicGetOk(let g): carrier = .getOk(deliveryTag: g.deliveryTag, redelivered: g.redelivered)
        default: carrier = .other
        }
        self.init(channel: message.channel, carrier: carrier)
        methodCut = message.methodCut
        messageIDDigest = message.messageIDDigest
        messageIDPrefix = message.messageIDPrefix
    }

    /// How a consumer tag is known to the flow: a digest (64-bit FNV-1a) of its UTF-8 bytes.
    package static func tagDigest(_ tag: String) -> UInt64 {
        var tag = tag
        return tag.withUTF8 { FieldReader.digest(UnsafeRawBufferPointer($0)) }
    }

    /// The name of the method that carried it, as a violation gives it.
    var methodName: String {
        switch carrier {
        case .publish: "basic.publish"
        case .deliver: "basic.deliver"
        case .getOk: "basic.get-ok"
        case .other: "method"
        }
    }
}

extension RoutineMethod {
    /// basic.publish, deliver, ack, nack or reject read straight from a whole method frame's payload, with the
    /// message the flow follows of a publish or a delivery (only when `flowMessage`; otherwise nil is returned for
    /// them, and their `Method` is made instead). The fields are read in the same order and with the same checks as
    /// `Method.decode`, so a payload this refuses is refused there too and reported from there. Nil for every other
    /// method.
    static func read(_ payload: UnsafeRawBufferPointer, channel: UInt16, flowMessage: Bool) -> (
        method: RoutineMethod, message: FlowMessage?
    )? {
        guard payload.count >= 4, payload.integer(at: 0) as UInt16 == Self.classID else { return nil }
        var reader = FieldReader(payload)
        do throws(DecodeError) {
            _ = try reader.short()  // the class, read above
            switch try reader.short() {
            case BasicAck.methodID:
                let tag = try reader.longlong()
                let bits = try reader.octet()
                return (.ack(deliveryTag: tag, multiple: bits & 1 != 0), nil)
            case BasicNack.methodID:
                let tag = try reader.longlong()
                let bits = try reader.octet()
                return (.nack(deliveryTag: tag, multiple: bits & 1 != 0, requeue: bits & 2 != 0), nil)
            case BasicReject.methodID:
                let tag = try reader.longlong()
                let bits = try reader.octet()
                return (.reject(deliveryTag: tag, requeue: bits & 1 != 0), nil)
            case BasicPublish.methodID where flowMessage:
                _ = try reader.short()  // ticket
                let exchange = try reader.shortString()
                let routingKey = try reader.shortString()
                _ = try reader.octet()  // mandatory, immediate
                return (
                    .publish,
                    FlowMessage(channel: channel, carrier: .publish(exchange: exchange, routingKey: routingKey))
                )
            case BasicDeliver.methodID where flowMessage:
                let consumerTag = try reader.shortStringTagDigest()
                let deliveryTag = try reader.longlong()
                let bits = try reader.octet()
                try reader.skipShortString()  // exchange
                try reader.skipShortString()  // routing key
                return (
                    .deliver,
                    FlowMessage(
                        channel: channel,
                        carrier: .deliver(
                            consumerTag: consumerTag, deliveryTag: deliveryTag, redelivered: bits & 1 != 0))
                )
            default:
                return nil
            }
        } catch {
            return nil
        }
    }
}

extension FieldReader {
    /// Skips a short string, returning `FlowMessage.tagDigest` of the String it would have made: the digest of its
    /// bytes when they are ASCII (as tags are), else of the String made from them (invalid UTF-8 repaired).
    mutating func shortStringTagDigest() throws(DecodeError) -> UInt64 {
        let length = Int(try octet())
        let at = try take(length, "short string")
        let raw = UnsafeRawBufferPointer(rebasing: bytes[at..<at + length])
        guard raw.contains(where: { $0 >= 0x80 }) else { return Self.digest(raw) }
        return FlowMessage.tagDigest(String(decoding: raw, as: UTF8.self))
    }
}
