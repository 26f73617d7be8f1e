// The AMQP 1.0 type system (OASIS AMQP 1.0 part 1, "Types"): every value is a constructor byte, an optional
// descriptor (described types, 1.2), and data whose width the constructor's high nibble gives (1.6): 0x4 none,
// 0x5 one byte, 0x6 two, 0x7 four, 0x8 eight, 0x9 sixteen; 0xa/0xb variable width with a one- or four-byte size;
// 0xc/0xd compound (list, map) with a one- or four-byte size and count; 0xe/0xf arrays likewise.
//
// The reader walks a frame's bytes in place. Whole values (`value()`) are made only for the performatives that shape
// a story; the routine ones (transfer, flow, disposition) are read field by field with the scalar readers and
// `skip()`, which allocate nothing.
import AMQPScopePackets

/// An AMQP 1.0 value. Only a described value is boxed (it holds two values inline); the whole enum was indirect,
/// which made every number and string of a performative a heap allocation.
public enum AMQP10Value: Hashable, Sendable {
    case null
    case bool(Bool)
    case ubyte(UInt8)
    case ushort(UInt16)
    case uint(UInt32)
    case ulong(UInt64)
    case byte(Int8)
    case short(Int16)
    case int(Int32)
    case long(Int64)
    case float(Float)
    case double(Double)
    /// decimal32/64/128 (IEEE 754 decimal), kept as their bytes.
    case decimal([UInt8])
    /// A UTF-32 code point.
    case char(UInt32)
    /// Milliseconds since the Unix epoch.
    case timestamp(Int64)
    case uuid([UInt8])
    case binary([UInt8])
    case string(String)
    case symbol(String)
    case list([AMQP10Value])
    /// Keys and values in order.
    case map([AMQP10MapEntry])
    case array([AMQP10Value])
    /// A described type: a descriptor (a ulong code or a symbol) and the value it describes.
    indirect case described(descriptor: AMQP10Value, value: AMQP10Value)

    /// The text of a string or symbol.
    public var text: String? {
        switch self {
        case .string(let s), .symbol(let s): s
        default: nil
        }
    }

    /// An unsigned or non-negative integer's value.
    public var unsigned: UInt64? {
        switch self {
        case .ubyte(let v): UInt64(v)
        case .ushort(let v): UInt64(v)
        case .uint(let v): UInt64(v)
        case .ulong(let v): v
        case .byte(let v): v >= 0 ? UInt64(v) : nil
        case .short(let v): v >= 0 ? UInt64(v) : nil
        case .int(let v): v >= 0 ? UInt64(v) : nil
        case .long(let v): v >= 0 ? UInt64(v) : nil
        default: nil
        }
    }

    /// The entries of a map (empty for anything else).
    public var entries: [AMQP10MapEntry] {
        if case .map(let entries) = self { return entries }
        return []
    }

    /// The elements of a list or array (empty for anything else).
    public var elements: [AMQP10Value] {
        switch self {
        case .list(let values), .array(let values): values
        default: []
        }
    }

    /// Symbols: a single symbol or an array of them (the spec's `multiple="true"` fields).
    public var symbols: [String] {
        switch self {
        case .symbol(let s): [s]
        case .array(let values), .list(let values): values.compactMap(\.text)
        default: []
        }
    }
}

/// One key and value of an AMQP 1.0 map.
public struct AMQP10MapEntry: Hashable, Sendable {
    /// The key (symbols in the specification's maps; any type elsewhere).
    public var key: AMQP10Value
    /// The value.
    public var value: AMQP10Value
}

extension [AMQP10MapEntry] {
    /// The value under a symbol or string key.
    package subscript(key: String) -> AMQP10Value? {
        first { $0.key.text == key }?.value
    }
}

/// Why bytes could not be read as AMQP 1.0 values; compared by code.
package struct AMQP10DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    package enum Code: String, Hashable, Sendable {
        case truncated  // a value runs past the end of its frame
        case badConstructor  // a constructor byte the specification does not define
        case tooDeep  // compound values nested past the limit
        case tooManyEntries  // a list, map or array with more elements than its bytes can hold
        case badDescriptor  // a descriptor that is not a ulong or a symbol
        case unexpectedType  // a field of the wrong type (a performative's field, a frame body's descriptor)
        case missingField  // a mandatory field is null or absent
    }
    package var code: Code
    package var reason: String
    package init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }
    package static func == (a: AMQP10DecodeError, b: AMQP10DecodeError) -> Bool { a.code == b.code }
    package func hash(into hasher: inout Hasher) { hasher.combine(code) }
    package var description: String { "\(code.rawValue): \(reason)" }
}

