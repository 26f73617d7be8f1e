// The performatives of AMQP 1.0 (part 2.7, transport) and SASL (part 5.3): a frame body's described list, read
// into typed values. Field positions come from the generated `...Field` enums (scripts/gen-amqp10).
//
// The routine performatives (transfer, flow, disposition) are read in place, field by field, without allocating:
// they are most of a busy connection's frames. The others are read whole.
import AMQPScopePackets

/// A link end's role: the sender (false on the wire) or the receiver (true).
public enum LinkRole: String, Hashable, Sendable {
    case sender, receiver
    init(_ wire: Bool) { self = wire ? .receiver : .sender }
}

/// An error carried by close, end, detach or a rejected outcome (part 2.8.14).
public struct AMQP10Error: Hashable, Sendable {
    /// The condition symbol: "amqp:not-found", "amqp:connection:forced", ...
    public var condition: String
    /// The description text, if any.
    public var description: String?
    /// The info map.
    public var info: [AMQP10MapEntry]
}

/// A source or target terminus (part 3.5.3, 3.5.4): what a link reads from or writes to.
public struct Terminus: Hashable, Sendable {
    /// The node's address.
    public var address: String?
    /// Whether the node is made by the peer (dynamic).
    public var dynamic: Bool
}

/// The outcome or state of a delivery (part 3.4).
public enum DeliveryState: Hashable, Sendable {
    case accepted
    indirect case rejected(AMQP10Error?)
    case released
    case modified(deliveryFailed: Bool, undeliverableHere: Bool)
    case received(sectionNumber: UInt32, sectionOffset: UInt64)
    /// A transactional or other state, by descriptor code.
    case other(UInt64)

    /// "accepted", "rejected", ...
    public var name: String {
        switch self {
        case .accepted: "accepted"
        case .rejected: "rejected"
        case .released: "released"
        case .modified: "modified"
        case .received: "received"
        case .other(let code): AMQP10Descriptor(rawValue: code)?.name ?? "state 0x\(String(code, radix: 16))"
        }
    }
}

/// open: a connection's parameters.
public struct Open: Hashable, Sendable {
    /// The sender's container id.
    public var containerID: String
    /// The host the sender wants to reach (virtual host).
    public var hostname: String?
    /// The largest frame the sender accepts, in bytes (nil: no limit, 4294967295).
    public var maxFrameSize: UInt32?
    /// The highest channel the sender accepts.
    public var channelMax: UInt16?
    /// The sender's idle timeout, in milliseconds: its peer must send something (an empty frame at least) within
    /// it. Nil or 0: none.
    public var idleTimeOut: UInt32?
    /// Capabilities the sender offers.
    public var offeredCapabilities: [String]
    /// Capabilities the sender wants.
    public var desiredCapabilities: [String]
    /// The sender's properties (product, version, platform, ...).
    public var properties: [AMQP10MapEntry]
}

/// begin: a session's parameters.
public struct Begin: Hashable, Sendable {
    /// The peer's channel this begin answers (nil: the sender begins the session).
    public var remoteChannel: UInt16?
    /// The sender's next outgoing transfer id.
    public var nextOutgoingID: UInt32
    /// Transfers the sender can take.
    public var incomingWindow: UInt32
    /// Transfers the sender may send.
    public var outgoingWindow: UInt32
    /// The highest link handle.
    public var handleMax: UInt32?
}

/// attach: a link's parameters.
public struct Attach: Hashable, Sendable {
    /// The link's name (both ends use it).
    public var name: String
    /// The sender's handle for the link.
    public var handle: UInt32
    /// The sender's role on the link.
    public var role: LinkRole
    /// Sender settle mode: 0 unsettled, 1 settled, 2 mixed.
    public var sndSettleMode: UInt8?
    /// Receiver settle mode: 0 first, 1 second.
    public var rcvSettleMode: UInt8?
    /// Where messages come from (nil: the attach carries none, as when a node does not exist).
    public var source: Terminus?
    /// Where messages go.
    public var target: Terminus?
    /// The sender's first delivery count (senders only).
    public var initialDeliveryCount: UInt32?
    /// The largest message the sender accepts.
    public var maxMessageSize: UInt64?
}

