// RabbitMQ's log, read for the lines about client connections, so that a capture's stories can show what the broker
// said about each one. Pure: the text comes in, lines with their times and the connection they name come out.
//
// Formats read:
// - 3.9 and later, and 4.x, text: `2026-12-01 14:40:16.141362+00:00 [error] <0.530.0> message`. A message of
//   several lines is written as several lines with the same time, level and process, joined here into one.
// - 3.7 and 3.8 text: `2017-09-26 08:04:53.596 [warning] <0.2375.628> message`, local time with no offset (taken
//   as UTC; the clock offset estimated against the capture absorbs the time zone), continuation lines unprefixed.
// - The JSON formatter (`log.file.formatter = json`): one object per line with `time`, `level`, `msg`, `pid`, and
//   in 4.x `connection`.
// A connection is named as `CLIENT -> SERVER` (3.x: `(127.0.0.1:54720 -> 127.0.0.1:5672)`, IPv6 without
// brackets; 4.x: `127.0.0.1:54720 -> 127.0.0.1:5672`, IPv6 in brackets). Lines without it inherit it from the
// Erlang process that named it before (3.x writes "missed heartbeats from client" on a line of its own).
import AMQPScopePackets

/// One message of the broker's log about a client connection.
public struct BrokerLogLine: Hashable, Sendable {
    /// The line number (1-based) where the message starts.
    public var number: Int
    /// When the broker logged it, by the broker's clock (UTC when the line gives its offset).
    public var time: Timestamp
    /// Its level: debug, info, notice, warning, error, critical...
    public var level: String
    /// The message, its lines joined with " ".
    public var text: String
    /// The connection's client endpoint.
    public var client: Endpoint
    /// The connection's server endpoint.
    public var server: Endpoint
    /// What it says, when amqpscope knows the message.
    public var kind: Kind

    /// The messages amqpscope recognises.
    public enum Kind: String, Hashable, Sendable {
        /// "accepting AMQP connection": the broker accepted the TCP connection.
        case accepting
        /// "user ... authenticated and granted access to vhost ...".
        case authenticated
        /// "closing AMQP connection": with the reason on the same message when there is one.
        case closing
        /// "missed heartbeats from client".
        case missedHeartbeats
        /// "client unexpectedly closed TCP connection".
        case unexpectedClose
        /// "Channel error on connection ...".
        case channelError
        /// Another message that names a connection.
        case other
    }
}

/// A broker log, read.
public struct BrokerLog: Sendable {
    /// The messages that name a client connection, in the order logged.
    public var lines: [BrokerLogLine] = []
    /// Lines read in all.
    public var lineCount = 0
    /// Messages that name no connection (boot, alarms, queues), skipped.
    public var skipped = 0
    /// Lines that are neither a message nor a continuation of one.
    public var unreadable = 0

    /// At most this many messages are kept (a day of a busy broker's connection churn).
    public static let maximumLines = 2_000_000