/// Limits that keep hostile values cheap.
package enum AMQP10Limits {
    /// Compound values nested deeper than this are refused (performatives nest three or four levels: a source's
    /// filter map of described values).
    package static let maximumDepth = 32
}

/// Reads AMQP 1.0 values from a frame's bytes, in place.
package struct AMQP10Reader {
    package let bytes: UnsafeRawBufferPointer
    package var index: Int
    /// Where the readable bytes end (a compound value's end, while reading inside it).
    package var end: Int

    package init(_ bytes: UnsafeRawBufferPointer, from index: Int = 0) {
        self.bytes = bytes
        self.index = index
        self.end = bytes.count
    }

    package var isAtEnd: Bool { index >= end }

    @inline(__always)
    mutating func take(_ n: Int) throws(AMQP10DecodeError) -> Int {
        guard n >= 0, end - index >= n else {
            throw AMQP10DecodeError(.truncated, "a value of \(n) bytes runs past the end at byte \(index)")
        }
        defer { index += n }
        return index
    }

    @inline(__always)
    mutating func u8() throws(AMQP10DecodeError) -> UInt8 { bytes[try take(1)] }

    @inline(__always)
    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) throws(AMQP10DecodeError) -> T {
        bytes.integer(at: try take(MemoryLayout<T>.size), as: T.self)
    }

    /// The data width of a fixed-width constructor, from its high nibble.
    static func fixedWidth(_ code: UInt8) -> Int? {
        switch code >> 4 {
        case 0x4: 0
        case 0x5: 1
        case 0x6: 2
        case 0x7: 4
        case 0x8: 8
        case 0x9: 16
        default: nil
        }
    }

    /// Whether the specification defines this primitive constructor.
    static func isDefined(_ code: UInt8) -> Bool {
        switch code {
        case 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x60, 0x61, 0x70, 0x71,
            0x72, 0x73, 0x74, 0x80, 0x81, 0x82, 0x83, 0x84, 0x94, 0x98, 0xa0, 0xa1, 0xa3, 0xb0, 0xb1, 0xb3, 0xc0, 0xc1,
            0xd0, 0xd1, 0xe0, 0xf0:
            true
        default: false
        }
    }

    // MARK: - Whole values

    /// The next value, whole.
    package mutating func value(depth: Int = 0) throws(AMQP10DecodeError) -> AMQP10Value {
        let code = try u8()
        if code == 0x00 {
            guard depth < AMQP10Limits.maximumDepth else {
                throw AMQP10DecodeError(.tooDeep, "described values nested deeper than \(AMQP10Limits.maximumDepth)")
            }
            let descriptor = try value(depth: depth + 1)
            switch descriptor {
            case .symbol: break
            default:
                guard descriptor.unsigned != nil else {
                    throw AMQP10DecodeError(.badDescriptor, "a descriptor that is neither a ulong nor a symbol")
                }
            }
            return .described(descriptor: descriptor, value: try value(depth: depth + 1))
        }
        return try data(code, depth: depth)
    }

    /// The data of a value whose constructor `code` was read.
    mutating func data(_ code: UInt8, depth: Int) throws(AMQP10DecodeError) -> AMQP10Value {
        switch code {
        case 0x40: return .null
        case 0x41: return .bool(true)
        case 0x42: return .bool(false)
        case 0x56: return .bool(try u8() != 0)
        case 0x50: return .ubyte(try u8())
        case 0x60: return .ushort(try integer())
        case 0x70: return .uint(try integer())
        case 0x52: return .uint(UInt32(try u8()))
        case 0x43: return .uint(0)
        case 0x80: return .ulong(try integer())
        case 0x53: return .ulong(UInt64(try u8()))
        case 0x44: return .ulong(0)
        case 0x51: return .byte(Int8(bitPattern: try u8()))
        case 0x61: return .short(try integer())
        case 0x71: return .int(try integer())
        case 0x54: return .int(Int32(Int8(bitPattern: try u8())))
        case 0x81: return .long(try integer())
        case 0x55: return .long(Int64(Int8(bitPattern: try u8())))
        case 0x72: return .float(Float(bitPattern: try integer(UInt32.self)))
        case 0x82: return .double(Double(bitPattern: try integer(UInt64.self)))
        case 0x74, 0x84, 0x94:
            let n = Self.fixedWidth(code)!
            let at = try take(n)
            return .decimal(Array(UnsafeRawBufferPointer(rebasing: bytes[at..<at + n])))
        case 0x73: return .char(try integer())
        case 0x83: return .timestamp(try integer())
        case 0x98:
            let at = try take(16)
            return .uuid(Array(UnsafeRawBufferPointer(rebasing: bytes[at..<at + 16])))
        case 0xa0, 0xb0, 0xa1, 0xb1, 0xa3, 0xb3:
            let range = try variable(code)
            let raw = UnsafeRawBufferPointer(rebasing: bytes[range])
            switch code & 0x0f {
            case 0x0: return .binary(Array(raw))
            case 0x1: return .string(String(decoding: raw, as: UTF8.self))
            default: return .symbol(String(decoding: raw, as: UTF8.self))
            }
        case 0x45: return .list([])
        case 0xc0, 0xd0, 0xc1, 0xd1:
            guard depth < AMQP10Limits.maximumDepth else {
                throw AMQP10DecodeError(.tooDeep, "compound values nested deeper than \(AMQP10Limits.maximumDepth)")
            }
            let (count, compoundEnd) = try compound(code)
            let saved = end
            end = compoundEnd
            defer {
                index = compoundEnd
                end = saved
            }
            if code & 0x0f == 0 {
                var values: [AMQP10Value] = []
                values.reserveCapacity(count)
                for _ in 0..<count { values.append(try value(depth: depth + 1)) }
                return .list(values)
            }
            guard count % 2 == 0 else {
                throw AMQP10DecodeError(.unexpectedType, "a map with an odd number (\(count)) of elements")
            }
            var entries: [AMQP10MapEntry] = []
            entries.reserveCapacity(count / 2)
            for _ in 0..<count / 2 {
                let key = try value(depth: depth + 1)
                entries.append(AMQP10MapEntry(key: key, value: try value(depth: depth + 1)))
            }
            return .map(entries)
        case 0xe0, 0xf0:
            guard depth < AMQP10Limits.maximumDepth else {
                throw AMQP10DecodeError(.tooDeep, "arrays nested deeper than \(AMQP10Limits.maximumDepth)")
            }
            let (count, arrayEnd) = try compound(code)
            let saved = end
            end = arrayEnd
            defer {
                index = arrayEnd
                end = saved
            }
            guard count > 0 else { return .array([]) }
            // One constructor for every element: a primitive one, or a described one (0x00 descriptor code).
            var descriptor: AMQP10Value?
            var element = try u8()
            if element == 0x00 {
                descriptor = try value(depth: depth + 1)
                element = try u8()
            }
            guard element != 0x00, Self.isDefined(element) else {
                throw AMQP10DecodeError(.badConstructor, "array element constructor 0x\(Self.hex(element))")
            }
            // Every element takes at least its fixed width; zero-width elements (null, true) at least nothing, so
            // bound the count by the bytes left (and by one element per byte otherwise) before reserving.
            let width = Self.fixedWidth(element) ?? 1
            guard width == 0 ? count <= end - index + 1 << 16 : count <= (end - index) / width else {
                throw AMQP10DecodeError(.tooManyEntries, "an array of \(count) elements in \(end - index) bytes")
            }
            var values: [AMQP10Value] = []
            values.reserveCapacity(min(count, 4096))
            for _ in 0..<count {
                let v = try data(element, depth: depth + 1)
                values.append(descriptor.map { .described(descriptor: $0, value: v) } ?? v)
            }
            return .array(values)
        default:
            throw AMQP10DecodeError(.badConstructor, "constructor 0x\(Self.hex(code)) at byte \(index - 1)")
        }
    }

    /// A variable-width value's data range (size one byte for 0xa_, four for 0xb_).
    mutating func variable(_ code: UInt8) throws(AMQP10DecodeError) -> Range<Int> {
        let size = code >> 4 == 0xa ? Int(try u8()) : Int(try integer(UInt32.self))
        let at = try take(size)
        return at..<at + size
    }

    /// A list's, map's or array's element count and where it ends; the count is checked against its bytes (each
    /// element of a list or map takes at least one byte).
    mutating func compound(_ code: UInt8) throws(AMQP10DecodeError) -> (count: Int, end: Int) {
        let narrow = code >> 4 == 0xc || code >> 4 == 0xe
        let size = narrow ? Int(try u8()) : Int(try integer(UInt32.self))
        let countWidth = narrow ? 1 : 4
        guard size >= countWidth else {
            throw AMQP10DecodeError(.truncated, "a compound value of \(size) bytes cannot hold its count")
        }
        let start = try take(size)
        index = start
        let count = narrow ? Int(try u8()) : Int(try integer(UInt32.self))
        let end = start + size
        guard code >> 4 >= 0xe || count <= end - index else {
            throw AMQP10DecodeError(.tooManyEntries, "\(count) elements in \(end - index) bytes")
        }
        return (count, end)
    }

    // MARK: - In place, without allocating

    /// Skips the next value.
    package mutating func skip(depth: Int = 0) throws(AMQP10DecodeError) {
        let code = try u8()
        if code == 0x00 {
            guard depth < AMQP10Limits.maximumDepth else {
                throw AMQP10DecodeError(.tooDeep, "described values nested deeper than \(AMQP10Limits.maximumDepth)")
            }
            try skip(depth: depth + 1)
            try skip(depth: depth + 1)
            return
        }
        guard Self.isDefined(code) else {
            throw AMQP10DecodeError(.badConstructor, "constructor 0x\(Self.hex(code)) at byte \(index - 1)")
        }
        if let width = Self.fixedWidth(code) {
            _ = try take(width)
            return
        }
        switch code >> 4 {
        case 0xa, 0xb: _ = try variable(code)
        default: index = try compound(code).end
        }
    }

    /// The next value, when it is an unsigned integer of any width (or null: nil).
    package mutating func unsigned(_ field: String) throws(AMQP10DecodeError) -> UInt64? {
        let code = try u8()
        switch code {
        case 0x40: return nil
        case 0x43, 0x44: return 0
        case 0x50, 0x52, 0x53: return UInt64(try u8())
        case 0x60: return UInt64(try integer(UInt16.self))
        case 0x70: return UInt64(try integer(UInt32.self))
        case 0x80: return try integer(UInt64.self)
        default:
            index -= 1
            throw AMQP10DecodeError(.unexpectedType, "\(field) has constructor 0x\(Self.hex(code)), not an integer")
        }
    }

    /// The next value as a uint field (a larger value is refused).
    package mutating func uint(_ field: String) throws(AMQP10DecodeError) -> UInt32? {
        guard let v = try unsigned(field) else { return nil }
        guard let narrow = UInt32(exactly: v) else {
            throw AMQP10DecodeError(.unexpectedType, "\(field) is \(v), more than a uint holds")
        }
        return narrow
    }

    /// The next value as a boolean field (null: nil).
    package mutating func bool(_ field: String) throws(AMQP10DecodeError) -> Bool? {
        let code = try u8()
        switch code {
        case 0x40: return nil
        case 0x41: return true
        case 0x42: return false
        case 0x56: return try u8() != 0
        default:
            throw AMQP10DecodeError(.unexpectedType, "\(field) has constructor 0x\(Self.hex(code)), not a boolean")
        }
    }

    /// The next value's bytes when it is binary (null: nil), in place.
    package mutating func binary(_ field: String) throws(AMQP10DecodeError) -> UnsafeRawBufferPointer? {
        let code = try u8()
        switch code {
        case 0x40: return nil
        case 0xa0, 0xb0: return UnsafeRawBufferPointer(rebasing: bytes[try variable(code)])
        default:
            throw AMQP10DecodeError(.unexpectedType, "\(field) has constructor 0x\(Self.hex(code)), not binary")
        }
    }

    /// The descriptor of a described value, as a code (symbolic descriptors are looked up); the reader is then at
    /// the described value.
    package mutating func descriptor() throws(AMQP10DecodeError) -> UInt64 {
        guard try u8() == 0x00 else {
            index -= 1
            throw AMQP10DecodeError(.unexpectedType, "not a described type (constructor 0x\(Self.hex(bytes[index])))")
        }
        let code = try u8()
        switch code {
        case 0x44: return 0
        case 0x53: return UInt64(try u8())
        case 0x80: return try integer(UInt64.self)
        case 0xa3, 0xb3:
            let range = try variable(code)
            let symbol = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            guard let known = AMQP10Descriptor(symbol: symbol) else {
                throw AMQP10DecodeError(.badDescriptor, "unknown descriptor symbol \(symbol)")
            }
            return known.rawValue
        default:
            throw AMQP10DecodeError(.badDescriptor, "descriptor constructor 0x\(Self.hex(code))")
        }
    }

    /// Enters a list (a composite's fields): its element count; the reader's end becomes the list's end, and
    /// `leave` restores it.
    package mutating func enterList() throws(AMQP10DecodeError) -> (count: Int, savedEnd: Int) {
        let code = try u8()
        switch code {
        case 0x45: return (0, end)
        case 0xc0, 0xd0:
            let (count, listEnd) = try compound(code)
            let saved = end
            end = listEnd
            return (count, saved)
        default:
            throw AMQP10DecodeError(.unexpectedType, "a composite's fields are in constructor 0x\(Self.hex(code))")
        }
    }

    /// Leaves a list entered with `enterList`, skipping what was not read.
    package mutating func leave(savedEnd: Int) {
        index = end
        end = savedEnd
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
    }
}
