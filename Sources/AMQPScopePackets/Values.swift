// Plain values shared by every layer: time, directions, link types, packet headers, addresses.

/// A point in capture time: nanoseconds since the Unix epoch, taken from packet timestamps only.
public struct Timestamp: Hashable, Comparable, Sendable {
    /// Nanoseconds since the Unix epoch.
    public var nanoseconds: Int64

    /// A time from nanoseconds since the epoch.
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    /// A time from seconds and nanoseconds since the epoch.
    public init(seconds: Int64, nanoseconds: Int64) { self.nanoseconds = seconds &* 1_000_000_000 &+ nanoseconds }

    /// Orders by value.
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds < b.nanoseconds }

    /// Seconds since the epoch.
    public var seconds: Double { Double(nanoseconds) / 1e9 }

    /// The span from `earlier` to `self`, in nanoseconds.
    public func since(_ earlier: Timestamp) -> Int64 { nanoseconds &- earlier.nanoseconds }

    /// This time plus a span.
    public func adding(nanoseconds delta: Int64) -> Timestamp { Timestamp(nanoseconds: nanoseconds &+ delta) }
}

extension Timestamp {
    /// "2026-11-25 09:18:00.123456" with `separator` between date and time, and a "Z" with `zulu` (UTC).
    /// Formatted into a fixed buffer: reports format every event, so no intermediate strings are made.
    public func utc(separator: UInt8 = UInt8(ascii: " "), zulu: Bool = false) -> String {
        String(unsafeUninitializedCapacity: 27) { format(into: $0, separator: separator, zulu: zulu) }
    }

    /// Days since the epoch, the second of that day and the microsecond of that second.
    /// Floor divisions by remainders, so that no step overflows, even at the ends of Int64.
    private var parts: (days: Int64, secondOfDay: Int64, micros: Int64) {
        var (seconds, nanos) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        if nanos < 0 {
            seconds -= 1
            nanos += 1_000_000_000
        }
        var (days, secondOfDay) = seconds.quotientAndRemainder(dividingBy: 86_400)
        if secondOfDay < 0 {
            days -= 1
            secondOfDay += 86_400
        }
        return (days, secondOfDay, nanos / 1000)
    }

    /// `utc`'s bytes, written into `buffer` (27 bytes at least): how many. For writers that want the bytes without a
    /// string. Int64 nanoseconds since 1970 reach from 1677 to 2262, so the year always has four digits.
    package func format(into buffer: UnsafeMutableBufferPointer<UInt8>, separator: UInt8, zulu: Bool) -> Int {
        precondition(buffer.count >= 27, "a timestamp takes 27 bytes")
        let (days, secondOfDay, micros) = parts
        let (y, m, d) = Self.civil(fromDays: days)
        var i = 0
        func put(_ value: Int64, _ width: Int) {
            var v = value
            for k in stride(from: width - 1, through: 0, by: -1) {
                buffer[i + k] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            }
            i += width
        }
        func put(_ byte: UInt8) {
            buffer[i] = byte
            i += 1
        }
        put(y, 4)
        put(UInt8(ascii: "-"))
        put(m, 2)
        put(UInt8(ascii: "-"))
        put(d, 2)
        put(separator)
        put(secondOfDay / 3600, 2)
        put(UInt8(ascii: ":"))
        put(secondOfDay / 60 % 60, 2)
        put(UInt8(ascii: ":"))
        put(secondOfDay % 60, 2)
        put(UInt8(ascii: "."))
        put(micros, 6)
        if zulu { put(UInt8(ascii: "Z")) }
        return i
    }

    /// "09:18:00.123456": the time of day (UTC), for sentences.
    public var clock: String { String(utc().suffix(15)) }

    /// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 to (year, month, day).
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}

/// Which way bytes travel on a connection.
public enum Direction: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case clientToServer
    case serverToClient

    /// The other direction.
    @inlinable public var reversed: Direction { self == .clientToServer ? .serverToClient : .clientToServer }
    /// The side that sends in this direction.
    @inlinable public var sender: Side { self == .clientToServer ? .client : .server }
    /// The side that receives in this direction.
    @inlinable public var receiver: Side { sender.peer }
    /// "client->server" or "server->client".
    public var description: String { self == .clientToServer ? "client->server" : "server->client" }
}

/// One end of a connection: the client opened it (or is taken to have), the server accepted it.
public enum Side: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case client, server
    /// The other end.
    @inlinable public var peer: Side { self == .client ? .server : .client }
    /// The direction in which this side sends.
    @inlinable public var sending: Direction { self == .client ? .clientToServer : .serverToClient }
    /// "client" or "server".
    public var description: String { rawValue }
}

/// One value per direction of a connection, named as gopacket names reassembly's halves, and subscripted by
/// `Direction` (or by the `Side` that sends): per-direction state without two-element arrays.
public struct PerDirection<Value> {
    /// What belongs to the bytes the client sends.
    public var clientToServer: Value
    /// What belongs to the bytes the server sends.
    public var serverToClient: Value

