// Pure packet layers: link -> IP -> TCP, parsed from a borrowed view of one packet's captured bytes.
// Each layer checks its length before it reads; short or inconsistent input gives a `Malformed` marker.

/// Which layer a marker or a skip belongs to.
package enum Layer: String, Hashable, Sendable {
    case link, vlan, ipv4, ipv6, tcp
}

/// Why a packet could not be read at some layer. `reason` is fixed text (no allocation).
package struct Malformed: Hashable, Sendable, CustomStringConvertible {
    package var layer: Layer
    package var reason: String
    package init(_ layer: Layer, _ reason: String) {
        self.layer = layer
        self.reason = reason
    }
    package var description: String { "\(layer.rawValue): \(reason)" }
}

/// The TCP header's flags.
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The underlying value.
    public var rawValue: UInt16
    /// A value from its raw value.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    // The flags are inlinable constants, not stored statics: another module reached a stored one through an accessor
    // call, several times a packet.
    /// FIN: no more data from the sender.
    @inlinable public static var fin: TCPFlags { TCPFlags(rawValue: 0x001) }
    /// SYN: synchronise sequence numbers.
    @inlinable public static var syn: TCPFlags { TCPFlags(rawValue: 0x002) }
    /// RST: reset the connection.
    @inlinable public static var rst: TCPFlags { TCPFlags(rawValue: 0x004) }
    /// PSH: push.
    @inlinable public static var psh: TCPFlags { TCPFlags(rawValue: 0x008) }
    /// ACK: the acknowledgment field counts.
    @inlinable public static var ack: TCPFlags { TCPFlags(rawValue: 0x010) }
    /// URG: urgent.
    @inlinable public static var urg: TCPFlags { TCPFlags(rawValue: 0x020) }
    /// ECE: ECN echo.
    @inlinable public static var ece: TCPFlags { TCPFlags(rawValue: 0x040) }
    /// CWR: congestion window reduced.
    @inlinable public static var cwr: TCPFlags { TCPFlags(rawValue: 0x080) }
    /// NS: ECN nonce.
    @inlinable public static var ns: TCPFlags { TCPFlags(rawValue: 0x100) }

    /// As reports print it.
    public var description: String {
        var parts: [String] = []
        if contains(.syn) { parts.append("SYN") }
        if contains(.fin) { parts.append("FIN") }
        if contains(.rst) { parts.append("RST") }
        if contains(.psh) { parts.append("PSH") }
        if contains(.ack) { parts.append("ACK") }
        if contains(.urg) { parts.append("URG") }
        if contains(.ece) { parts.append("ECE") }
        if contains(.cwr) { parts.append("CWR") }
        if contains(.ns) { parts.append("NS") }
        return parts.joined(separator: ",")
    }
}

/// The TCP options amqpscope reads (RFC 9293 MSS, RFC 7323 window scale and timestamps, RFC 2018 SACK).
package struct TCPOptions: Hashable, Sendable {
    package var maximumSegmentSize: UInt16?
    package var windowScale: UInt8?
    package var sackPermitted = false
    package var sackBlockCount = 0
    package var timestampValue: UInt32?
    package var timestampEcho: UInt32?
    /// An option whose length ran past the header or was too short for its kind.
    package var malformed = false
    package init() {}
}

/// One TCP segment as read from one packet.
package struct TCPSegment: Hashable, Sendable {
    package var source: Endpoint
    package var destination: Endpoint
    package var sequence: UInt32
    package var acknowledgment: UInt32
    package var flags: TCPFlags
    package var window: UInt16
    package var options: TCPOptions
    /// Where the captured payload starts in the packet's bytes, and how many payload bytes were captured.
    package var payloadOffset: Int
    package var capturedPayloadLength: Int
    /// How many payload bytes the segment carried on the wire (from the IP length); may exceed the captured ones.
    package var payloadLength: Int

    package var payloadRange: Range<Int> { payloadOffset..<(payloadOffset + capturedPayloadLength) }

    package init(
        source: Endpoint, destination: Endpoint, sequence: UInt32, acknowledgment: UInt32, flags: TCPFlags,
        window: UInt16,
        options: TCPOptions = TCPOptions(), payloadOffset: Int, capturedPayloadLength: Int, payloadLength: Int
    ) {
        self.source = source
        self.destination = destination
        self.sequence = sequence
        self.acknowledgment = acknowledgment
        self.flags = flags
        self.window = window
        self.options = options
        self.payloadOffset = payloadOffset
        self.capturedPayloadLength = capturedPayloadLength
        self.payloadLength = payloadLength
    }
}

