// A small JSON value with ordered keys and a deterministic writer: the same input always gives the same bytes.
import AMQPScopePackets

package enum JSON: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])
    /// A value that writes its own bytes: for parts written by the thousand (a connection's events), without
    /// building a tree for each.
    case written(any JSONWritable)

    package static func == (a: JSON, b: JSON) -> Bool { a.serialized() == b.serialized() }
    package func hash(into hasher: inout Hasher) { hasher.combine(serialized()) }

    package static func int(_ value: Int) -> JSON { .int(Int64(value)) }
    package static func optional(_ value: String?) -> JSON { value.map(JSON.string) ?? .null }
    package static func optional(_ value: Int?) -> JSON { value.map { JSON.int(Int64($0)) } ?? .null }

    /// Compact by default; `indent` gives a readable document, starting at nesting `level`.
    package func serialized(indent: Bool = false, level: Int = 0) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(into: &out, indent: indent ? level : nil)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the UTF-8 bytes of the document: byte-level, no per-character String work.
    package func write(into out: inout [UInt8], indent: Int?) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): JSON.appendInteger(i, to: &out)
        case .double(let d):
            if d.isFinite {
                if d == d.rounded() && abs(d) < 1e15 {
                    JSON.appendInteger(Int64(d), to: &out)
                } else {
                    out.append(contentsOf: String(d).utf8)
                }
            } else {
                out.append(contentsOf: "null".utf8)
            }
        case .string(let s): JSON.escape(s, into: &out)
        case .array(let items):
            JSON.writeArray(items.count, into: &out, indent: indent) { i, out, indent in
                items[i].write(into: &out, indent: indent)
            }
        case .object(let members):
            var object = JSONObjectWriter(&out, indent: indent)
            for (key, value) in members { object.member(key, value, &out) }
            object.end(&out)
        case .written(let value): value.write(into: &out, indent: indent)
        }
    }

    /// An array of `count` items, each written by `item` at the indent given to it: the one place arrays are
    /// formatted, whether their items are trees or write themselves.
    package static func writeArray(
        _ count: Int, into out: inout [UInt8], indent: Int?, item: (Int, inout [UInt8], Int?) -> Void
    ) {
        if count == 0 {
            out.append(contentsOf: "[]".utf8)
            return
        }
        out.append(UInt8(ascii: "["))
        for i in 0..<count {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSON.newline(&out, indent.map { $0 + 1 })
            item(i, &out, indent.map { $0 + 1 })
        }
        JSON.newline(&out, indent)
        out.append(UInt8(ascii: "]"))
    }

    static func newline(_ out: inout [UInt8], _ indent: Int?) {
        guard let indent else { return }
        // A line break and the indentation, copied from a constant in pieces of up to 64 spaces.
        lineStart.withUTF8Buffer { line in
            var spaces = indent * 2
            out.append(contentsOf: UnsafeBufferPointer(rebasing: line[...min(spaces, 64)]))
            spaces -= min(spaces, 64)
            while spaces > 0 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: line[1...min(spaces, 64)]))
                spaces -= min(spaces, 64)
            }
        }
    }

    /// A line break and 64 spaces.
    static let lineStart: StaticString =
        "\n                                                                "

    static func appendInteger(_ value: Int64, to out: inout [UInt8]) {
        if value == 0 {
            out.append(UInt8(ascii: "0"))
            return
        }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var magnitude = value.magnitude
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while magnitude > 0 {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            if value < 0 { out.append(UInt8(ascii: "-")) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[(20 - count)...]))
        }
    }

    /// RFC 8259 string escaping: quotes, backslash and every control character (and U+2028/2029, which break
    /// JavaScript). Runs with none of them are copied whole; the scan looks at each byte once.
    static func escape(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var text = s
        text.withUTF8 { bytes in
            let count = bytes.count
            guard let base = bytes.baseAddress else { return }
            var clean = 0
            var i = 0
            while i < count {
                // Eight bytes at a time while none of them needs a look.
                if i + 8 <= count, JSON.plain(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)) {
                    i += 8
                    continue
                }
                let byte = bytes[i]
                if byte >= 0x80 {
                    // Only U+2028 and U+2029 (E2 80 A8, E2 80 A9) of the non-ASCII characters are escaped.
                    guard byte == 0xE2, i + 2 < count, bytes[i + 1] == 0x80, bytes[i + 2] & 0xFE == 0xA8 else {
                        i += 1
                        continue
                    }
                } else if byte >= 0x20 && byte != 0x22 && byte != 0x5C && byte != 0x7F {
                    i += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[clean..<i]))
                switch byte {
                case 0x22: out.append(contentsOf: "\\\"".utf8)
                case 0x5C: out.append(contentsOf: "\\\\".utf8)
                case 0x0A: out.append(contentsOf: "\\n".utf8)
                case 0x0D: out.append(contentsOf: "\\r".utf8)
                case 0x09: out.append(contentsOf: "\\t".utf8)
                case 0xE2: out.append(contentsOf: (bytes[i + 2] == 0xA8 ? "\\u2028" : "\\u2029").utf8)
                default:
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hexDigits[Int(byte >> 4)])
                    out.append(hexDigits[Int(byte & 15)])
                }
                i += byte == 0xE2 ? 3 : 1
                clean = i
            }
            if clean < count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[clean...])) }
        }
        out.append(UInt8(ascii: "\""))
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// Whether eight bytes are all printable ASCII other than quote and backslash (the usual bit tricks: a byte
    /// below 0x20, a byte from 0x7F up, a byte equal to 0x22 or 0x5C each set a high bit; false alarms only ever
    /// send a word to the byte-at-a-time path).
    @inline(__always) static func plain(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let control = (w &- ones &* 0x20) & ~w & highs
        let high = ((w &+ ones) | w) & highs
        let quote = ((w ^ (ones &* 0x22)) &- ones) & ~(w ^ (ones &* 0x22)) & highs
        let backslash = ((w ^ (ones &* 0x5C)) &- ones) & ~(w ^ (ones &* 0x5C)) & highs
        return control | high | quote | backslash == 0
    }
}

