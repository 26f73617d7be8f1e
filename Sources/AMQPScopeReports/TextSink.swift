// Where a description's words go: a String, for the reports read as text, or the bytes of a JSON string, escaped as
// they are written. One wording serves both. JSON used to build each description as a String and then escape it:
// the String's appends cost more than the rest of an event's object.

/// Takes a description piece by piece.
package protocol TextSink: ~Copyable {
    /// Text: the program's own words, or text from the capture made safe by `Format.safe` first, as for every
    /// report.
    mutating func write(_ text: String)
    /// A whole number in decimal, given as its magnitude and sign so that every width fits.
    mutating func writeInteger(magnitude: UInt64, negative: Bool)
}

extension TextSink where Self: ~Copyable {
    /// A whole number in decimal.
    @inline(__always) package mutating func write<I: BinaryInteger>(_ number: I) {
        writeInteger(magnitude: UInt64(number.magnitude), negative: number < 0)
    }

    /// A noun, with "s" after it when `count` is other than one.
    @inline(__always) package mutating func noun(_ word: String, count: Int) {
        write(word)
        if count != 1 { write("s") }
    }
}

extension String: TextSink {
    package mutating func write(_ text: String) { append(text) }
    package mutating func writeInteger(magnitude: UInt64, negative: Bool) {
        if negative { append("-") }
        append(String(magnitude))
    }
}

/// Written into JSON output, the pieces are the inside of a string: the caller writes its quotes.
extension JSONOutput: TextSink {
    package mutating func write(_ text: String) {
        var text = text
        text.withUTF8 { JSON.escapeContent($0, into: &self) }
    }
    package mutating func writeInteger(magnitude: UInt64, negative: Bool) {
        JSON.appendInteger(magnitude: magnitude, negative: negative, to: &self)
    }
}

extension JSONObjectWriter {
    /// A string member whose text `body` writes piece by piece, escaped as it goes.
    package mutating func text(_ key: StaticString, _ out: inout JSONOutput, _ body: (inout JSONOutput) -> Void) {
        self.key(key, &out)
        out.append(UInt8(ascii: "\""))
        body(&out)
        out.append(UInt8(ascii: "\""))
    }
}
