// Content headers: class, body size and the basic class's 14 properties selected by property flags.

/// The basic class's properties (AMQP 0-9-1 section 1.8.2, generated names in AMQPSpec.basicProperties).
public struct BasicProperties: Hashable, Sendable {
    /// The properties present, out of line: nil when none is present or they were not decoded. A content header is
    /// copied along the codec's path for every message, and fourteen inline optionals made it (and every frame, and
    /// every timeline entry) 248 bytes; now the common case is one word and allocates nothing.
    private var storage: Storage?

    private struct Fields: Hashable {
        var contentType: String?
        var contentEncoding: String?
        var headers: FieldTable?
        var deliveryMode: UInt8?
        var priority: UInt8?
        var correlationID: String?
        var replyTo: String?
        var expiration: String?
        var messageID: String?
        var timestamp: UInt64?
        var type: String?
        var userID: String?
        var appID: String?
        var clusterID: String?
    }

    /// Shared between copies until one of them changes (copy on write).
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private subscript<T>(_ field: WritableKeyPath<Fields, T?>) -> T? {
        get { storage?.fields[keyPath: field] }
        set {
            if storage == nil {
                guard newValue != nil else { return }
                storage = Storage(Fields())
            } else if !isKnownUniquelyReferenced(&storage) {
                storage = Storage(storage!.fields)
            }
            storage!.fields[keyPath: field] = newValue
        }
    }

    /// Equal when every property is: by value, whether or not the two share their storage.
    public static func == (a: BasicProperties, b: BasicProperties) -> Bool {
        a.storage === b.storage || (a.storage?.fields ?? Fields()) == (b.storage?.fields ?? Fields())
    }

    /// Hashes the properties' values, as `==` compares them.
    public func hash(into hasher: inout Hasher) { hasher.combine(storage?.fields ?? Fields()) }

    /// The `content-type` property, when present.
    public var contentType: String? {
        get { self[\.contentType] }
        set { self[\.contentType] = newValue }
    }
    /// The `content-encoding` property, when present.
    public var contentEncoding: String? {
        get { self[\.contentEncoding] }
        set { self[\.contentEncoding] = newValue }
    }
    /// The `headers` property, when present.
    public var headers: FieldTable? {
        get { self[\.headers] }
        set { self[\.headers] = newValue }
    }
    /// The `delivery-mode` property (1 transient, 2 persistent), when present.
    public var deliveryMode: UInt8? {
        get { self[\.deliveryMode] }
        set { self[\.deliveryMode] = newValue }
    }
    /// The `priority` property, when present.
    public var priority: UInt8? {
        get { self[\.priority] }
        set { self[\.priority] = newValue }
    }
    /// The `correlation-id` property, when present.
    public var correlationID: String? {
        get { self[\.correlationID] }
        set { self[\.correlationID] = newValue }
    }
    /// The `reply-to` property, when present.
    public var replyTo: String? {
        get { self[\.replyTo] }
        set { self[\.replyTo] = newValue }
    }
    /// The `expiration` property, when present.
    public var expiration: String? {
        get { self[\.expiration] }
        set { self[\.expiration] = newValue }
    }
    /// The `message-id` property, when present.
    public var messageID: String? {
        get { self[\.messageID] }
        set { self[\.messageID] = newValue }
    }
    /// The `timestamp` property (seconds since the epoch), when present.
    public var timestamp: UInt64? {
        get { self[\.timestamp] }
        set { self[\.timestamp] = newValue }
    }
    /// The `type` property, when present.
    public var type: String? {
        get { self[\.type] }
        set { self[\.type] = newValue }
    }
    /// The `user-id` property, when present.
    public var userID: String? {
        get { self[\.userID] }
        set { self[\.userID] = newValue }
    }
    /// The `app-id` property, when present.
    public var appID: String? {
        get { self[\.appID] }
        set { self[\.appID] = newValue }
    }
    /// The `cluster-id` property, when present.
    public var clusterID: String? {
        get { self[\.clusterID] }
        set { self[\.clusterID] = newValue }
    }
    /// The defaults.
    public init() {}

    /// Present properties by their spec names, for reports.
    public var present: [NamedValue] {
        var out: [NamedValue] = []
        if let contentType { out.append(NamedValue("content-type", .shortString(contentType))) }
        if let contentEncoding { out.append(NamedValue("content-encoding", .shortString(contentEncoding))) }
        if let headers { out.append(NamedValue("headers", .table(headers))) }
        if let deliveryMode { out.append(NamedValue("delivery-mode", .octet(deliveryMode))) }
        if let priority { out.append(NamedValue("priority", .octet(priority))) }
        if let correlationID { out.append(NamedValue("correlation-id", .shortString(correlationID))) }
        if let replyTo { out.append(NamedValue("reply-to", .shortString(replyTo))) }
        if let expiration { out.append(NamedValue("expiration", .shortString(expiration))) }
        if let messageID { out.append(NamedValue("message-id", .shortString(messageID))) }
        if let timestamp { out.append(NamedValue("timestamp", .timestamp(timestamp))) }
        if let type { out.append(NamedValue("type", .shortString(type))) }
        if let userID { out.append(NamedValue("user-id", .shortString(userID))) }
        if let appID { out.append(NamedValue("app-id", .shortString(appID))) }
        if let clusterID { out.append(NamedValue("cluster-id", .shortString(clusterID))) }
        return out
    }
}