/// flow: a session's windows and, with a handle, a link's credit.
public struct Flow: Hashable, Sendable {
    /// The next transfer id the sender expects.
    public var nextIncomingID: UInt32?
    /// The sender's incoming window.
    public var incomingWindow: UInt32
    /// The sender's next outgoing transfer id.
    public var nextOutgoingID: UInt32
    /// The sender's outgoing window.
    public var outgoingWindow: UInt32
    /// The link, when the flow is about one.
    public var handle: UInt32?
    /// The link's delivery count.
    public var deliveryCount: UInt32?
    /// Credit granted.
    public var linkCredit: UInt32?
    /// Messages available at the sender.
    public var available: UInt32?
    /// Drain mode.
    public var drain: Bool
    /// Asks for a flow in return.
    public var echo: Bool
}

/// transfer: (a frame of) a message on a link.
public struct Transfer: Hashable, Sendable {
    /// The link.
    public var handle: UInt32
    /// The delivery id (on the first frame of a delivery).
    public var deliveryID: UInt32?
    /// The delivery tag's length in bytes, and its first eight bytes (big-endian, zero-padded).
    public var deliveryTagLength: Int?
    /// The first eight bytes of the delivery tag.
    public var deliveryTagPrefix: UInt64
    /// The message format (0: the AMQP message format).
    public var messageFormat: UInt32?
    /// Sent settled.
    public var settled: Bool?
    /// More frames of this delivery follow.
    public var more: Bool
    /// The delivery's state (resumed or transactional deliveries).
    public var state: DeliveryState?
    /// The delivery is aborted.
    public var aborted: Bool
    /// Bytes after the performative: the message's sections (or part of them).
    public var payloadLength: Int
}

/// disposition: deliveries' outcomes and settlement.
public struct Disposition: Hashable, Sendable {
    /// The sender's role (a receiver settles what it received, a sender what it sent).
    public var role: LinkRole
    /// The first delivery id.
    public var first: UInt32
    /// The last delivery id (nil: only `first`).
    public var last: UInt32?
    /// Settled.
    public var settled: Bool
    /// The outcome.
    public var state: DeliveryState?
}

/// detach: a link ends (or is suspended, when not closed).
public struct Detach: Hashable, Sendable {
    /// The sender's handle for the link.
    public var handle: UInt32
    /// The link is closed, not only detached.
    public var closed: Bool
    /// Why, when it is an error.
    public var error: AMQP10Error?
}

/// sasl-init: the client's chosen mechanism and its first response. The response is kept only when credentials are
/// shown; PLAIN's user name is kept always.
public struct SaslInit: Hashable, Sendable {
    /// The mechanism: PLAIN, ANONYMOUS, EXTERNAL, ...
    public var mechanism: String
    /// The initial response's length in bytes.
    public var initialResponseLength: Int?
    /// PLAIN's authentication identity (the user name).
    public var user: String?
    /// The initial response, when credentials are shown.
    public var initialResponse: [UInt8]?
    /// The host name the client asked for.
    public var hostname: String?
}

/// sasl-outcome: the server's verdict.
public struct SaslOutcome: Hashable, Sendable {
    /// 0 ok, 1 auth, 2 sys, 3 sys-perm, 4 sys-temp.
    public var code: UInt8
    /// Additional data's length in bytes.
    public var additionalDataLength: Int?

    /// "ok", "auth", ...
    public var codeName: String { SaslCode(rawValue: code)?.name ?? "code \(code)" }
}

/// A frame body's performative. The cases that carry strings and collections are indirect: they are rare (a
/// handful per connection), and the frequent ones (transfer, flow, disposition, empty frames) stay small to copy.
public enum Performative: Hashable, Sendable {
    indirect case open(Open)
    case begin(Begin)
    indirect case attach(Attach)
    case flow(Flow)
    case transfer(Transfer)
    case disposition(Disposition)
    indirect case detach(Detach)
    /// end, with its error if any.
    indirect case end(AMQP10Error?)
    /// close, with its error if any.
    indirect case close(AMQP10Error?)
    /// sasl-mechanisms: what the server offers.
    case saslMechanisms([String])
    indirect case saslInit(SaslInit)
    /// sasl-challenge, with its length in bytes (its content is not shown).
    case saslChallenge(length: Int)
    /// sasl-response, with its length in bytes (its content is not shown).
    case saslResponse(length: Int)
    case saslOutcome(SaslOutcome)

    /// The descriptor.
    package var descriptor: AMQP10Descriptor {
        switch self {
        case .open: .open
        case .begin: .begin
        case .attach: .attach
        case .flow: .flow
        case .transfer: .transfer
        case .disposition: .disposition
        case .detach: .detach
        case .end: .end
        case .close: .close
        case .saslMechanisms: .saslMechanisms
        case .saslInit: .saslInit
        case .saslChallenge: .saslChallenge
        case .saslResponse: .saslResponse
        case .saslOutcome: .saslOutcome
        }
    }

