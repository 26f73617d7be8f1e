// The plaintext TLS handshake messages amqpscope reads without keys: ClientHello and ServerHello (RFC 8446 section
// 4.1.2-4.1.3, RFC 5246 section 7.4.1), with the extensions that name the server, the application protocol and the
// version (server_name RFC 6066, ALPN RFC 7301, supported_versions and pre_shared_key RFC 8446 section 4.2).
import AMQPScopePackets

/// Handshake message types (RFC 8446 section 4).
package enum HandshakeType: UInt8 {
    case clientHello = 1
    case serverHello = 2
    case newSessionTicket = 4
    case certificate = 11
    case serverKeyExchange = 12
    case serverHelloDone = 14
    case clientKeyExchange = 16
    case finished = 20
    case keyUpdate = 24
}

/// What a ClientHello offers.
package struct ClientHello: Hashable, Sendable {
    package var random: [UInt8]
    package var sessionID: [UInt8]
    package var cipherSuites: [UInt16]
    package var serverName: String?
    package var alpn: [String]
    /// The versions offered in supported_versions (TLS 1.3 clients), newest first as sent.
    package var supportedVersions: [UInt16]
}

/// What a ServerHello chose.
package struct ServerHello: Hashable, Sendable {
    package var random: [UInt8]
    package var sessionID: [UInt8]
    package var cipherSuite: UInt16
    /// The negotiated version: supported_versions when present (TLS 1.3), else the legacy version field.
    package var version: UInt16
    /// TLS 1.3: the server accepted a pre-shared key (resumption).
    package var acceptedPreSharedKey: Bool
    /// RFC 8446 section 4.1.3: a ServerHello with this random is a HelloRetryRequest.
    package var isHelloRetryRequest: Bool
}

/// A cursor over a handshake message's bytes: every read checks what is left and fails softly.
struct HandshakeReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    var remaining: Int { bytes.count - position }

    mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { position += 2 }
        return bytes.integer(at: position)
    }

    mutating func u24() -> Int? {
        guard remaining >= 3 else { return nil }
        defer { position += 3 }
        return Int(bytes[position]) << 16 | Int(bytes.integer(at: position + 1, as: UInt16.self))
    }

    mutating func take(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, remaining >= count else { return nil }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<position + count])
    }

    /// A vector with a one- or two-byte length prefix.
    mutating func vector(lengthBytes: Int) -> UnsafeRawBufferPointer? {
        guard let length = lengthBytes == 1 ? u8().map(Int.init) : u16().map(Int.init) else { return nil }
        return take(length)
    }
}

enum HandshakeParsing {
    static let helloRetryRequestRandom: [UInt8] = [
        0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
        0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
    ]

    /// A ClientHello body (after the 4-byte handshake header), or nil when it is cut or inconsistent.
    static func clientHello(_ body: UnsafeRawBufferPointer) -> ClientHello? {
        var r = HandshakeReader(bytes: body)
        guard r.u16() != nil, let random = r.take(32), let session = r.vector(lengthBytes: 1),
            let suitesBytes = r.vector(lengthBytes: 2), r.vector(lengthBytes: 1) != nil
        else { return nil }
        var suites: [UInt16] = []
        var s = HandshakeReader(bytes: suitesBytes)
        while let suite = s.u16() { suites.append(suite) }
        var hello = ClientHello(
            random: Array(random), sessionID: Array(session), cipherSuites: suites, serverName: nil, alpn: [],
            supportedVersions: [])
        guard let extensions = r.vector(lengthBytes: 2) else { return hello }  // no extensions (old clients)
        var e = HandshakeReader(bytes: extensions)
        while let type = e.u16(), let data = e.vector(lengthBytes: 2) {
            var x = HandshakeReader(bytes: data)
            switch type {
            case 0:  // server_name: a list of (type, name); type 0 is a host name
                guard let list = x.vector(lengthBytes: 2) else { break }
                var l = HandshakeReader(bytes: list)
                while let nameType = l.u8(), let name = l.vector(lengthBytes: 2) {
                    if nameType == 0 { hello.serverName = String(decoding: name, as: UTF8.self) }
                }
            case 16:  // application_layer_protocol_negotiation
                guard let list = x.vector(lengthBytes: 2) else { break }
                var l = HandshakeReader(bytes: list)
                while let name = l.vector(lengthBytes: 1) { hello.alpn.append(String(decoding: name, as: UTF8.self)) }
            case 43:  // supported_versions: a one-byte-length list of versions
                guard let list = x.vector(lengthBytes: 1) else { break }
                var l = HandshakeReader(bytes: list)
                while let version = l.u16() { hello.supportedVersions.append(version) }
            default:
                break
            }
        }
        return hello
    }

    /// A ServerHello body, or nil when it is cut or inconsistent.
    static func serverHello(_ body: UnsafeRawBufferPointer) -> ServerHello? {
        var r = HandshakeReader(bytes: body)
        guard let legacyVersion = r.u16(), let random = r.take(32), let session = r.vector(lengthBytes: 1),
            let suite = r.u16(), r.u8() != nil
        else { return nil }
        var hello = ServerHello(
            random: Array(random), sessionID: Array(session), cipherSuite: suite, version: legacyVersion,
            acceptedPreSharedKey: false, isHelloRetryRequest: Array(random) == helloRetryRequestRandom)
        guard let extensions = r.vector(lengthBytes: 2) else { return hello }
        var e = HandshakeReader(bytes: extensions)
        while let type = e.u16(), let data = e.vector(lengthBytes: 2) {
            var x = HandshakeReader(bytes: data)
            switch type {
            case 43: if let version = x.u16() { hello.version = version }
            case 41: hello.acceptedPreSharedKey = true
            default: break
            }
        }
        return hello
    }
}

/// Joins one direction's plaintext handshake records into messages (a message may span records, and a record may
/// hold several), bounded by `TLSLimits.maximumHandshakeMessage`.
struct HandshakeAssembler {
    private var buffer: [UInt8] = []
    /// A message longer than the limit: skipped, and the rest of the direction's plaintext handshake is not read.
    private(set) var overflowed = false

    var bufferedBytes: Int { buffer.count }

    /// Adds a record's plaintext; calls `message` with each whole message (type, body).
    mutating func add(_ fragment: UnsafeRawBufferPointer, _ message: (UInt8, UnsafeRawBufferPointer) -> Void) {
        guard !overflowed else { return }
        buffer.append(contentsOf: fragment)
        var consumed = 0
        buffer.withUnsafeBytes { b in
            while b.count - consumed >= 4 {
                let length = Int(b[consumed + 1]) << 16 | Int(b.integer(at: consumed + 2, as: UInt16.self))
                if length > TLSLimits.maximumHandshakeMessage {
                    overflowed = true
                    return
                }
                guard b.count - consumed >= 4 + length else { return }
                message(b[consumed], UnsafeRawBufferPointer(rebasing: b[consumed + 4..<consumed + 4 + length]))
                consumed += 4 + length
            }
        }
        if overflowed { buffer = [] } else if consumed > 0 { buffer.removeFirst(consumed) }
    }

    mutating func reset() { buffer.removeAll(keepingCapacity: true) }
}
