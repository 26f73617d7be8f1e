// Connection.Start-Ok carries credentials in clear: PLAIN is "\0user\0password" (RFC 4616), AMQPLAIN a field
// table with LOGIN and PASSWORD. Reports keep the user name and never the password, unless asked.

package enum Credentials {
    package static let redactedMark = "<redacted>"

    /// The user name in a Start-Ok response, for PLAIN and AMQPLAIN.
    package static func user(mechanism: String, response: LongString) -> String? {
        switch mechanism {
        case "PLAIN":
            let parts = response.bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
            return parts.count == 3 ? String(decoding: parts[1], as: UTF8.self) : nil
        case "AMQPLAIN":
            return amqplain(response)?.string("LOGIN")
        default:
            return nil
        }
    }

    /// The method with every secret replaced: Start-Ok's password, Secure-Ok's response, Update-Secret's secret.
    package static func redacting(_ method: Method) -> Method {
        switch method {
        case .connectionStartOk(var startOk):
            startOk.response = redact(mechanism: startOk.mechanism, response: startOk.response)
            return .connectionStartOk(startOk)
        case .connectionSecureOk(var secureOk):
            secureOk.response = LongString(redactedMark)
            return .connectionSecureOk(secureOk)
        case .connectionUpdateSecret(var update):
            update.newSecret = LongString(redactedMark)
            return .connectionUpdateSecret(update)
        default:
            return method
        }
    }

    /// PLAIN keeps "\0user\0<redacted>"; AMQPLAIN keeps LOGIN; EXTERNAL has no secret; anything else is hidden whole.
    static func redact(mechanism: String, response: LongString) -> LongString {
        guard let user = user(mechanism: mechanism, response: response) else {
            return mechanism == "EXTERNAL" ? response : LongString(redactedMark)
        }
        if mechanism == "PLAIN" { return LongString([0] + Array(user.utf8) + [0] + Array(redactedMark.utf8)) }
        // AMQPLAIN: the same two entries, the password's value replaced.
        func entry(_ key: String, _ value: String) -> [UInt8] {
            [UInt8(key.utf8.count)] + Array(key.utf8) + [UInt8(ascii: "S")]
                + withUnsafeBytes(of: UInt32(value.utf8.count).bigEndian) { Array($0) } + Array(value.utf8)
        }
        return LongString(entry("LOGIN", String(user.prefix(255))) + entry("PASSWORD", redactedMark))
    }

    /// AMQPLAIN's response is a field table's entries without the table's length prefix.
    static func amqplain(_ response: LongString) -> FieldTable? {
        let framed = withUnsafeBytes(of: UInt32(response.bytes.count).bigEndian) { Array($0) } + response.bytes
        return framed.withUnsafeBytes { raw -> FieldTable? in
            var reader = FieldReader(raw)
            return try? reader.table()
        }
    }
}
