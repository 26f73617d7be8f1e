// Content headers: class, body size and the basic class's 14 properties selected by property flags.

/// The basic class's properties (AMQP 0-9-1 section 1.8.2, generated names in AMQPSpec.basicProperties).
public struct BasicProperties: Hashable, Sendable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: FieldTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?
    public var clusterID: String?
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

/// A named value decoded from the wire, such as a content property.
public struct NamedValue: Hashable, Sendable {
    /// The spec's name, such as "content-type".
    public var name: String
    public var value: ArgumentValue

    public init(_ name: String, _ value: ArgumentValue) {
        self.name = name
        self.value = value
    }
}

public struct ContentHeader: Hashable, Sendable {
    public var classID: UInt16
    public var weight: UInt16
    public var bodySize: UInt64
    public var propertyFlags: UInt16
    /// Decoded for the basic class (60); other classes keep only their flags.
    public var properties: BasicProperties

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
        guard classID == 60 else { return }
        if propertyFlags & 0x0001 != 0 && propertyFlags & 0x0002 != 0 {
            throw DecodeError(.badPropertyFlags, "property flag bit 1 set; basic has 14 properties")
        }
        func has(_ index: Int) -> Bool { propertyFlags & (UInt16(1) << (15 - index)) != 0 }
        guard decodeProperties else {
            // The same fields in the same order, checked and skipped.
            for index in 0..<14 where has(index) {
                switch index {
                case 2: try reader.skipTable()
                case 3, 4: _ = try reader.octet()
                case 9: _ = try reader.longlong()
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
        if has(8) { properties.messageID = try reader.shortString() }
        if has(9) { properties.timestamp = try reader.longlong() }
        if has(10) { properties.type = try reader.shortString() }
        if has(11) { properties.userID = try reader.shortString() }
        if has(12) { properties.appID = try reader.shortString() }
        if has(13) { properties.clusterID = try reader.shortString() }
    }
}
