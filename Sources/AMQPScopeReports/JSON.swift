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
        var out = JSONOutput()
        write(into: &out, indent: indent ? level : nil)
        return out.string
    }

    /// Appends the UTF-8 bytes of the document: byte-level, no per-character String work.
    package func write(into out: inout JSONOutput, indent: Int?) {
        switch self {
        case .null: out.append("null")
        case .bool(let b): out.append(b ? "true" : "false")
        case .int(let i): JSON.appendInteger(i, to: &out)
        case .double(let d): JSON.appendDouble(d, to: &out)
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
        _ count: Int, into out: inout JSONOutput, indent: Int?, item: (Int, inout JSONOutput, Int?) -> Void
    ) {
        if count == 0 {
            out.append("[]")
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

    static func newline(_ out: inout JSONOutput, _ indent: Int?) {
        guard let indent else { return }
        out.appendLine(indent: indent)
    }

    /// A number: whole values as integers, others as Swift's shortest text for them, and null for infinities and NaN.
    static func appendDouble(_ d: Double, to out: inout JSONOutput) {
        if d.isFinite {
            if d == d.rounded() && abs(d) < 1e15 {
                JSON.appendInteger(Int64(d), to: &out)
            } else {
                out.append(text: String(d))
            }
        } else {
            out.append("null")
        }
    }

    static func appendInteger(_ value: Int64, to out: inout JSONOutput) {
        appendInteger(magnitude: value.magnitude, negative: value < 0, to: &out)
    }

    /// A whole number given as its magnitude and sign, so that every width of integer fits, UInt64 too.
    static func appendInteger(magnitude value: UInt64, negative: Bool, to out: inout JSONOutput) {
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
        var magnitude = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while magnitude > 0 {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            if negative { out.append(UInt8(ascii: "-")) }
            out.append(UnsafeRawBufferPointer(rebasing: buffer[(20 - count)...]))
        }
    }

    /// RFC 8259 string escaping: quotes, backslash and every control character (and U+2028/2029, which break
    /// JavaScript). Runs with none of them are copied whole; the scan looks at each byte once.
    static func escape(_ s: String, into out: inout JSONOutput) {
        out.append(UInt8(ascii: "\""))
        var text = s
        text.withUTF8 { escapeContent($0, into: &out) }
        out.append(UInt8(ascii: "\""))
    }

    /// `escape`'s work without the quotes around it: for strings written piece by piece (`TextSink`). Pieces are whole
    /// UTF-8 texts, so escaping them one by one gives the bytes that escaping them joined would.
    static func escapeContent(_ bytes: UnsafeBufferPointer<UInt8>, into out: inout JSONOutput) {
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
            out.append(UnsafeBufferPointer(rebasing: bytes[clean..<i]))
            switch byte {
            case 0x22: out.append("\\\"")
            case 0x5C: out.append("\\\\")
            case 0x0A: out.append("\\n")
            case 0x0D: out.append("\\r")
            case 0x09: out.append("\\t")
            case 0xE2: out.append(bytes[i + 2] == 0xA8 ? "\\u2028" : "\\u2029")
            default:
                out.append("\\u00")
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 15)])
            }
            i += byte == 0xE2 ? 3 : 1
            clean = i
        }
        if clean < count { out.append(UnsafeBufferPointer(rebasing: bytes[clean...])) }
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
    func write(into out: inout JSONOutput, indent: Int?)
}

