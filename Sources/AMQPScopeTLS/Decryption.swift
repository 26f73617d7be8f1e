// Decrypting TLS records with the secrets of a key log: TLS 1.3 (RFC 8446 section 7: traffic secrets, HKDF-Expand-
// Label, per-record nonces, key updates) and TLS 1.2 AEAD suites (RFC 5246 section 5 PRF and key expansion,
// RFC 5288 AES-GCM, RFC 7905 ChaCha20-Poly1305). The ciphers and HMAC are OpenSSL's libcrypto; nothing here is a
// cipher of its own. CBC suites are recognised and reported as not decrypted.
import AMQPScopePackets
import CCrypto

/// A suite's AEAD and hash, as decryption needs them.
package struct SuiteParameters {
    enum AEAD { case aes128GCM, aes256GCM, chacha20Poly1305 }
    enum Hash { case sha256, sha384 }
    var aead: AEAD
    var hash: Hash

    var keyLength: Int { aead == .aes128GCM ? 16 : 32 }
    var hashLength: Int { hash == .sha256 ? 32 : 48 }

    package static func of(_ suite: UInt16) -> SuiteParameters? {
        switch suite {
        case 0x1301, 0xC02B, 0xC02F, 0x009E, 0x009C: SuiteParameters(aead: .aes128GCM, hash: .sha256)
        case 0x1302, 0xC02C, 0xC030, 0x009F, 0x009D: SuiteParameters(aead: .aes256GCM, hash: .sha384)
        case 0x1303, 0xCCA8, 0xCCA9: SuiteParameters(aead: .chacha20Poly1305, hash: .sha256)
        default: nil
        }
    }
}

/// HMAC, HKDF-Expand (RFC 5869), HKDF-Expand-Label (RFC 8446 section 7.1) and the TLS 1.2 PRF (RFC 5246 section 5),
/// built on OpenSSL's HMAC.
enum KeySchedule {
    static func hmac(_ hash: SuiteParameters.Hash, key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let md = hash == .sha256 ? EVP_sha256() : EVP_sha384()
        let result = key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                HMAC(
                    md, k.baseAddress, Int32(k.count), d.bindMemory(to: UInt8.self).baseAddress, d.count, &out, &length)
            }
        }
        // A failed HMAC (it does not happen with these digests) gives a key no record opens with, never a hang.
        guard result != nil, length > 0 else { return [UInt8](repeating: 0, count: hash == .sha256 ? 32 : 48) }
        return Array(out[..<Int(length)])
    }

    static func expand(_ hash: SuiteParameters.Hash, secret: [UInt8], info: [UInt8], length: Int) -> [UInt8] {
        var out: [UInt8] = []
        var block: [UInt8] = []
        var counter: UInt8 = 1
        while out.count < length {
            block = hmac(hash, key: secret, data: block + info + [counter])
            out += block
            counter &+= 1
        }
        return Array(out[..<length])
    }

    static func expandLabel(_ hash: SuiteParameters.Hash, secret: [UInt8], label: String, length: Int) -> [UInt8] {
        let full = Array("tls13 \(label)".utf8)
        let info = [UInt8(length >> 8), UInt8(length & 0xff), UInt8(full.count)] + full + [0]
        return expand(hash, secret: secret, info: info, length: length)
    }

    static func prf(_ hash: SuiteParameters.Hash, secret: [UInt8], label: String, seed: [UInt8], length: Int) -> [UInt8]
    {
        let fullSeed = Array(label.utf8) + seed
        var out: [UInt8] = []
        var a = fullSeed
        while out.count < length {
            a = hmac(hash, key: secret, data: a)
            out += hmac(hash, key: secret, data: a + fullSeed)
        }
        return Array(out[..<length])
    }
}

