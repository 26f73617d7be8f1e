// AMQP 0-9-1 values: field tables with RabbitMQ's type letters, argument values, and the reader that
// decodes them from a borrowed view, bounded in depth and size, never trapping.
import AMQPScopePackets

/// Why bytes could not be decoded. Compared by `code`; `reason` says more for people.
package struct DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    package enum Code: String, Hashable, Sendable {
        case truncated  // a length or value runs past the end of its frame
        case tooDeep  // tables/arrays nested past the limit
        case tooManyEntries  // a table or array with more entries than the limit
        case badFieldType  // an unknown field-table type letter
        case badPropertyFlags  // property flags naming properties the class does not have
    }
    package var code: Code
    package var reason: String
    package init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }
    package static func == (a: DecodeError, b: DecodeError) -> Bool { a.code == b.code }
    package func hash(into hasher: inout Hasher) { hasher.combine(code) }
    package var description: String { "\(code.rawValue): \(reason)" }
}

/// Limits that keep hostile tables cheap.
package enum FieldLimits {
    /// Tables and arrays nested deeper than this are refused (real peers nest two or three levels).
    package static let maximumDepth = 32
    /// Entries in one table or array (each takes at least two bytes, so frame_max bounds it too).
    package static let maximumEntries = 65_536
}

/// A long string: bytes that are often, but not always, text.
public struct LongString: Hashable, Sendable, CustomStringConvertible {
    /// The bytes as sent.
    public var bytes: [UInt8]
    /// A long string of these bytes.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    /// A long string of this text's UTF-8.
    public init(_ text: String) { self.bytes = Array(text.utf8) }
    /// The bytes as UTF-8 text, invalid sequences replaced.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    /// As reports print it.
    public var description: String { text }
}

/// One field-table value, by RabbitMQ's type letters (its "AMQP 0-9-1 errata" table).
public indirect enum FieldValue: Hashable, Sendable {
    case boolean(Bool)  // t
    case int8(Int8)  // b
    case uint8(UInt8)  // B
    case int16(Int16)  // s
    case uint16(UInt16)  // u
    case int32(Int32)  // I
    case uint32(UInt32)  // i
    case int64(Int64)  // l
    case float(Float)  // f
    case double(Double)  // d
    case decimal(scale: UInt8, value: UInt32)  // D
    case longString(LongString)  // S
    case array([FieldValue])  // A
    case timestamp(UInt64)  // T
    case table(FieldTable)  // F
    case void  // V
    case byteArray([UInt8])  // x

    /// RabbitMQ's type letter for this value.
    public var typeLetter: Character {
        switch self {
        case .boolean: "t"
        case .int8: "b"
        case .uint8: "B"
        case .int16: "s"
        case .uint16: "u"
        case .int32: "I"
        case .uint32: "i"
        case .int64: "l"
        case .float: "f"
        case .double: "d"
        case .decimal: "D"
        case .longString: "S"
        case .array: "A"
        case .timestamp: "T"
        case .table: "F"
        case .void: "V"
        case .byteArray: "x"
        }
    }
}

/// A field table: named values in wire order (keys may repeat on the wire; all are kept).
public struct FieldTable: Hashable, Sendable {
    /// One key and value.
    public struct Entry: Hashable, Sendable {
        /// The key.
        public var key: String
        /// The value.
        public var value: FieldValue
        /// An entry.
        public init(key: String, value: FieldValue) {
            self.key = key
            self.value = value
        }
    }
    /// The entries in wire order.
    public var entries: [Entry]
    /// A table of these entries.
    public init(_ entries: [Entry] = []) { self.entries = entries }

    /// The first value under `key`.
    public subscript(key: String) -> FieldValue? { entries.first { $0.key == key }?.value }

    /// A string value (long string) by key, as text.
    public func string(_ key: String) -> String? {
        if case .longString(let s)? = self[key] { return s.text }
        return nil
    }
}