/// Writes one object member by member, formatted exactly as `JSON.write` formats an `.object` (which uses it): `{`
/// on creation, each member on its line at `indent` + 1 when indenting, `}` at `end`.
package struct JSONObjectWriter {
    private let indent: Int?
    private var members = 0

    package init(_ out: inout JSONOutput, indent: Int?) {
        self.indent = indent
        out.append(UInt8(ascii: "{"))
    }

    /// The separator before the next member and, indenting, its line.
    private mutating func next(_ out: inout JSONOutput) {
        if members > 0 { out.append(UInt8(ascii: ",")) }
        members += 1
        JSON.newline(&out, indent.map { $0 + 1 })
    }

    /// The next member's key, escaped (a tree's keys can come from anywhere); its value is written next.
    mutating func key(escaping key: String, _ out: inout JSONOutput) {
        next(&out)
        JSON.escape(key, into: &out)
        out.append(UInt8(ascii: ":"))
        if indent != nil { out.append(UInt8(ascii: " ")) }
    }

    /// The next member's key, one of the program's own names: plain ASCII with nothing to escape, copied as it is.
    package mutating func key(_ key: StaticString, _ out: inout JSONOutput) {
        guard key.hasPointerRepresentation else { return self.key(escaping: key.description, &out) }
        out.appendKey(
            UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount), comma: members > 0,
            indent: indent.map { $0 + 1 })
        members += 1
    }

    package mutating func string(_ key: StaticString, _ value: String, _ out: inout JSONOutput) {
        self.key(key, &out)
        JSON.escape(value, into: &out)
    }

    /// A value that is one of the program's own names (a kind, a direction): copied as it is, like the keys.
    package mutating func name(_ key: StaticString, _ value: StaticString, _ out: inout JSONOutput) {
        self.key(key, &out)
        Self.quoted(value, &out)
    }

    /// One of the program's own names in quotes, copied as it is (plain ASCII, nothing to escape).
    private static func quoted(_ name: StaticString, _ out: inout JSONOutput) {
        out.append(UInt8(ascii: "\""))
        out.append(name)
        out.append(UInt8(ascii: "\""))
    }

    /// A time as RFC 3339 text in UTC ("2026-12-02T06:59:27.123456Z"), formatted straight into the output.
    package mutating func time(_ key: StaticString, _ time: Timestamp, _ out: inout JSONOutput) {
        self.key(key, &out)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            let count = time.format(into: buffer, separator: UInt8(ascii: "T"), zulu: true)
            out.append(UInt8(ascii: "\""))
            out.append(UnsafeBufferPointer(rebasing: buffer[..<count]))
            out.append(UInt8(ascii: "\""))
        }
    }

    package mutating func int(_ key: StaticString, _ value: Int, _ out: inout JSONOutput) {
        self.key(key, &out)
        JSON.appendInteger(Int64(value), to: &out)
    }

    package mutating func value(_ key: StaticString, _ value: JSON, _ out: inout JSONOutput) {
        self.key(key, &out)
        value.write(into: &out, indent: indent.map { $0 + 1 })
    }

    package mutating func int(_ key: StaticString, _ value: Int?, _ out: inout JSONOutput) {
        guard let value else { return null(key, &out) }
        int(key, value, &out)
    }

    package mutating func string(_ key: StaticString, _ value: String?, _ out: inout JSONOutput) {
        guard let value else { return null(key, &out) }
        string(key, value, &out)
    }

    /// A time, or null.
    package mutating func time(_ key: StaticString, _ time: Timestamp?, _ out: inout JSONOutput) {
        guard let time else { return null(key, &out) }
        self.time(key, time, &out)
    }

    /// A number, written as the tree writes `.double`.
    package mutating func double(_ key: StaticString, _ value: Double?, _ out: inout JSONOutput) {
        guard let value else { return null(key, &out) }
        self.key(key, &out)
        JSON.appendDouble(value, to: &out)
    }

    package mutating func bool(_ key: StaticString, _ value: Bool, _ out: inout JSONOutput) {
        self.key(key, &out)
        out.append(value ? "true" : "false")
    }

    package mutating func null(_ key: StaticString, _ out: inout JSONOutput) {
        self.key(key, &out)
        out.append("null")
    }

    /// An object member whose members `body` writes.
    package mutating func object(
        _ key: StaticString, _ out: inout JSONOutput, _ body: (inout JSONObjectWriter, inout JSONOutput) -> Void
    ) {
        self.key(key, &out)
        var inner = JSONObjectWriter(&out, indent: indent.map { $0 + 1 })
        body(&inner, &out)
        inner.end(&out)
    }

    /// An array member of `count` objects, the members of the i-th written by `body`.
    package mutating func objects(
        _ key: StaticString, _ count: Int, _ out: inout JSONOutput,
        _ body: (Int, inout JSONObjectWriter, inout JSONOutput) -> Void
    ) {
        self.key(key, &out)
        JSON.writeArray(count, into: &out, indent: indent.map { $0 + 1 }) { i, out, indent in
            var item = JSONObjectWriter(&out, indent: indent)
            body(i, &item, &out)
            item.end(&out)
        }
    }

    /// A tree's member.
    package mutating func member(_ key: String, _ value: JSON, _ out: inout JSONOutput) {
        self.key(escaping: key, &out)
        value.write(into: &out, indent: indent.map { $0 + 1 })
    }

    package func end(_ out: inout JSONOutput) {
        if members > 0 { JSON.newline(&out, indent) }
        out.append(UInt8(ascii: "}"))
    }
}

