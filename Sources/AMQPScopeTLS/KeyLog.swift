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

    /// Parses key log text. Read as UTF-8 bytes: a key log of 5,000 handshakes is 400 KB, and reading it a
    /// Character at a time cost as much as decrypting 100 MB of its traffic.
    public init(text: String) {
        var text = text
        text.withUTF8 { bytes in
            var start = 0
            while start <= bytes.count {
                let (end, next) = Self.lineEnd(bytes, from: start)
                parseLine(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start..<end])))
                start = next
            }
        }
    }

    /// Where the line from `start` ends, and where the next one begins. Lines end as `Character.isNewline` says:
    /// LF, VT, FF, CR (or CR LF), NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR. Past the text, the next start is
    /// beyond its end.
    static func lineEnd(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (end: Int, next: Int) {
        var i = start
        while i < bytes.count {
            switch bytes[i] {
            case 0x0A, 0x0B, 0x0C: return (i, i + 1)
            case 0x0D: return (i, i + 1 < bytes.count && bytes[i + 1] == 0x0A ? i + 2 : i + 1)
            case 0xC2 where i + 1 < bytes.count && bytes[i + 1] == 0x85: return (i, i + 2)
            case 0xE2
            where i + 2 < bytes.count && bytes[i + 1] == 0x80 && (bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9):
                return (i, i + 3)
            default: i += 1
            }
        }
        return (bytes.count, bytes.count + 1)
    }

    /// One line: blank lines and '#' comments are passed over; anything but three fields (split on spaces, after
    /// leading spaces and tabs) with a 32-byte client random and a secret in hex is counted as skipped.
    private mutating func parseLine(_ line: UnsafeRawBufferPointer) {
        var from = 0
        while from < line.count && (line[from] == UInt8(ascii: " ") || line[from] == UInt8(ascii: "\t")) { from += 1 }
        if from == line.count || line[from] == UInt8(ascii: "#") { return }
        let fields = line[from...].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard fields.count == 3, let random = Self.hex(fields[1]), random.count == 32,
            let secret = Self.hex(fields[2]), !secret.isEmpty
        else {
            skippedLines += 1
            return
        }
        secrets[random, default: [:]][String(decoding: fields[0], as: UTF8.self)] = secret
    }

    /// Adds the entries of more key log text (a live capture re-reads the file as clients append to it).
    public mutating func merge(_ other: KeyLog) {
        for (random, labels) in other.secrets { secrets[random, default: [:]].merge(labels) { $1 } }
    }

    func secret(_ label: String, clientRandom: [UInt8]) -> [UInt8]? { secrets[clientRandom]?[label] }

    static func hex(_ text: Substring) -> [UInt8]? { hex(text.utf8) }

    static func hex<Digits: Collection<UInt8>>(_ digits: Digits) -> [UInt8]? {
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var high: UInt8?
        for c in digits {
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