/// The argument types of the specification.
public enum ArgumentType: String, Hashable, Sendable {
    case octet, short, long, longlong, bit
    case shortString = "shortstr"
    case longString = "longstr"
    case table, timestamp
}

/// A method argument's value.
public enum ArgumentValue: Hashable, Sendable {
    case octet(UInt8)
    case short(UInt16)
    case long(UInt32)
    case longlong(UInt64)
    case bit(Bool)
    case shortString(String)
    case longString(LongString)
    case table(FieldTable)
    case timestamp(UInt64)
}

/// A method argument or content property in the spec: its name and wire type.
package struct ArgumentDescriptor: Hashable, Sendable {
    /// The spec's name, such as "routing-key".
    package var name: String
    /// How it is encoded.
    package var type: ArgumentType

    package init(_ name: String, _ type: ArgumentType) {
        self.name = name
        self.type = type
    }
}

/// A reply code's name in the spec and its class: "soft-error" (closes a channel), "hard-error" (closes the
/// connection), or "success".
package struct ReplyCode: Hashable, Sendable {
    /// Such as "NOT_FOUND".
    package var name: String
    /// "soft-error", "hard-error" or "success".
    package var kind: String

    package init(_ name: String, _ kind: String) {
        self.name = name
        self.kind = kind
    }
}

package struct MethodDescriptor: Sendable {
    package var classID: UInt16
    package var methodID: UInt16
    package var className: String
    package var methodName: String
    package var arguments: [ArgumentDescriptor]
    package var synchronous: Bool
    package var carriesContent: Bool

    package var name: String { "\(className).\(methodName)" }
}

extension AMQPSpec {
    static let methodIndex: [UInt32: Int] = {
        var index: [UInt32: Int] = [:]
        for (i, m) in methods.enumerated() { index[UInt32(m.classID) << 16 | UInt32(m.methodID)] = i }
        return index
    }()

    /// A known method's index in `methods`.
    static func index(classID: UInt16, methodID: UInt16) -> Int? {
        methodIndex[UInt32(classID) << 16 | UInt32(methodID)]
    }

    /// The descriptor of a known method.
    package static func descriptor(classID: UInt16, methodID: UInt16) -> MethodDescriptor? {
        index(classID: classID, methodID: methodID).map { methods[$0] }
    }

    /// The methods' names, by their index in `methods`.
    static let methodNames = methods.map(\.name)

    /// "class.method", or "unknown(C, M)". Asked for every frame a report or live capture describes: the name is
    /// taken without copying the method's descriptor and its argument list.
    package static func methodName(classID: UInt16, methodID: UInt16) -> String {
        index(classID: classID, methodID: methodID).map { methodNames[$0] } ?? "unknown(\(classID), \(methodID))"
    }

    static let classIDs: Set<UInt16> = Set(methods.map(\.classID))
    package static func isKnownClass(_ id: UInt16) -> Bool { classIDs.contains(id) }
}

extension Method {
    package var descriptor: MethodDescriptor? { AMQPSpec.descriptor(classID: classID, methodID: methodID) }
    /// "class.method", such as "basic.publish".
    public var name: String { AMQPSpec.methodName(classID: classID, methodID: methodID) }
}

