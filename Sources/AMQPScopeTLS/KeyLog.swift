// The NSS key log format, as SSLKEYLOGFILE, Python's SSLContext.keylog_filename, curl and browsers write it:
// "LABEL <client random, 64 hex digits> <secret in hex>" per line, '#' comments. Parsed from text the caller read;
// the secrets are never printed.

/// TLS secrets by the client random of the handshake they belong to.
public struct KeyLog: Hashable, Sendable {
    /// Secrets per client random, by label (CLIENT_RANDOM, CLIENT_HANDSHAKE_TRAFFIC_SECRET, ...).
    var secrets: [[UInt8]: [String: [UInt8]]] = [:]

    /// Lines that were not key log entries (the text of the line is not kept).
    public private(set) var skippedLines = 0

    /// How many handshakes it has secrets for.
    public var handshakes: Int { secrets.count }

    /// An empty key log.
    public init() {}

    /// Parses key log text.
    public init(text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingPrefixWhitespace
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == 3, let random = Self.hex(fields[1]), random.count == 32,
                let secret = Self.hex(fields[2]), !secret.isEmpty
            else {
                skippedLines += 1
                continue
            }
            secrets[random, default: [:]][String(fields[0])] = secret
        }
    }

    /// Adds the entries of more key log text (a live capture re-reads the file as clients append to it).
    public mutating func merge(_ other: KeyLog) {
        for (random, labels) in other.secrets { secrets[random, default: [:]].merge(labels) { $1 } }
    }

    func secret(_ label: String, clientRandom: [UInt8]) -> [UInt8]? { secrets[clientRandom]?[label] }

    static func hex(_ text: Substring) -> [UInt8]? {
        guard text.utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 2)
        var high: UInt8?
        for c in text.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return out
    }
}

extension Substring {
    fileprivate var trimmingPrefixWhitespace: Substring { drop { $0 == " " || $0 == "\t" } }
}
