// Formatting shared by every report: times from packet timestamps (UTC, no Foundation, no clock), durations,
// byte counts, and making text from the capture safe to print.
import AMQPScopePackets

package enum Format {
    /// "2026-11-25 09:18:00.123456" (UTC).
    package static func time(_ t: Timestamp) -> String { t.utc(separator: UInt8(ascii: " "), zulu: false) }

    /// "2026-11-25T09:18:00.123456Z" (RFC 3339), for JSON.
    package static func rfc3339(_ t: Timestamp) -> String { t.utc(separator: UInt8(ascii: "T"), zulu: true) }

    /// Seconds relative to a start, "+12.345678s".
    package static func relative(_ t: Timestamp, from start: Timestamp) -> String {
        let delta = t.since(start)
        let sign = delta < 0 ? "-" : "+"
        let magnitude = delta < 0 ? -delta : delta
        return "\(sign)\(magnitude / 1_000_000_000).\(pad(magnitude % 1_000_000_000 / 1000, 6))s"
    }

    /// A duration in readable units: "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min".
    package static func duration(nanoseconds: Int64) -> String {
        var text = ""
        duration(nanoseconds: nanoseconds, into: &text)
        return text
    }

    /// `duration`'s words, written into `s`.
    package static func duration<S: TextSink & ~Copyable>(nanoseconds: Int64, into s: inout S) {
        let n = nanoseconds < 0 ? -nanoseconds : nanoseconds
        if n < 1_000_000 {
            s.write(n / 1000)
            s.write(" µs")
        } else if n < 1_000_000_000 {
            s.write(n / 1_000_000)
            s.write(" ms")
        } else if n < 60_000_000_000 {
            let tenths = (n + 50_000_000) / 100_000_000
            s.write(tenths / 10)
            s.write(".")
            s.write(tenths % 10)
            s.write(" s")
        } else {
            let seconds = n / 1_000_000_000
            if seconds < 3600 {
                s.write(seconds / 60)
                s.write(" min ")
                s.write(seconds % 60)
                s.write(" s")
            } else {
                s.write(seconds / 3600)
                s.write(" h ")
                s.write(seconds / 60 % 60)
                s.write(" min")
            }
        }
    }

    package static func pad(_ value: Int64, _ width: Int) -> String {
        let s = String(value)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// Text from the capture made safe for a terminal: control characters shown as escapes, length bounded.
    package static func safe(_ text: String, limit: Int = 200) -> String {
        // Most texts are short printable ASCII: returned as they are, after one pass over their bytes.
        var printable = true
        var bytes = 0
        for byte in text.utf8 {
            bytes += 1
            if byte < 0x20 || byte > 0x7e || bytes > limit {
                printable = false
                break
            }
        }
        if printable { return text }
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count >= limit {
                out += "…"
                break
            }
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

    /// "0.42 ms", "3.2 ms", "1.25 s": a latency in milliseconds, to three significant digits.
    package static func milliseconds(_ ms: Double) -> String {
        if ms >= 1000 { return String(format3(ms / 1000)) + " s" }
        return format3(ms) + " ms"
    }

    static func format3(_ v: Double) -> String {
        let digits = v >= 100 ? 0 : v >= 10 ? 1 : 2
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (v * scale).rounded() / scale
        var text = String(rounded)
        if digits == 0, text.hasSuffix(".0") { text.removeLast(2) }
        return text
    }

    /// Pads or cuts to a column width (for tables).
    package static func column(_ s: String, _ width: Int, right: Bool = false) -> String {
        if s.count >= width { return s }
        let fill = String(repeating: " ", count: width - s.count)
        return right ? fill + s : s + fill
    }
}