    /// Reads a log's text.
    public static func parse(_ text: String) -> BrokerLog {
        var log = BrokerLog()
        var pending: Pending?
        var processes: [String: (Endpoint, Endpoint)] = [:]
        func flush() {
            guard let p = pending else { return }
            pending = nil
            var named = p.connection ?? Self.connection(in: p.text)
            if named == nil, let pid = p.pid { named = processes[pid] }
            guard let (client, server) = named else {
                log.skipped += 1
                return
            }
            if let pid = p.pid, processes.count < 1_000_000 { processes[pid] = (client, server) }
            guard log.lines.count < maximumLines else { return }
            log.lines.append(
                BrokerLogLine(
                    number: p.number, time: p.time, level: p.level, text: p.text, client: client, server: server,
                    kind: Self.kind(p.text)))
        }
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            log.lineCount += 1
            if let message = Self.message(line, number: number) {
                // 3.9+ splits a message of several lines into lines with the same time, level and process.
                if var p = pending, p.time == message.time, p.level == message.level, p.pid == message.pid,
                    message.connection == nil || message.connection! == p.connection ?? message.connection!,
                    !message.isJSON
                {
                    p.text += " " + message.text
                    pending = p
                    continue
                }
                flush()
                pending = message
            } else if pending != nil, !pending!.isJSON {
                pending!.text += " " + line.trimmingSpaces()  // 3.8: a continuation line
            } else {
                log.unreadable += 1
            }
        }
        flush()
        return log
    }

    struct Pending {
        var number: Int
        var time: Timestamp
        var level: String
        var pid: String?
        var text: String
        var connection: (Endpoint, Endpoint)?
        var isJSON = false
    }

    /// One line as the start of a message, or nil when it is not one.
    static func message(_ line: Substring, number: Int) -> Pending? {
        if line.first == "{" {
            let fields = JSONFields.strings(line)
            guard let timeText = fields["time"], let time = timestamp(timeText[...]), let msg = fields["msg"] else {
                return nil
            }
            return Pending(
                number: number, time: time, level: fields["level"] ?? "", pid: fields["pid"],
                text: msg.split(whereSeparator: \.isNewline).map { $0.trimmingSpaces() }.joined(separator: " "),
                connection: fields["connection"].flatMap { connection(in: $0) }, isJSON: true)
        }
        // "2026-12-01 14:40:16.141362+00:00 [error] <0.530.0> text"
        guard let open = line.firstIndex(of: "["), let close = line[open...].firstIndex(of: "]"),
            let time = timestamp(line[..<open].trimmingSpaces()[...])
        else { return nil }
        let level = String(line[line.index(after: open)..<close])
        var rest = line[line.index(after: close)...].drop { $0 == " " }
        var pid: String?
        if rest.first == "<", let end = rest.firstIndex(of: ">") {
            pid = String(rest[...end])
            rest = rest[rest.index(after: end)...].drop { $0 == " " }
        }
        return Pending(number: number, time: time, level: level, pid: pid, text: String(rest), connection: nil)
    }

    static func kind(_ text: String) -> BrokerLogLine.Kind {
        if text.contains("missed heartbeats from client") { return .missedHeartbeats }
        if text.contains("client unexpectedly closed TCP connection") { return .unexpectedClose }
        if text.hasPrefix("Channel error on connection") { return .channelError }
        if text.hasPrefix("accepting AMQP connection") { return .accepting }
        if text.hasPrefix("closing AMQP connection") { return .closing }
        if text.contains("authenticated and granted access") { return .authenticated }
        return .other
    }

    /// "YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM|-HH:MM|Z]" (a "T" may separate date and time).
    package static func timestamp(_ s: Substring) -> Timestamp? {
        let b = Array(s.utf8)
        guard b.count >= 19, b[4] == 0x2D, b[7] == 0x2D, b[10] == 0x20 || b[10] == 0x54, b[13] == 0x3A, b[16] == 0x3A
        else { return nil }
        func number(_ r: Range<Int>) -> Int64? {
            var v: Int64 = 0
            for i in r {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int64(b[i] - 0x30)
            }
            return v
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var nanos: Int64 = 0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                if digits < 9 { nanos = nanos * 10 + Int64(b[i] - 0x30) }
                digits += 1
                i += 1
            }
            for _ in digits..<max(digits, 9) { nanos *= 10 }
        }
        var offset: Int64 = 0
        if i < b.count, b[i] == 0x2B || b[i] == 0x2D, i + 6 <= b.count, b[i + 3] == 0x3A,
            let h = number(i + 1..<i + 3), let m = number(i + 4..<i + 6)
        {
            offset = (b[i] == 0x2D ? -1 : 1) * (h * 3600 + m * 60)
        }
        let days = daysFromCivil(year, month, day)
        return Timestamp(seconds: days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanoseconds: nanos)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The first "CLIENT -> SERVER" in a message.
    package static func connection(in text: String) -> (Endpoint, Endpoint)? {
        guard let arrow = text.range(of: " -> ") else { return nil }
        let stops: Set<Character> = [" ", "(", ")", ",", "\"", "'"]
        var start = arrow.lowerBound
        while start > text.startIndex, !stops.contains(text[text.index(before: start)]) {
            start = text.index(before: start)
        }
        var end = arrow.upperBound
        while end < text.endIndex, !stops.contains(text[end]) { end = text.index(after: end) }
        var right = text[arrow.upperBound..<end]
        while right.last == ":" { right = right.dropLast() }  // 4.x: "... -> 127.0.0.1:5672: user ..."
        guard let client = endpoint(text[start..<arrow.lowerBound]), let server = endpoint(right) else { return nil }
        return (client, server)
    }

    /// "127.0.0.1:5672", "[::1]:5672", "::1:5672" (3.x writes IPv6 without brackets).
    package static func endpoint(_ s: Substring) -> Endpoint? {
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]) else { return nil }
        var host = s[..<colon]
        if host.first == "[", host.last == "]" { host = host.dropFirst().dropLast() }
        guard let address = IPAddress(parsing: host) else { return nil }
        return Endpoint(address: address.unmapped, port: port)
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