    /// Both directions' values.
    @inlinable
    public init(clientToServer: Value, serverToClient: Value) {
        self.clientToServer = clientToServer
        self.serverToClient = serverToClient
    }

    /// The same value for both directions.
    @inlinable
    public init(repeating value: Value) {
        clientToServer = value
        serverToClient = value
    }

    /// The value of one direction (changed in place).
    ///
    /// Changed through an addressor, a plain function that is always inlined, rather than a `_modify` coroutine: the
    /// optimizer left most of those as calls (148 call sites in a release build, 12 million calls over 400,000
    /// packets, which cost the timeline stage 8 % of its instructions). The pointer is to the stored half of `self`,
    /// which the caller holds in place (inout) for as long as it uses the pointer; the standard library's fixed-size
    /// arrays address their elements the same way.
    @inlinable
    public subscript(direction: Direction) -> Value {
        @inline(__always) get { direction == .clientToServer ? clientToServer : serverToClient }
        @inline(__always) unsafeMutableAddress { address(of: direction) }
    }

    /// Where one direction's value is stored, for the addressors.
    @inlinable @inline(__always)
    mutating func address(of direction: Direction) -> UnsafeMutablePointer<Value> {
        direction == .clientToServer
            ? withUnsafeMutablePointer(to: &clientToServer) { $0 }
            : withUnsafeMutablePointer(to: &serverToClient) { $0 }
    }

    /// The value of the direction in which `side` sends.
    @inlinable
    public subscript(sentBy side: Side) -> Value {
        @inline(__always) get { self[side.sending] }
        @inline(__always) unsafeMutableAddress { address(of: side.sending) }
    }

    /// Each direction's value transformed.
    @inlinable
    public func map<T>(_ transform: (Value) throws -> T) rethrows -> PerDirection<T> {
        PerDirection<T>(clientToServer: try transform(clientToServer), serverToClient: try transform(serverToClient))
    }
}

extension PerDirection: Equatable where Value: Equatable {}
extension PerDirection: Hashable where Value: Hashable {}
extension PerDirection: Sendable where Value: Sendable {}

/// A link-layer header type, as libpcap reports it (DLT_ values, which equal LINKTYPE_ values for the types below
/// except raw IP, whose DLT value differs between systems).
public struct LinkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The underlying value.
    public var rawValue: Int32
    /// A value from its raw value.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// BSD loopback, family in host byte order.
    public static let null = LinkType(rawValue: 0)
    /// Ethernet.
    public static let ethernet = LinkType(rawValue: 1)
    /// DLT_RAW on most systems.
    public static let rawDLT12 = LinkType(rawValue: 12)
    /// DLT_RAW on OpenBSD.
    public static let rawDLT14 = LinkType(rawValue: 14)
    /// LINKTYPE_RAW.
    public static let raw = LinkType(rawValue: 101)
    /// OpenBSD loopback, family in network byte order.
    public static let loop = LinkType(rawValue: 108)
    /// Linux cooked capture v1.
    public static let linuxSLL = LinkType(rawValue: 113)
    /// Raw IPv4.
    public static let ipv4 = LinkType(rawValue: 228)
    /// Raw IPv6.
    public static let ipv6 = LinkType(rawValue: 229)
    /// Linux cooked capture v2.
    public static let linuxSLL2 = LinkType(rawValue: 276)

    /// Its name as libpcap and tcpdump print it.
    public var name: String {
        switch self {
        case .null: return "NULL (BSD loopback)"
        case .ethernet: return "EN10MB (Ethernet)"
        case .rawDLT12, .rawDLT14, .raw: return "RAW (raw IP)"
        case .loop: return "LOOP (OpenBSD loopback)"
        case .linuxSLL: return "LINUX_SLL (Linux cooked v1)"
        case .linuxSLL2: return "LINUX_SLL2 (Linux cooked v2)"
        case .ipv4: return "IPV4 (raw IPv4)"
        case .ipv6: return "IPV6 (raw IPv6)"
        default: return "DLT \(rawValue) (unsupported)"
        }
    }

    /// amqpscope decodes this link type.
    public var isSupported: Bool {
        switch self {
        case .null, .ethernet, .rawDLT12, .rawDLT14, .raw, .loop, .linuxSLL, .linuxSLL2, .ipv4, .ipv6: return true
        default: return false
        }
    }

    /// As reports print it.
    public var description: String { name }
}

/// What the capture says about one packet, besides its bytes.
public struct PacketHeader: Hashable, Sendable {
    /// 1-based position in its file (or live capture), as Wireshark numbers frames.
    public var number: Int
    /// When it was captured.
    public var timestamp: Timestamp
    /// Bytes present in the capture (`caplen`).
    public var capturedLength: Int
    /// Bytes the packet had on the wire (`len`).
    public var originalLength: Int