    /// The name in the specification: "open", "sasl-init", ...
    public var name: String { descriptor.name }

    /// The error it carries (close, end, detach).
    public var error: AMQP10Error? {
        switch self {
        case .close(let e), .end(let e): e
        case .detach(let d): d.error
        default: nil
        }
    }
}

// MARK: - Reading

extension Performative {
    /// Reads the performative that starts a frame body. `showCredentials` keeps SASL responses.
    package static func decode(
        _ reader: inout AMQP10Reader, frameType: UInt8, showCredentials: Bool
    ) throws(AMQP10DecodeError) -> Performative {
        let code = try reader.descriptor()
        guard let descriptor = AMQP10Descriptor(rawValue: code) else {
            throw AMQP10DecodeError(.badDescriptor, "descriptor 0x\(String(code, radix: 16)) is not a performative")
        }
        let sasl = code >= 0x40 && code <= 0x44
        let performative = code >= 0x10 && code <= 0x18
        guard sasl || performative else {
            throw AMQP10DecodeError(.unexpectedType, "\(descriptor.name) is not a performative")
        }
        guard sasl == (frameType == 1) else {
            throw AMQP10DecodeError(
                .unexpectedType,
                "\(descriptor.name) in a\(frameType == 1 ? " SASL" : "n AMQP") frame")
        }
        switch descriptor {
        case .transfer: return .transfer(try readTransfer(&reader))
        case .flow: return .flow(try readFlow(&reader))
        case .disposition: return .disposition(try readDisposition(&reader))
        default: break
        }
        let value = try reader.value()
        guard case .list(let list) = value else {
            throw AMQP10DecodeError(.unexpectedType, "\(descriptor.name)'s fields are not a list")
        }
        let f = Fields(list: list, type: descriptor.name)
        switch descriptor {
        case .open:
            return .open(
                Open(
                    containerID: try f.required(OpenField.containerID.rawValue, "container-id", \.text),
                    hostname: f[OpenField.hostname.rawValue]?.text,
                    maxFrameSize: try f.uint(OpenField.maxFrameSize.rawValue, "max-frame-size"),
                    channelMax: try f.uint(OpenField.channelMax.rawValue, "channel-max").map { UInt16(clamping: $0) },
                    idleTimeOut: try f.uint(OpenField.idleTimeOut.rawValue, "idle-time-out"),
                    offeredCapabilities: f[OpenField.offeredCapabilities.rawValue]?.symbols ?? [],
                    desiredCapabilities: f[OpenField.desiredCapabilities.rawValue]?.symbols ?? [],
                    properties: f[OpenField.properties.rawValue]?.entries ?? []))
        case .begin:
            return .begin(
                Begin(
                    remoteChannel: try f.uint(BeginField.remoteChannel.rawValue, "remote-channel").map {
                        UInt16(clamping: $0)
                    },
                    nextOutgoingID: try f.uint(BeginField.nextOutgoingID.rawValue, "next-outgoing-id") ?? 0,
                    incomingWindow: try f.uint(BeginField.incomingWindow.rawValue, "incoming-window") ?? 0,
                    outgoingWindow: try f.uint(BeginField.outgoingWindow.rawValue, "outgoing-window") ?? 0,
                    handleMax: try f.uint(BeginField.handleMax.rawValue, "handle-max")))
        case .attach:
            return .attach(
                Attach(
                    name: try f.required(AttachField.name.rawValue, "name", \.text),
                    handle: try f.uint(AttachField.handle.rawValue, "handle") ?? 0,
                    role: LinkRole(f[AttachField.role.rawValue] == .bool(true)),
                    sndSettleMode: try f.uint(AttachField.sndSettleMode.rawValue, "snd-settle-mode").map {
                        UInt8(clamping: $0)
                    },
                    rcvSettleMode: try f.uint(AttachField.rcvSettleMode.rawValue, "rcv-settle-mode").map {
                        UInt8(clamping: $0)
                    },
                    source: terminus(
                        f[AttachField.source.rawValue], address: SourceField.address.rawValue,
                        dynamic: SourceField.dynamic.rawValue),
                    target: terminus(
                        f[AttachField.target.rawValue], address: TargetField.address.rawValue,
                        dynamic: TargetField.dynamic.rawValue),
                    initialDeliveryCount: try f.uint(
                        AttachField.initialDeliveryCount.rawValue, "initial-delivery-count"),
                    maxMessageSize: f[AttachField.maxMessageSize.rawValue]?.unsigned))
        case .detach:
            return .detach(
                Detach(
                    handle: try f.uint(DetachField.handle.rawValue, "handle") ?? 0,
                    closed: f[DetachField.closed.rawValue] == .bool(true),
                    error: error(f[DetachField.error.rawValue])))
        case .end: return .end(error(f[0]))
        case .close: return .close(error(f[0]))
        case .saslMechanisms: return .saslMechanisms(f[0]?.symbols ?? [])
        case .saslInit:
            let mechanism = try f.required(SaslInitField.mechanism.rawValue, "mechanism", \.text)
            var response: [UInt8]?
            if case .binary(let bytes) = f[SaslInitField.initialResponse.rawValue] { response = bytes }
            return .saslInit(
                SaslInit(
                    mechanism: mechanism, initialResponseLength: response?.count,
                    user: mechanism == "PLAIN" ? response.flatMap(plainUser) : nil,
                    initialResponse: showCredentials ? response : nil,
                    hostname: f[SaslInitField.hostname.rawValue]?.text))
        case .saslChallenge, .saslResponse:
            var length = 0
            if case .binary(let bytes) = f[0] { length = bytes.count }
            return descriptor == .saslChallenge ? .saslChallenge(length: length) : .saslResponse(length: length)
        case .saslOutcome:
            var length: Int?
            if case .binary(let bytes) = f[SaslOutcomeField.additionalData.rawValue] { length = bytes.count }
            return .saslOutcome(
                SaslOutcome(
                    code: UInt8(clamping: try f.uint(SaslOutcomeField.code.rawValue, "code") ?? 0),
                    additionalDataLength: length))
        default:
            throw AMQP10DecodeError(.unexpectedType, "\(descriptor.name) is not a performative")
        }
    }