extension String {
    func range(of needle: String) -> Range<String.Index>? {
        guard !needle.isEmpty, let first = needle.first else { return nil }
        var i = startIndex
        while let found = self[i...].firstIndex(of: first) {
            if self[found...].hasPrefix(needle) { return found..<index(found, offsetBy: needle.count) }
            i = index(after: found)
        }
        return nil
    }
}

/// The string fields of a flat JSON object (other values are skipped), as RabbitMQ's JSON formatter writes them.
enum JSONFields {
    static func strings(_ line: Substring) -> [String: String] {
        var fields: [String: String] = [:]
        let b = Array(line.utf8)
        var i = 0
        func skipSpace() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 { i += 1 } }
        func string() -> String? {
            guard i < b.count, b[i] == 0x22 else { return nil }
            i += 1
            var out: [UInt8] = []
            while i < b.count {
                let c = b[i]
                i += 1
                if c == 0x22 { return String(decoding: out, as: UTF8.self) }
                guard c == 0x5C else {
                    out.append(c)
                    continue
                }
                guard i < b.count else { return nil }
                let e = b[i]
                i += 1
                switch e {
                case 0x6E: out.append(0x0A)
                case 0x74: out.append(0x09)
                case 0x72: out.append(0x0D)
                case 0x62, 0x66: out.append(0x20)
                case 0x75:
                    guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<i + 4], as: UTF8.self), radix: 16)
                    else { return nil }
                    i += 4
                    out += Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
                default: out.append(e)
                }
            }
            return nil
        }
        /// Skips a value that is not a string: a number, a literal, or an object or array (strings inside heeded).
        func skipValue() {
            var depth = 0
            while i < b.count {
                let c = b[i]
                if c == 0x22 {
                    _ = string()
                    continue
                }
                if c == 0x7B || c == 0x5B { depth += 1 }
                if c == 0x7D || c == 0x5D {
                    if depth == 0 { return }
                    depth -= 1
                }
                if c == 0x2C && depth == 0 { return }
                i += 1
            }
        }
        skipSpace()
        guard i < b.count, b[i] == 0x7B else { return [:] }
        i += 1
        while i < b.count {
            skipSpace()
            guard let key = string() else { return fields }
            skipSpace()
            guard i < b.count, b[i] == 0x3A else { return fields }
            i += 1
            skipSpace()
            if i < b.count, b[i] == 0x22 {
                guard let value = string() else { return fields }
                if fields.count < 64 { fields[key] = value }
            } else {
                skipValue()
            }
            skipSpace()
            guard i < b.count, b[i] == 0x2C else { return fields }
            i += 1
        }
        return fields
    }
}