/// A value that writes itself as JSON, formatted as the tree is (through `JSON.writeArray` and `JSONObjectWriter`).
package protocol JSONWritable: Sendable {
    func write(into out: inout [UInt8], indent: Int?)
}

/// Writes one object member by member, formatted exactly as `JSON.write` formats an `.object` (which uses it): `{`
/// on creation, each member on its line at `indent` + 1 when indenting, `}` at `end`.
package struct JSONObjectWriter {
    private let indent: Int?
    private var members = 0

    package init(_ out: inout [UInt8], indent: Int?) {
        self.indent = indent
        out.append(UInt8(ascii: "{"))
    }

    /// The separator before the next member and, indenting, its line.
    private mutating func next(_ out: inout [UInt8]) {
        if members > 0 { out.append(UInt8(ascii: ",")) }
        members += 1
        JSON.newline(&out, indent.map { $0 + 1 })
    }

    /// The next member's key, escaped (a tree's keys can come from anywhere); its value is written next.
    mutating func key(escaping key: String, _ out: inout [UInt8]) {
        next(&out)
        JSON.escape(key, into: &out)
        out.append(UInt8(ascii: ":"))
        if indent != nil { out.append(UInt8(ascii: " ")) }
    }

    /// The next member's key, one of the program's own names: plain ASCII with nothing to escape, copied as it is.
    package mutating func key(_ key: StaticString, _ out: inout [UInt8]) {
        next(&out)
        Self.quoted(key, &out)
        out.append(UInt8(ascii: ":"))
        if indent != nil { out.append(UInt8(ascii: " ")) }
    }

    package mutating func string(_ key: StaticString, _ value: String, _ out: inout [UInt8]) {
        self.key(key, &out)
        JSON.escape(value, into: &out)
    }

    /// A value that is one of the program's own names (a kind, a direction): copied as it is, like the keys.
    package mutating func name(_ key: StaticString, _ value: StaticString, _ out: inout [UInt8]) {
        self.key(key, &out)
        Self.quoted(value, &out)
    }

    /// One of the program's own names in quotes, copied as it is (plain ASCII, nothing to escape).
    private static func quoted(_ name: StaticString, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(UInt8(ascii: "\""))
    }

    /// A time as RFC 3339 text in UTC ("2026-12-02T06:59:27.123456Z"), formatted straight into the output.
    package mutating func time(_ key: StaticString, _ time: Timestamp, _ out: inout [UInt8]) {
        self.key(key, &out)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            let count = time.format(into: buffer, separator: UInt8(ascii: "T"), zulu: true)
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<count]))
            out.append(UInt8(ascii: "\""))
        }
    }

    package mutating func int(_ key: StaticString, _ value: Int, _ out: inout [UInt8]) {
        self.key(key, &out)
        JSON.appendInteger(Int64(value), to: &out)
    }

    package mutating func value(_ key: StaticString, _ value: JSON, _ out: inout [UInt8]) {
        self.key(key, &out)
        value.write(into: &out, indent: indent.map { $0 + 1 })
    }

    /// A tree's member.
    mutating func member(_ key: String, _ value: JSON, _ out: inout [UInt8]) {
        self.key(escaping: key, &out)
        value.write(into: &out, indent: indent.map { $0 + 1 })
    }

    package func end(_ out: inout [UInt8]) {
        if members > 0 { JSON.newline(&out, indent) }
        out.append(UInt8(ascii: "}"))
    }
}