/// Big-endian reads from a borrowed view of one frame's payload. Every read checks what is left first.
package struct FieldReader {
    /// A field type letter as an error names it: 'x' when printable, 0x.. otherwise.
    static func describe(typeLetter letter: UInt8) -> String {
        letter < 0x80 && letter >= 0x20 ? "'\(Character(Unicode.Scalar(letter)))'" : "0x\(String(letter, radix: 16))"
    }

    let bytes: UnsafeRawBufferPointer
    package private(set) var position: Int
    var depth = 0
    /// For a frame the capture cut short (its missing bytes given as zeros): where the captured bytes end. Strings
    /// keep only their captured part and tables reaching past it are read as empty, so no zero is taken for data.
    var captured = Int.max

    package init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        self.position = 0
    }

    /// A reader of a payload cut by the capture after `captured` bytes, the rest given as zeros in `bytes`.
    package init(_ bytes: UnsafeRawBufferPointer, captured: Int) {
        self.init(bytes)
        self.captured = captured
    }

    package var remaining: Int { bytes.count - position }

    @inline(__always)
    mutating func take(_ count: Int, _ what: StaticString) throws(DecodeError) -> Int {
        guard count >= 0, count <= remaining else {
            throw DecodeError(.truncated, "\(what) needs \(count) bytes, \(remaining) left")
        }
        let start = position
        position += count
        return start
    }

    @inline(__always)
    package mutating func octet() throws(DecodeError) -> UInt8 { bytes[try take(1, "octet")] }

    @inline(__always)
    package mutating func short() throws(DecodeError) -> UInt16 {
        bytes.integer(at: try take(2, "short"))
    }

    @inline(__always)
    package mutating func long() throws(DecodeError) -> UInt32 {
        bytes.integer(at: try take(4, "long"))
    }

    @inline(__always)
    package mutating func longlong() throws(DecodeError) -> UInt64 {
        bytes.integer(at: try take(8, "long long"))
    }

    package mutating func shortString() throws(DecodeError) -> String {
        let length = Int(try octet())
        let at = try take(length, "short string")
        let kept = min(length, max(0, captured - at))
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[at..<at + kept]), as: UTF8.self)
        return kept < length ? text + "…" : text
    }

    package mutating func rawBytes(_ length: Int, _ what: StaticString) throws(DecodeError) -> [UInt8] {
        let at = try take(length, what)
        return Array(UnsafeRawBufferPointer(rebasing: bytes[at..<at + length]))
    }

    package mutating func longString() throws(DecodeError) -> LongString {
        let length = try long()
        guard let count = Int(exactly: length), count <= remaining else {
            throw DecodeError(.truncated, "long string of \(length) bytes, \(remaining) left")
        }
        let at = position
        let bytes = try rawBytes(count, "long string")
        return LongString(Array(bytes.prefix(max(0, captured - at))))
    }

    package mutating func table() throws(DecodeError) -> FieldTable {
        var entries: [FieldTable.Entry] = []
        try nested("field table") { (inner: inout FieldReader) throws(DecodeError) in
            let key = try inner.shortString()
            entries.append(FieldTable.Entry(key: key, value: try inner.fieldValue()))
        }
        return FieldTable(entries)
    }

    /// A table or array: a 32-bit length, then entries read by `entry` from a slice of exactly that length (a value
    /// can never run past its container), one nesting level deeper, at most `FieldLimits.maximumEntries` of them.
    mutating func nested(_ what: StaticString, _ entry: (inout FieldReader) throws(DecodeError) -> Void)
        throws(DecodeError)
    {
        let length = try long()
        guard let count = Int(exactly: length), count <= remaining else {
            throw DecodeError(.truncated, "\(what) of \(length) bytes, \(remaining) left")
        }
        guard depth < FieldLimits.maximumDepth else {
            throw DecodeError(.tooDeep, "\(what)s nested deeper than \(FieldLimits.maximumDepth)")
        }
        let at = try take(count, what)
        if at + count > captured { return }  // cut by the capture: its entries are unknown
        var inner = FieldReader(UnsafeRawBufferPointer(rebasing: bytes[at..<at + count]))
        inner.depth = depth + 1
        var entries = 0
        while inner.remaining > 0 {
            entries += 1
            guard entries <= FieldLimits.maximumEntries else {
                throw DecodeError(.tooManyEntries, "\(what) with more than \(FieldLimits.maximumEntries) entries")
            }
            try entry(&inner)
        }
    }

    // MARK: Skipping: the same checks as decoding, without making values (for data nobody will look at).

    package mutating func skipShortString() throws(DecodeError) {
        _ = try take(Int(try octet()), "short string")
    }

    /// Skips a short string, returning a digest of its bytes and its first 15 bytes: a message-id known without
    /// building a String.
    mutating func messageID() throws(DecodeError) -> MessageID {
        let length = Int(try octet())
        let at = try take(length, "short string")
        let raw = UnsafeRawBufferPointer(rebasing: bytes[at..<at + length])
        return MessageID(digest: Self.digest(raw), prefix: MessageIDPrefix(raw, length: length))
    }

    /// 64-bit FNV-1a.
    package static func digest(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    /// Walks a table's entries to check its structure, building nothing.
    package mutating func skipTable() throws(DecodeError) {
        try nested("field table") { (inner: inout FieldReader) throws(DecodeError) in
            try inner.skipShortString()
            try inner.skipFieldValue()
        }
    }

    mutating func skipFieldValue() throws(DecodeError) {
        let letter = try octet()
        switch letter {
        case UInt8(ascii: "t"), UInt8(ascii: "b"), UInt8(ascii: "B"): _ = try take(1, "field value")
        case UInt8(ascii: "s"), UInt8(ascii: "u"): _ = try take(2, "field value")
        case UInt8(ascii: "I"), UInt8(ascii: "i"), UInt8(ascii: "f"): _ = try take(4, "field value")
        case UInt8(ascii: "l"), UInt8(ascii: "d"), UInt8(ascii: "T"): _ = try take(8, "field value")
        case UInt8(ascii: "D"): _ = try take(5, "field value")
        case UInt8(ascii: "V"): break
        case UInt8(ascii: "S"), UInt8(ascii: "x"):
            let length = try long()
            guard let count = Int(exactly: length), count <= remaining else {
                throw DecodeError(.truncated, "long string of \(length) bytes, \(remaining) left")
            }
            _ = try take(count, "long string")
        case UInt8(ascii: "F"): try skipTable()
        case UInt8(ascii: "A"):
            try nested("field array") { (inner: inout FieldReader) throws(DecodeError) in try inner.skipFieldValue() }
        default:
            throw DecodeError(
                .badFieldType,
                "unknown field type \(Self.describe(typeLetter: letter))"
            )
        }
    }

    mutating func array() throws(DecodeError) -> [FieldValue] {
        var values: [FieldValue] = []
        try nested("field array") { (inner: inout FieldReader) throws(DecodeError) in
            values.append(try inner.fieldValue())
        }
        return values
    }

    mutating func fieldValue() throws(DecodeError) -> FieldValue {
        let letter = try octet()
        switch letter {
        case UInt8(ascii: "t"): return .boolean(try octet() != 0)
        case UInt8(ascii: "b"): return .int8(Int8(bitPattern: try octet()))
        case UInt8(ascii: "B"): return .uint8(try octet())
        case UInt8(ascii: "s"): return .int16(Int16(bitPattern: try short()))
        case UInt8(ascii: "u"): return .uint16(try short())
        case UInt8(ascii: "I"): return .int32(Int32(bitPattern: try long()))
        case UInt8(ascii: "i"): return .uint32(try long())
        case UInt8(ascii: "l"): return .int64(Int64(bitPattern: try longlong()))
        case UInt8(ascii: "f"): return .float(Float(bitPattern: try long()))
        case UInt8(ascii: "d"): return .double(Double(bitPattern: try longlong()))
        case UInt8(ascii: "D"):
            let scale = try octet()
            return .decimal(scale: scale, value: try long())
        case UInt8(ascii: "S"): return .longString(try longString())
        case UInt8(ascii: "A"): return .array(try array())
        case UInt8(ascii: "T"): return .timestamp(try longlong())
        case UInt8(ascii: "F"): return .table(try table())
        case UInt8(ascii: "V"): return .void
        case UInt8(ascii: "x"):
            let length = try long()
            guard let count = Int(exactly: length), count <= remaining else {
                throw DecodeError(.truncated, "byte array of \(length) bytes, \(remaining) left")
            }
            return .byteArray(try rawBytes(count, "byte array"))
        default:
            throw DecodeError(
                .badFieldType,
                "unknown field type \(Self.describe(typeLetter: letter))"
            )
        }
    }
}