/// A message-id's first 15 bytes, held inline: how a report names a message that came back. It used to be a String,
/// made for every message, retained and released along the codec's and the flow's paths, and allocated when the id
/// was longer than 15 bytes (for the "…" after them); the text is now made only when a report names the message.
public struct MessageIDPrefix: Hashable, Sendable {
    /// Up to 15 bytes, then a byte with their count, and its top bit when the id was longer. Two words, not a
    /// SIMD16, whose 16-byte alignment would make a content header larger than a cache line.
    private var bytes: (UInt64, UInt64) = (0, 0)

    /// The first bytes of `id`, whose whole length is `length`.
    package init(_ id: UnsafeRawBufferPointer, length: Int) {
        let kept = min(15, id.count)
        withUnsafeMutableBytes(of: &bytes) { storage in
            if kept > 0 { storage.copyMemory(from: UnsafeRawBufferPointer(rebasing: id[..<kept])) }
            storage[15] = UInt8(kept) | (length > 15 ? 0x80 : 0)
        }
    }

    /// The bytes kept as UTF-8 text (an ill-formed sequence shown as U+FFFD), "…" after them when the id was longer.
    public var text: String {
        withUnsafeBytes(of: bytes) { storage in
            let prefix = String(decoding: storage.prefix(Int(storage[15] & 0x7f)), as: UTF8.self)
            return storage[15] & 0x80 != 0 ? prefix + "…" : prefix
        }
    }

    /// Equal when the bytes kept, their count and whether the id was longer are.
    public static func == (a: MessageIDPrefix, b: MessageIDPrefix) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1
    }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.0)
        hasher.combine(bytes.1)
    }
}

/// How a message is known when it comes back: its message-id's digest (64-bit FNV-1a) and first bytes, together so
/// that a content header holds one optional of them, not two.
struct MessageID: Hashable, Sendable {
    var digest: UInt64
    var prefix: MessageIDPrefix
}

/// A named value decoded from the wire, such as a content property.
public struct NamedValue: Hashable, Sendable {
    /// The spec's name, such as "content-type".
    public var name: String
    /// Its value.
    public var value: ArgumentValue

    /// A named value.
    public init(_ name: String, _ value: ArgumentValue) {
        self.name = name
        self.value = value
    }
}

/// A content header frame (AMQP 0-9-1 section 4.2.6.1).
public struct ContentHeader: Hashable, Sendable {
    /// The class of the content-carrying method (60, basic).
    public var classID: UInt16
    /// Unused; always 0.
    public var weight: UInt16
    /// The body's total size.
    public var bodySize: UInt64
    /// Which properties are present.
    public var propertyFlags: UInt16
    /// Decoded for the basic class (60); other classes keep only their flags.
    public var properties: BasicProperties
    /// How the message is known when it comes back (redeliveries), made even when properties are not decoded.
    var messageID: MessageID?
    /// A digest of the message-id property.
    public var messageIDDigest: UInt64? { messageID?.digest }
    /// The message-id's first 15 bytes ("…" after them when it is longer).
    public var messageIDPrefix: MessageIDPrefix? { messageID?.prefix }

    /// With `decodeProperties` false the properties are checked (lengths, table structure) but not made into
    /// values: `properties` stays empty. Analysis that shows no properties skips their cost per message.
    init(from reader: inout FieldReader, decodeProperties: Bool = true) throws(DecodeError) {
        classID = try reader.short()
        weight = try reader.short()
        bodySize = try reader.longlong()
        var flags = try reader.short()
        propertyFlags = flags
        // Bit 0 set means another flags word follows; 0-9-1 classes use one, so extra words must be empty.
        while flags & 1 != 0 {
            flags = try reader.short()
            if flags & 0xfffe != 0 { throw DecodeError(.badPropertyFlags, "properties beyond the 15th are set") }
        }
        properties = BasicProperties()
        messageID = nil
        guard classID == 60 else { return }
        if propertyFlags & 0x0001 != 0 && propertyFlags & 0x0002 != 0 {
            throw DecodeError(.badPropertyFlags, "property flag bit 1 set; basic has 14 properties")
        }
        func has(_ index: Int) -> Bool { propertyFlags & (UInt16(1) << (15 - index)) != 0 }
        guard decodeProperties else {
            // The same fields in the same order, checked and skipped: only the properties present are visited, each
            // found from the highest flag left (property 0 is bit 15).
            var present = propertyFlags & 0xfffc
            while present != 0 {
                let index = present.leadingZeroBitCount
                present ^= 0x8000 >> UInt16(index)
                switch index {
                case 2: try reader.skipTable()
                case 3, 4: _ = try reader.octet()
                case 9: _ = try reader.longlong()
                case 8: messageID = try reader.messageID()
                default: try reader.skipShortString()
                }
            }
            return
        }
        if has(0) { properties.contentType = try reader.shortString() }
        if has(1) { properties.contentEncoding = try reader.shortString() }
        if has(2) { properties.headers = try reader.table() }
        if has(3) { properties.deliveryMode = try reader.octet() }
        if has(4) { properties.priority = try reader.octet() }
        if has(5) { properties.correlationID = try reader.shortString() }
        if has(6) { properties.replyTo = try reader.shortString() }
        if has(7) { properties.expiration = try reader.shortString() }
        if has(8) {
            let id = try reader.shortString()
            properties.messageID = id
            var utf8 = id
            messageID = utf8.withUTF8 {
                MessageID(
                    digest: FieldReader.digest(UnsafeRawBufferPointer($0)),
                    prefix: MessageIDPrefix(UnsafeRawBufferPointer($0), length: $0.count))
            }
        }
        if has(9) { properties.timestamp = try reader.longlong() }
        if has(10) { properties.type = try reader.shortString() }
        if has(11) { properties.userID = try reader.shortString() }
        if has(12) { properties.appID = try reader.shortString() }
        if has(13) { properties.clusterID = try reader.shortString() }
    }
}