    /// PLAIN's response is "authzid \0 authcid \0 passwd" (RFC 4616): the authentication identity.
    static func plainUser(_ response: [UInt8]) -> String? {
        let parts = response.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        return parts.count == 3 ? String(decoding: parts[1], as: UTF8.self) : nil
    }

    static func terminus(_ value: AMQP10Value?, address: Int, dynamic: Int) -> Terminus? {
        guard case .described(_, .list(let fields))? = value else { return nil }
        return Terminus(
            address: address < fields.count ? fields[address].text : nil,
            dynamic: dynamic < fields.count && fields[dynamic] == .bool(true))
    }

    static func error(_ value: AMQP10Value?) -> AMQP10Error? {
        guard case .described(_, .list(let fields))? = value, let condition = fields.first?.text else { return nil }
        return AMQP10Error(
            condition: condition,
            description: fields.count > ErrorField.description.rawValue
                ? fields[ErrorField.description.rawValue].text : nil,
            info: fields.count > ErrorField.info.rawValue ? fields[ErrorField.info.rawValue].entries : [])
    }

    /// A composite's fields, read whole, by position.
    struct Fields {
        let list: [AMQP10Value]
        let type: String

        subscript(_ i: Int) -> AMQP10Value? {
            i < list.count && list[i] != .null ? list[i] : nil
        }

        func uint(_ i: Int, _ name: String) throws(AMQP10DecodeError) -> UInt32? {
            guard let v = self[i] else { return nil }
            guard let n = v.unsigned, let narrow = UInt32(exactly: n) else {
                throw AMQP10DecodeError(.unexpectedType, "\(type)'s \(name) is not a uint")
            }
            return narrow
        }

        func required<T>(_ i: Int, _ name: String, _ get: (AMQP10Value) -> T?) throws(AMQP10DecodeError) -> T {
            guard let v = self[i] else { throw AMQP10DecodeError(.missingField, "\(type) has no \(name)") }
            guard let t = get(v) else {
                throw AMQP10DecodeError(.unexpectedType, "\(type)'s \(name) has the wrong type")
            }
            return t
        }
    }

    // MARK: In place