    /// A packet header.
    public init(number: Int, timestamp: Timestamp, capturedLength: Int, originalLength: Int) {
        self.number = number
        self.timestamp = timestamp
        self.capturedLength = capturedLength
        self.originalLength = originalLength
    }

    /// True when the capture kept fewer bytes than the packet had (snap length).
    public var isTruncated: Bool { capturedLength < originalLength }
}

/// An IPv4 or IPv6 address as a value: IPv4 lives in the low 32 bits of `low`.
public struct IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// IPv6: the high 64 bits; IPv4: 0.
    public var high: UInt64
    /// IPv6: the low 64 bits; IPv4: the address in the low 32 bits.
    public var low: UInt64
    /// It is an IPv6 address.
    public var isIPv6: Bool

    /// An address from its text: dotted IPv4 ("10.0.0.1"), or IPv6 ("::1", "fe80::1", "::ffff:10.0.0.1"); nil
    /// for anything else.
    package init?<S: StringProtocol>(parsing text: S) {
        if !text.contains(":") {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var value: UInt32 = 0
            for part in parts {
                guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let octet = UInt8(part) else {
                    return nil
                }
                value = value << 8 | UInt32(octet)
            }
            self.init(ipv4: value)
            return
        }
        // IPv6: groups of up to four hex digits, one "::" at most, an IPv4 tail allowed.
        var text = Substring(text)
        var tail: [UInt16] = []
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = IPAddress(parsing: text[text.index(after: lastColon)...]) else { return nil }
            tail = [UInt16(v4.low >> 16), UInt16(v4.low & 0xffff)]
            text = text[...lastColon]
            if !text.hasSuffix("::") { text = text.dropLast() }  // the colon before the IPv4 part
        }
        func groups(_ s: Substring) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for g in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(g.count), let v = UInt16(g, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        var all: [UInt16]
        var halves: [Substring] = [text]
        var i = text.startIndex
        while i < text.endIndex, text.index(after: i) < text.endIndex {
            if text[i] == ":" && text[text.index(after: i)] == ":" {
                halves = [text[..<i], text[text.index(i, offsetBy: 2)...]]
                guard !Self.hasDoubleColon(halves[1]) else { return nil }
                break
            }
            i = text.index(after: i)
        }
        if halves.count == 2 {
            guard let head = groups(halves[0]), let rest = groups(halves[1]) else { return nil }
            let missing = 8 - head.count - rest.count - tail.count
            guard missing >= 1 else { return nil }
            all = head + Array(repeating: 0, count: missing) + rest + tail
        } else if halves.count == 1 {
            guard let g = groups(text) else { return nil }
            all = g + tail
        } else {
            return nil
        }
        guard all.count == 8 else { return nil }
        let high = all[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = all[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        self.init(ipv6High: high, low: low)
    }

    static func hasDoubleColon(_ s: Substring) -> Bool {
        zip(s, s.dropFirst()).contains { $0 == ":" && $1 == ":" }
    }

    /// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it maps; any other address as it is.
    package var unmapped: IPAddress {
        isIPv6 && high == 0 && low >> 32 == 0xffff ? IPAddress(ipv4: UInt32(truncatingIfNeeded: low)) : self
    }

    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool { isIPv6 ? high == 0 && low == 1 : low >> 24 == 127 }

    /// An IPv4 address.
    public init(ipv4: UInt32) {
        high = 0
        low = UInt64(ipv4)
        isIPv6 = false
    }
    /// An IPv6 address from its two halves.
    public init(ipv6High: UInt64, low: UInt64) {
        high = ipv6High
        self.low = low
        isIPv6 = true
    }

    /// Orders by value.
    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.isIPv6 != b.isIPv6 { return !a.isIPv6 }
        return (a.high, a.low) < (b.high, b.low)
    }

    /// As reports print it.
    public var description: String {
        if !isIPv6 {
            let v = UInt32(truncatingIfNeeded: low)
            return "\(v >> 24).\((v >> 16) & 0xff).\((v >> 8) & 0xff).\(v & 0xff)"
        }
        // RFC 5952: lower-case hex, the longest run (>= 2) of zero groups shortened to "::".
        var groups = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 {
            groups[i] = UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64(i)))
            groups[i + 4] = UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64(i)))
        }
        var bestStart = -1
        var bestLength = 0
        var runStart = -1
        for i in 0...8 {
            if i < 8 && groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength {
                    bestStart = runStart
                    bestLength = i - runStart
                }
                runStart = -1
            }
        }
        if bestLength < 2 { bestStart = -1 }
        var out = ""
        var i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLength
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(groups[i], radix: 16)
            i += 1
        }
        return out
    }
}

/// An address and a TCP port.
public struct Endpoint: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The IP address.
    public var address: IPAddress
    /// The TCP port.
    public var port: UInt16

    /// An address and port.
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Orders by value.
    public static func < (a: Endpoint, b: Endpoint) -> Bool { (a.address, a.port) < (b.address, b.port) }

    /// "address:port", with IPv6 addresses in brackets.
    public var description: String { address.isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}
