// Formatting shared by every report: times from packet timestamps (UTC, no Foundation, no clock), durations,
// byte counts, and making text from the capture safe to print.
import AMQPScopePackets

public enum Format {
    /// "2026-11-25 09:18:00.123456" (UTC).
    public static func time(_ t: Timestamp) -> String { stamp(t, separator: UInt8(ascii: " "), zulu: false) }

    /// "2026-11-25T09:18:00.123456Z" (RFC 3339), for JSON.
    public static func rfc3339(_ t: Timestamp) -> String { stamp(t, separator: UInt8(ascii: "T"), zulu: true) }

    /// Formats into a fixed buffer: reports call this for every event, so it builds no intermediate strings.
    static func stamp(_ t: Timestamp, separator: UInt8, zulu: Bool) -> String {
        let nanos = t.nanoseconds
        let seconds = nanos >= 0 ? nanos / 1_000_000_000 : (nanos - 999_999_999) / 1_000_000_000
        let micros = (nanos - seconds * 1_000_000_000) / 1000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (y, m, d) = civil(fromDays: days)
        guard (0...9999).contains(y) else { return "\(y)-\(m)-\(d) \(secondOfDay)s" }
        return String(unsafeUninitializedCapacity: 27) { buffer in
            var i = 0
            func put(_ value: Int64, _ width: Int) {
                var v = value
                for k in stride(from: width - 1, through: 0, by: -1) {
                    buffer[i + k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                i += width
            }
            func put(_ byte: UInt8) { buffer[i] = byte; i += 1 }
            put(y, 4); put(UInt8(ascii: "-")); put(m, 2); put(UInt8(ascii: "-")); put(d, 2); put(separator)
            put(secondOfDay / 3600, 2); put(UInt8(ascii: ":")); put(secondOfDay / 60 % 60, 2); put(UInt8(ascii: ":"))
            put(secondOfDay % 60, 2); put(UInt8(ascii: ".")); put(micros, 6)
            if zulu { put(UInt8(ascii: "Z")) }
            return i
        }
    }

    /// Seconds relative to a start, "+12.345678s".
    public static func relative(_ t: Timestamp, from start: Timestamp) -> String {
        let delta = t.since(start)
        let sign = delta < 0 ? "-" : "+"
        let magnitude = delta < 0 ? -delta : delta
        return "\(sign)\(magnitude / 1_000_000_000).\(pad(magnitude % 1_000_000_000 / 1000, 6))s"
    }

    /// A duration in readable units: "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min".
    public static func duration(nanoseconds: Int64) -> String {
        let n = nanoseconds < 0 ? -nanoseconds : nanoseconds
        if n < 1_000_000 { return "\(n / 1000) µs" }
        if n < 1_000_000_000 { return "\(n / 1_000_000) ms" }
        if n < 60_000_000_000 {
            let tenths = (n + 50_000_000) / 100_000_000
            return "\(tenths / 10).\(tenths % 10) s"
        }
        let s = n / 1_000_000_000
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        return "\(s / 3600) h \(s / 60 % 60) min"
    }

    /// Seconds with three decimals, "12.345".
    public static func seconds(_ nanoseconds: Int64) -> String {
        let n = nanoseconds < 0 ? -nanoseconds : nanoseconds
        let millis = (n + 500_000) / 1_000_000
        return (nanoseconds < 0 ? "-" : "") + "\(millis / 1000).\(pad(millis % 1000, 3))"
    }

    public static func pad(_ value: Int64, _ width: Int) -> String {
        let s = String(value)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 to (year, month, day).
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    /// Text from the capture made safe for a terminal: control characters shown as escapes, length bounded.
    public static func safe(_ text: String, limit: Int = 200) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count >= limit { out += "…"; break }
            switch scalar.value {
            case 0x20..<0x7f, 0xa0...: out.unicodeScalars.append(scalar)
            case 0x0a: out += "\\n"
            case 0x0d: out += "\\r"
            case 0x09: out += "\\t"
            default:
                let hex = String(scalar.value, radix: 16)
                out += "\\x" + (hex.count < 2 ? "0" + hex : hex)
            }
            count += 1
        }
        return out
    }

    /// Pads or cuts to a column width (for tables).
    public static func column(_ s: String, _ width: Int, right: Bool = false) -> String {
        if s.count >= width { return s }
        let fill = String(repeating: " ", count: width - s.count)
        return right ? fill + s : s + fill
    }
}