    /// Reads a delivery state (a described list) whole: they are rare on transfers, common on dispositions but small.
    static func deliveryState(_ reader: inout AMQP10Reader) throws(AMQP10DecodeError) -> DeliveryState? {
        if reader.index < reader.end && reader.bytes[reader.index] == 0x40 {
            reader.index += 1
            return nil
        }
        let code = try reader.descriptor()
        switch AMQP10Descriptor(rawValue: code) {
        case .accepted?, .released?:
            try reader.skip()
            return code == AMQP10Descriptor.accepted.rawValue ? .accepted : .released
        case .rejected?:
            let fields = try reader.value()
            return .rejected(error(fields.elements.first))
        case .modified?:
            let fields = try reader.value().elements
            return .modified(
                deliveryFailed: fields.count > 0 && fields[0] == .bool(true),
                undeliverableHere: fields.count > 1 && fields[1] == .bool(true))
        case .received?:
            let fields = try reader.value().elements
            return .received(
                sectionNumber: UInt32(clamping: fields.first?.unsigned ?? 0),
                sectionOffset: fields.count > 1 ? fields[1].unsigned ?? 0 : 0)
        default:
            try reader.skip()
            return .other(code)
        }
    }

    static func readTransfer(_ reader: inout AMQP10Reader) throws(AMQP10DecodeError) -> Transfer {
        let (count, saved) = try reader.enterList()
        var t = Transfer(
            handle: 0, deliveryID: nil, deliveryTagLength: nil, deliveryTagPrefix: 0, messageFormat: nil,
            settled: nil, more: false, state: nil, aborted: false, payloadLength: 0)
        var handle: UInt32?
        for i in 0..<count {
            switch TransferField(rawValue: i) {
            case .handle?: handle = try reader.uint("transfer's handle")
            case .deliveryID?: t.deliveryID = try reader.uint("transfer's delivery-id")
            case .deliveryTag?:
                if let tag = try reader.binary("transfer's delivery-tag") {
                    t.deliveryTagLength = tag.count
                    for j in 0..<min(8, tag.count) { t.deliveryTagPrefix |= UInt64(tag[j]) << (56 - 8 * j) }
                }
            case .messageFormat?: t.messageFormat = try reader.uint("transfer's message-format")
            case .settled?: t.settled = try reader.bool("transfer's settled")
            case .more?: t.more = try reader.bool("transfer's more") ?? false
            case .state?: t.state = try deliveryState(&reader)
            case .aborted?: t.aborted = try reader.bool("transfer's aborted") ?? false
            default: try reader.skip()
            }
        }
        reader.leave(savedEnd: saved)
        guard let handle else { throw AMQP10DecodeError(.missingField, "transfer has no handle") }
        t.handle = handle
        return t
    }

    static func readFlow(_ reader: inout AMQP10Reader) throws(AMQP10DecodeError) -> Flow {
        let (count, saved) = try reader.enterList()
        var f = Flow(
            nextIncomingID: nil, incomingWindow: 0, nextOutgoingID: 0, outgoingWindow: 0, handle: nil,
            deliveryCount: nil, linkCredit: nil, available: nil, drain: false, echo: false)
        for i in 0..<count {
            switch FlowField(rawValue: i) {
            case .nextIncomingID?: f.nextIncomingID = try reader.uint("flow's next-incoming-id")
            case .incomingWindow?: f.incomingWindow = try reader.uint("flow's incoming-window") ?? 0
            case .nextOutgoingID?: f.nextOutgoingID = try reader.uint("flow's next-outgoing-id") ?? 0
            case .outgoingWindow?: f.outgoingWindow = try reader.uint("flow's outgoing-window") ?? 0
            case .handle?: f.handle = try reader.uint("flow's handle")
            case .deliveryCount?: f.deliveryCount = try reader.uint("flow's delivery-count")
            case .linkCredit?: f.linkCredit = try reader.uint("flow's link-credit")
            case .available?: f.available = try reader.uint("flow's available")
            case .drain?: f.drain = try reader.bool("flow's drain") ?? false
            case .echo?: f.echo = try reader.bool("flow's echo") ?? false
            default: try reader.skip()
            }
        }
        reader.leave(savedEnd: saved)
        return f
    }

    static func readDisposition(_ reader: inout AMQP10Reader) throws(AMQP10DecodeError) -> Disposition {
        let (count, saved) = try reader.enterList()
        var d = Disposition(role: .sender, first: 0, last: nil, settled: false, state: nil)
        var first: UInt32?
        for i in 0..<count {
            switch DispositionField(rawValue: i) {
            case .role?: d.role = LinkRole(try reader.bool("disposition's role") ?? false)
            case .first?: first = try reader.uint("disposition's first")
            case .last?: d.last = try reader.uint("disposition's last")
            case .settled?: d.settled = try reader.bool("disposition's settled") ?? false
            case .state?: d.state = try deliveryState(&reader)
            default: try reader.skip()
            }
        }
        reader.leave(savedEnd: saved)
        guard let first else { throw AMQP10DecodeError(.missingField, "disposition has no first") }
        d.first = first
        return d
    }
}