/// JSON text as it is written: bytes appended in place behind a pointer, the room doubled when it runs out. Appending a
/// few bytes to an array went through its generic copy from a sequence, about a hundred instructions each time, and a
/// report appends pieces of a few bytes a million times.
package struct JSONOutput: ~Copyable {
    private var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    /// Bytes written.
    package private(set) var count = 0

    package init(capacity: Int = 1024) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    @inline(__always) package mutating func append(_ byte: UInt8) {
        if count == capacity { grow(1) }
        base[count] = byte
        count += 1
    }

    @inline(__always) package mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress else { return }
        if capacity - count < bytes.count { grow(bytes.count) }
        (base + count).initialize(from: source, count: bytes.count)
        count += bytes.count
    }

    package mutating func append(_ bytes: UnsafeRawBufferPointer) {
        append(bytes.assumingMemoryBound(to: UInt8.self))
    }

    /// One of the program's own texts (a constant).
    package mutating func append(_ text: StaticString) {
        if text.hasPointerRepresentation {
            append(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        } else {
            append(text: text.description)
        }
    }

    package mutating func append(text: String) {
        var text = text
        text.withUTF8 { append($0) }
    }

    /// A line break and the indentation of nesting `indent` (two spaces a level), written in place.
    package mutating func appendLine(indent: Int) {
        let length = 1 + 2 * max(indent, 0)
        if capacity - count < length { grow(length) }
        base[count] = UInt8(ascii: "\n")
        (base + count + 1).initialize(repeating: UInt8(ascii: " "), count: length - 1)
        count += length
    }

    /// A member's start, as `JSONObjectWriter` writes it: the comma before it (unless it is the first), the line and
    /// indentation of nesting `indent` (none when not indenting), the quoted key, the colon and, indenting, a space.
    /// Room is made once and the bytes are stored in place: it runs for every member of every object, and the
    /// appends it replaces cost a call each to fill the indentation and to copy the key.
    package mutating func appendKey(_ key: UnsafeBufferPointer<UInt8>, comma: Bool, indent: Int?) {
        let spaces = indent.map { 2 * max($0, 0) } ?? 0
        // Eight bytes of slack: the indentation is stored eight spaces at a time.
        let most = 1 + 1 + spaces + key.count + 4 + 8
        if capacity - count < most { grow(most) }
        var at = count
        if comma {
            base[at] = UInt8(ascii: ",")
            at += 1
        }
        if indent != nil {
            base[at] = UInt8(ascii: "\n")
            at += 1
            let raw = UnsafeMutableRawPointer(base + at)
            var filled = 0
            while filled < spaces {
                raw.storeBytes(of: 0x2020_2020_2020_2020 as UInt64, toByteOffset: filled, as: UInt64.self)
                filled += 8
            }
            at += spaces
        }
        base[at] = UInt8(ascii: "\"")
        at += 1
        if let start = key.baseAddress {
            var i = 0
            while i < key.count {
                base[at + i] = start[i]
                i += 1
            }
            at += key.count
        }
        base[at] = UInt8(ascii: "\"")
        base[at + 1] = UInt8(ascii: ":")
        at += 2
        if indent != nil {
            base[at] = UInt8(ascii: " ")
            at += 1
        }
        count = at
    }

    /// Forgets the last byte written (there must be one).
    package mutating func removeLast() {
        precondition(count > 0, "no byte to remove")
        count -= 1
    }

    /// Forgets every byte written; the room is kept.
    package mutating func removeAll() { count = 0 }

    /// The bytes written.
    package var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    /// The bytes written from `start` on, read in place.
    package func withBytes<T>(from start: Int, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        body(UnsafeBufferPointer(start: base + min(start, count), count: count - min(start, count)))
    }

    /// The text written.
    package var string: String { String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self) }

    private mutating func grow(_ needed: Int) {
        let grown = max(capacity * 2, count + needed)
        let new = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        new.initialize(from: base, count: count)
        base.deallocate()
        base = new
        capacity = grown
    }
}