/// What one packet turned out to be.
package enum DecodedPacket: Hashable, Sendable {
    case tcp(TCPSegment)
    /// An IP packet of another protocol (UDP, ICMP, ...), or a link frame that is not IP (ARP, ...).
    case other
    /// An IP fragment: recorded and skipped (amqpscope does not reassemble IP fragments).
    case fragment(Layer)
    case malformed(Malformed)
    case unsupportedLinkType
}

package enum PacketDecoder {
    static let etherTypeIPv4: UInt16 = 0x0800
    static let etherTypeIPv6: UInt16 = 0x86DD
    static let etherTypeVLAN: UInt16 = 0x8100  // IEEE 802.1Q
    static let etherTypeQinQ: UInt16 = 0x88A8  // IEEE 802.1ad
    static let etherTypeQinQOld: UInt16 = 0x9100  // pre-standard stacked tag
    /// Stacked VLAN tags read before giving up (802.1ad uses two; more is hostile or broken).
    static let maximumVLANTags = 8
    /// IPv6 extension headers followed before giving up.
    static let maximumIPv6ExtensionHeaders = 16

    /// Decodes one packet's captured bytes for the given link type.
    package static func decode(_ bytes: UnsafeRawBufferPointer, linkType: LinkType) -> DecodedPacket {
        let b = bytes
        switch linkType {
        case .ethernet: return ethernet(b)
        case .linuxSLL:
            // 16-byte header; the protocol (an EtherType) is the last field.
            guard b.count >= 16 else {
                return .malformed(Malformed(.link, "Linux cooked header shorter than 16 bytes"))
            }
            return network(b, etherType: b.integer(at: 14, as: UInt16.self), at: 16)
        case .linuxSLL2:
            // 20-byte header; the protocol (an EtherType) is the first field.
            guard b.count >= 20 else {
                return .malformed(Malformed(.link, "Linux cooked v2 header shorter than 20 bytes"))
            }
            return network(b, etherType: b.integer(at: 0, as: UInt16.self), at: 20)
        case .null, .loop:
            guard b.count >= 4 else { return .malformed(Malformed(.link, "loopback header shorter than 4 bytes")) }
            // The address family is a 32-bit value in the capturing host's byte order (NULL) or in network byte
            // order (LOOP); files exist with either, so accept both orders.
            let family =
                loopbackFamily(b.integer(at: 0, as: UInt32.self))
                ?? loopbackFamily(b.littleEndianInteger(at: 0, as: UInt32.self))
            switch family {
            case 4?: return ipv4(b, at: 4)
            case 6?: return ipv6(b, at: 4)
            default: return .other
            }
        case .raw, .rawDLT12, .rawDLT14:
            guard b.count >= 1 else { return .malformed(Malformed(.link, "empty raw IP packet")) }
            switch b[0] >> 4 {
            case 4: return ipv4(b, at: 0)
            case 6: return ipv6(b, at: 0)
            default: return .malformed(Malformed(.link, "raw IP packet with IP version neither 4 nor 6"))
            }
        case .ipv4: return ipv4(b, at: 0)
        case .ipv6: return ipv6(b, at: 0)
        default: return .unsupportedLinkType
        }
    }

    /// AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (Darwin).
    static func loopbackFamily(_ value: UInt32) -> Int? {
        switch value {
        case 2: return 4
        case 10, 24, 28, 30: return 6
        default: return nil
        }
    }

    // The layers of the common path are inlined into `decode`: called, each handed the decoded packet (a large enum)
    // back through the one before, at 135 instructions a packet over the four of them.
    @inline(__always)
    static func ethernet(_ b: UnsafeRawBufferPointer) -> DecodedPacket {
        guard b.count >= 14 else { return .malformed(Malformed(.link, "Ethernet header shorter than 14 bytes")) }
        var offset = 12
        var etherType = b.integer(at: offset, as: UInt16.self)
        var tags = 0
        while etherType == etherTypeVLAN || etherType == etherTypeQinQ || etherType == etherTypeQinQOld {
            tags += 1
            guard tags <= maximumVLANTags else { return .malformed(Malformed(.vlan, "more than 8 stacked VLAN tags")) }
            guard b.count >= offset + 6 else { return .malformed(Malformed(.vlan, "VLAN tag cut short")) }
            offset += 4
            etherType = b.integer(at: offset, as: UInt16.self)
        }
        return network(b, etherType: etherType, at: offset + 2)
    }

    @inline(__always)
    static func network(_ b: UnsafeRawBufferPointer, etherType: UInt16, at offset: Int) -> DecodedPacket {
        switch etherType {
        case etherTypeIPv4: return ipv4(b, at: offset)
        case etherTypeIPv6: return ipv6(b, at: offset)
        default: return .other
        }
    }

    @inline(__always)
    static func ipv4(_ b: UnsafeRawBufferPointer, at start: Int) -> DecodedPacket {
        guard b.count >= start + 20 else { return .malformed(Malformed(.ipv4, "IPv4 header shorter than 20 bytes")) }
        let versionIHL = b[start]
        guard versionIHL >> 4 == 4 else { return .malformed(Malformed(.ipv4, "IP version is not 4")) }
        let headerLength = Int(versionIHL & 0x0f) * 4
        guard headerLength >= 20 else { return .malformed(Malformed(.ipv4, "IPv4 header length below 20 bytes")) }
        guard b.count >= start + headerLength else { return .malformed(Malformed(.ipv4, "IPv4 options cut short")) }
        let totalLength = Int(b.integer(at: start + 2, as: UInt16.self))
        guard totalLength >= headerLength else {
            return .malformed(Malformed(.ipv4, "IPv4 total length smaller than its header"))
        }
        let fragment = b.integer(at: start + 6, as: UInt16.self)
        if fragment & 0x2000 != 0 || fragment & 0x1fff != 0 { return .fragment(.ipv4) }
        guard b[start + 9] == 6 else { return .other }
        let source = IPAddress(ipv4: b.integer(at: start + 12, as: UInt32.self))
        let destination = IPAddress(ipv4: b.integer(at: start + 16, as: UInt32.self))
        // The IP length bounds the payload: anything after it is link padding (short Ethernet frames).
        let end = start + totalLength
        return tcp(b, at: start + headerLength, wireEnd: end, source: source, destination: destination)
    }

    static func ipv6(_ b: UnsafeRawBufferPointer, at start: Int) -> DecodedPacket {
        guard b.count >= start + 40 else { return .malformed(Malformed(.ipv6, "IPv6 header shorter than 40 bytes")) }
        guard b[start] >> 4 == 6 else { return .malformed(Malformed(.ipv6, "IP version is not 6")) }
        let payloadLength = Int(b.integer(at: start + 4, as: UInt16.self))
        var next = b[start + 6]
        let source = IPAddress(
            ipv6High: b.integer(at: start + 8, as: UInt64.self), low: b.integer(at: start + 16, as: UInt64.self))
        let destination = IPAddress(
            ipv6High: b.integer(at: start + 24, as: UInt64.self), low: b.integer(at: start + 32, as: UInt64.self))
        // A zero payload length means a jumbogram (RFC 2675): trust the captured length then.
        let wireEnd = payloadLength == 0 ? Int.max : start + 40 + payloadLength
        var offset = start + 40
        var headers = 0
        while true {
            switch next {
            case 6:
                return tcp(b, at: offset, wireEnd: wireEnd, source: source, destination: destination)
            case 0, 43, 60, 135, 139, 140:  // hop-by-hop, routing, destination options, mobility, HIP, shim6
                guard b.count >= offset + 2 else { return .malformed(Malformed(.ipv6, "extension header cut short")) }
                next = b[offset]
                offset += (Int(b[offset + 1]) + 1) * 8
            case 44:  // fragment
                guard b.count >= offset + 8 else { return .malformed(Malformed(.ipv6, "fragment header cut short")) }
                let fragment = b.integer(at: offset + 2, as: UInt16.self)
                if fragment & 0xfff9 != 0 { return .fragment(.ipv6) }  // offset or more-fragments set
                next = b[offset]
                offset += 8
            case 51:  // authentication header: length in 4-octet units, minus 2
                guard b.count >= offset + 2 else {
                    return .malformed(Malformed(.ipv6, "authentication header cut short"))
                }
                next = b[offset]
                offset += (Int(b[offset + 1]) + 2) * 4
            default:
                return .other  // ESP (its payload is encrypted), no-next-header, UDP, ICMPv6, ...
            }
            headers += 1
            guard headers <= maximumIPv6ExtensionHeaders else {
                return .malformed(Malformed(.ipv6, "more than 16 extension headers"))
            }
            guard offset <= wireEnd else {
                return .malformed(Malformed(.ipv6, "extension headers run past the payload length"))
            }
        }
    }

    @inline(__always)
    static func tcp(_ b: UnsafeRawBufferPointer, at start: Int, wireEnd: Int, source: IPAddress, destination: IPAddress)
        -> DecodedPacket
    {
        guard b.count >= start + 20 else { return .malformed(Malformed(.tcp, "TCP header shorter than 20 bytes")) }
        guard wireEnd == Int.max || wireEnd >= start + 20 else {
            return .malformed(Malformed(.tcp, "IP length leaves no room for the TCP header"))
        }
        let dataOffset = Int(b[start + 12] >> 4) * 4
        guard dataOffset >= 20 else { return .malformed(Malformed(.tcp, "TCP data offset below 20 bytes")) }
        guard b.count >= start + dataOffset else { return .malformed(Malformed(.tcp, "TCP options cut short")) }
        guard wireEnd == Int.max || wireEnd >= start + dataOffset else {
            return .malformed(Malformed(.tcp, "TCP data offset runs past the IP length"))
        }
        let payloadStart = start + dataOffset
        let wirePayload = wireEnd == Int.max ? b.count - payloadStart : wireEnd - payloadStart
        let captured = min(wirePayload, b.count - payloadStart)
        let segment = TCPSegment(
            source: Endpoint(address: source, port: b.integer(at: start, as: UInt16.self)),
            destination: Endpoint(address: destination, port: b.integer(at: start + 2, as: UInt16.self)),
            sequence: b.integer(at: start + 4, as: UInt32.self),
            acknowledgment: b.integer(at: start + 8, as: UInt32.self),
            flags: TCPFlags(rawValue: b.integer(at: start + 12, as: UInt16.self) & 0x01ff),
            window: b.integer(at: start + 14, as: UInt16.self),
            options: tcpOptions(b, from: start + 20, to: payloadStart),
            payloadOffset: payloadStart,
            capturedPayloadLength: captured,
            payloadLength: wirePayload
        )
        return .tcp(segment)
    }

    static func tcpOptions(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) -> TCPOptions {
        var options = TCPOptions()
        var i = start
        while i < end {
            let kind = b[i]
            if kind == 0 { break }  // end of option list
            if kind == 1 {
                i += 1
                continue
            }  // no-operation
            guard i + 1 < end else {
                options.malformed = true
                break
            }
            let length = Int(b[i + 1])
            guard length >= 2, i + length <= end else {
                options.malformed = true
                break
            }
            switch (kind, length) {
            case (2, 4): options.maximumSegmentSize = b.integer(at: i + 2, as: UInt16.self)
            case (3, 3): options.windowScale = b[i + 2]
            case (4, 2): options.sackPermitted = true
            case (5, _) where (length - 2) % 8 == 0: options.sackBlockCount = (length - 2) / 8
            case (8, 10):
                options.timestampValue = b.integer(at: i + 2, as: UInt32.self)
                options.timestampEcho = b.integer(at: i + 6, as: UInt32.self)
            case (2, _), (3, _), (4, _), (5, _), (8, _): options.malformed = true
            default: break
            }
            i += length
        }
        return options
    }
}
