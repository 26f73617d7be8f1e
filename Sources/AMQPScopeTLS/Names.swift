// Names and sizes from the IANA TLS registries: versions, the cipher suites AMQP brokers and clients negotiate, alert
// descriptions, and how many bytes a cipher adds to a record.

/// Names for TLS codes, as the IANA registries spell them.
public enum TLSNames {
    /// "1.0", "1.1", "1.2", "1.3" (0x0301-0x0304), "SSL 3.0", or the code.
    public static func version(_ code: UInt16) -> String {
        switch code {
        case 0x0300: "SSL 3.0"
        case 0x0301: "1.0"
        case 0x0302: "1.1"
        case 0x0303: "1.2"
        case 0x0304: "1.3"
        default: "0x" + String(code, radix: 16)
        }
    }

    /// A cipher suite's IANA name, or "0xNNNN" for one amqpscope does not know.
    public static func cipherSuite(_ code: UInt16) -> String { suites[code]?.name ?? "0x" + hex4(code) }

    /// An alert description's name (RFC 8446 section 6), or its number.
    public static func alert(_ description: UInt8) -> String {
        switch description {
        case 0: "close_notify"
        case 10: "unexpected_message"
        case 20: "bad_record_mac"
        case 22: "record_overflow"
        case 40: "handshake_failure"
        case 42: "bad_certificate"
        case 43: "unsupported_certificate"
        case 44: "certificate_revoked"
        case 45: "certificate_expired"
        case 46: "certificate_unknown"
        case 47: "illegal_parameter"
        case 48: "unknown_ca"
        case 49: "access_denied"
        case 50: "decode_error"
        case 51: "decrypt_error"
        case 70: "protocol_version"
        case 71: "insufficient_security"
        case 80: "internal_error"
        case 86: "inappropriate_fallback"
        case 90: "user_canceled"
        case 109: "missing_extension"
        case 110: "unsupported_extension"
        case 112: "unrecognized_name"
        case 116: "certificate_required"
        case 120: "no_application_protocol"
        default: "alert \(description)"
        }
    }

    /// How a suite protects records.
    enum Protection {
        /// An AEAD with a tag of 16 bytes; `explicitNonce` bytes precede the ciphertext in TLS 1.2 (8 for AES-GCM,
        /// 0 for ChaCha20-Poly1305).
        case aead(explicitNonce: Int)
        /// CBC with a MAC: records are padded to the block, so a length says little.
        case cbc
    }

    static let suites: [UInt16: (name: String, protection: Protection)] = [
        0x1301: ("TLS_AES_128_GCM_SHA256", .aead(explicitNonce: 0)),
        0x1302: ("TLS_AES_256_GCM_SHA384", .aead(explicitNonce: 0)),
        0x1303: ("TLS_CHACHA20_POLY1305_SHA256", .aead(explicitNonce: 0)),
        0xC02B: ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", .aead(explicitNonce: 8)),
        0xC02C: ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", .aead(explicitNonce: 8)),
        0xC02F: ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", .aead(explicitNonce: 8)),
        0xC030: ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", .aead(explicitNonce: 8)),
        0xCCA8: ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", .aead(explicitNonce: 0)),
        0xCCA9: ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", .aead(explicitNonce: 0)),
        0x009E: ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", .aead(explicitNonce: 8)),
        0x009F: ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", .aead(explicitNonce: 8)),
        0x009C: ("TLS_RSA_WITH_AES_128_GCM_SHA256", .aead(explicitNonce: 8)),
        0x009D: ("TLS_RSA_WITH_AES_256_GCM_SHA384", .aead(explicitNonce: 8)),
        0xC013: ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", .cbc),
        0xC014: ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", .cbc),
        0xC027: ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", .cbc),
        0xC028: ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", .cbc),
        0xC009: ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", .cbc),
        0xC00A: ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", .cbc),
        0x002F: ("TLS_RSA_WITH_AES_128_CBC_SHA", .cbc),
        0x0035: ("TLS_RSA_WITH_AES_256_CBC_SHA", .cbc),
        0x003C: ("TLS_RSA_WITH_AES_128_CBC_SHA256", .cbc),
        0x003D: ("TLS_RSA_WITH_AES_256_CBC_SHA256", .cbc),
    ]

    /// The record length (the header's length field) that carries `plaintext` bytes of application data with this
    /// version and suite, without padding; nil for CBC suites and unknown ones.
    static func recordLength(plaintext: Int, version: UInt16, cipherSuite: UInt16) -> Int? {
        guard case .aead(let explicitNonce)? = suites[cipherSuite]?.protection else { return nil }
        // TLS 1.3 (RFC 8446 section 5.2): the content type byte is inside, the nonce is implicit, the tag is 16.
        // TLS 1.2 (RFC 5288, RFC 7905): the explicit nonce (AES-GCM) precedes the ciphertext, the tag is 16.
        return version == 0x0304 ? plaintext + 1 + 16 : explicitNonce + plaintext + 16
    }

    /// A TLS 1.3 record that carries a 2-byte alert: 2 + 1 (content type) + 16 (tag).
    static let alertRecordLength13 = 2 + 1 + 16

    static func hex4(_ code: UInt16) -> String {
        let digits = String(code, radix: 16, uppercase: true)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }
}