/// One direction's record protection: an AEAD key, its IV, and the record sequence number.
package final class RecordKeys {
    let parameters: SuiteParameters
    let tls13: Bool
    private(set) var secret: [UInt8]
    private var key: [UInt8] = []
    private var iv: [UInt8] = []
    private(set) var sequence: UInt64 = 0
    private let context: OpaquePointer

    /// TLS 1.3: keys from a traffic secret.
    package init?(tls13Secret secret: [UInt8], parameters: SuiteParameters) {
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        self.context = context
        self.parameters = parameters
        self.secret = secret
        tls13 = true
        rekey()
    }

    /// TLS 1.2: a key and an IV (4 bytes of salt for AES-GCM, 12 for ChaCha20-Poly1305) from the key block.
    package convenience init?(tls12Key key: [UInt8], iv: [UInt8], parameters: SuiteParameters) {
        self.init(key: key, iv: iv, tls13: false, parameters: parameters)
    }

    /// A key and IV as they are (TLS 1.3 keys so made cannot be updated).
    package init?(key: [UInt8], iv: [UInt8], tls13: Bool, parameters: SuiteParameters) {
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        self.context = context
        self.parameters = parameters
        secret = []
        self.key = key
        self.iv = iv
        self.tls13 = tls13
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    private func rekey() {
        key = KeySchedule.expandLabel(parameters.hash, secret: secret, label: "key", length: parameters.keyLength)
        iv = KeySchedule.expandLabel(parameters.hash, secret: secret, label: "iv", length: 12)
        sequence = 0
        keyed = false
    }

    /// Sets the sequence number back (a failed open has used one).
    func rewind(to value: UInt64) { sequence = value }

    /// A record this direction sent was lost in a capture gap: it used a sequence number all the same.
    func skipRecord() { sequence &+= 1 }

    /// After whole records were lost in a gap, tries the next sequence numbers (at most `limit` lost records):
    /// returns how many were skipped when one opens the record, or nil (the sequence number is then unchanged).
    func openAfterLoss(
        _ header: RecordHeader, _ fragment: UnsafeRawBufferPointer, into out: inout [UInt8], limit: Int
    ) -> Int? {
        let base = sequence
        for lost in 1...max(1, limit) {
            sequence = base &+ UInt64(lost)
            if open(header, fragment, into: &out) { return lost }
        }
        sequence = base
        return nil
    }

    /// TLS 1.3 KeyUpdate: the next generation of this direction's traffic secret (RFC 8446 section 7.2).
    func update() {
        secret = KeySchedule.expandLabel(
            parameters.hash, secret: secret, label: "traffic upd", length: parameters.hashLength)
        rekey()
    }

    private var cipher: OpaquePointer? {
        switch parameters.aead {
        case .aes128GCM: EVP_aes_128_gcm()
        case .aes256GCM: EVP_aes_256_gcm()
        case .chacha20Poly1305: EVP_chacha20_poly1305()
        }
    }

    /// Decrypts one record's fragment, appending the plaintext to `out`; false when it does not authenticate.
    /// TLS 1.3: the plaintext still ends with the inner content type and padding.
    package func open(_ header: RecordHeader, _ fragment: UnsafeRawBufferPointer, into out: inout [UInt8]) -> Bool {
        let explicitNonce = !tls13 && parameters.aead != .chacha20Poly1305 ? 8 : 0
        guard fragment.count >= explicitNonce + 16, keyed || prepareContext() else { return false }
        let cipherLength = fragment.count - explicitNonce - 16
        let sequence = self.sequence
        self.sequence &+= 1
        // Nonce, additional data and tag live in one small temporary buffer: nothing is allocated per record.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 12 + 13 + 16) { scratch in
            let nonce = scratch.baseAddress!
            let aad = nonce + 12
            let tag = aad + 13
            if explicitNonce > 0 {
                for i in 0..<4 { nonce[i] = iv[i] }
                for i in 0..<8 { nonce[4 + i] = fragment[i] }
            } else {
                for i in 0..<12 { nonce[i] = iv[i] }
                for i in 0..<8 { nonce[4 + i] ^= UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(i))) }
            }
            var aadLength = 0
            if !tls13 {
                for i in 0..<8 { aad[i] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(i))) }
                aadLength = 8
            }
            // TLS 1.3: the record header as sent; TLS 1.2: type, version and the plaintext's length.
            let length = tls13 ? header.length : cipherLength
            aad[aadLength] = header.contentType
            aad[aadLength + 1] = UInt8(header.version >> 8)
            aad[aadLength + 2] = UInt8(header.version & 0xff)
            aad[aadLength + 3] = UInt8(truncatingIfNeeded: length >> 8)
            aad[aadLength + 4] = UInt8(truncatingIfNeeded: length)
            aadLength += 5
            for i in 0..<16 { tag[i] = fragment[fragment.count - 16 + i] }
            var written: Int32 = 0
            guard EVP_DecryptInit_ex(context, nil, nil, nil, nonce) == 1,
                EVP_DecryptUpdate(context, nil, &written, aad, Int32(aadLength)) == 1
            else { return false }
            let start = out.count
            if cipherLength > 0 {
                out.append(contentsOf: repeatElement(0, count: cipherLength))
                let input = fragment.baseAddress!.advanced(by: explicitNonce).assumingMemoryBound(to: UInt8.self)
                let ok = out.withUnsafeMutableBufferPointer { buffer in
                    EVP_DecryptUpdate(context, buffer.baseAddress! + start, &written, input, Int32(cipherLength)) == 1
                }
                guard ok else {
                    out.removeLast(cipherLength)
                    return false
                }
            }
            var final: Int32 = 0
            var none: UInt8 = 0  // AEAD ciphers write nothing at the end: the tag check is all Final does
            guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_SET_TAG, 16, tag) == 1,
                EVP_DecryptFinal_ex(context, &none, &final) == 1
            else {
                out.removeLast(out.count - start)
                return false
            }
            return true
        }
    }

    /// Whether the context holds the cipher and key (set once per key, not per record).
    private var keyed = false

    private func prepareContext() -> Bool {
        keyed =
            EVP_DecryptInit_ex(context, cipher, nil, nil, nil) == 1
            && EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_SET_IVLEN, 12, nil) == 1
            && EVP_DecryptInit_ex(context, nil, nil, key, nil) == 1
        return keyed
    }
}
