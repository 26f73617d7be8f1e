// What reassembly tells the layers above: per connection, in capture order, the opening, every packet,
// each direction's in-order bytes, the bytes that never arrived, half-closes, resets and the end.
import AMQPScopePackets

/// A connection's stable id: 1, 2, 3, ... in order of first packet.
public struct ConnectionID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The underlying value.
    public var rawValue: Int
    /// A value from its raw value.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Orders by value.
    public static func < (a: ConnectionID, b: ConnectionID) -> Bool { a.rawValue < b.rawValue }
    /// As reports print it.
    public var description: String { "#\(rawValue)" }
}

/// How amqpscope decided which end is the client.
public enum RoleEvidence: String, Hashable, Sendable {
    case syn = "SYN"  // the SYN's sender
    case synAck = "SYN-ACK"  // the SYN-ACK's receiver (the SYN itself was not captured)
    case serverPort = "server port"  // mid-stream: the end on a known AMQP port is the server
    case lowerPort = "lower port"  // mid-stream, no known port: the lower port is the server
}

/// Whether the capture saw the connection open.
public enum Opening: String, Hashable, Sendable {
    case handshake  // SYN seen
    case midstream  // picked up after the handshake
}

/// A TCP endpoint's state as far as the capture shows it (the names of RFC 9293's states).
public enum TCPState: String, Hashable, Sendable {
    case synSent = "SYN_SENT"
    case synReceived = "SYN_RECEIVED"
    case established = "ESTABLISHED"
    case finWait = "FIN_WAIT"  // sent its FIN; the peer has not
    case closeWait = "CLOSE_WAIT"  // got the peer's FIN; has not sent its own
    case lastAck = "LAST_ACK"  // got the peer's FIN, then sent its own
    case timeWait = "TIME_WAIT"  // sent its FIN, then got the peer's
    case closed = "CLOSED"  // sent or got an RST
}

/// A connection's identity: its id, its two ends, and how the client was told from the server.
public struct ConnectionInfo: Hashable, Sendable {
    /// Its id in the capture.
    public var id: ConnectionID
    /// The end that opened the connection (or is taken to have).
    public var client: Endpoint
    /// The end that accepted it.
    public var server: Endpoint
    /// Whether the handshake was captured.
    public var opening: Opening
    /// How the client was told from the server.
    public var roleEvidence: RoleEvidence

    /// The address and port of one side.
    public func endpoint(_ side: Side) -> Endpoint { side == .client ? client : server }
}

/// One TCP segment as the timeline needs it: every packet, pure ACKs and keepalives included.
public struct PacketInfo: Hashable, Sendable {
    /// The TCP flags.
    public var flags: TCPFlags
    /// The TCP sequence number.
    public var sequence: UInt32
    /// The TCP acknowledgment number.
    public var acknowledgment: UInt32
    /// Payload bytes on the wire (captured or not).
    public var payloadLength: Int
    /// Bytes on the wire for the whole frame (as tshark counts them).
    public var wireLength: Int
    /// The advertised receive window, scaled when both SYNs carried the window-scale option.
    public var window: UInt32
    /// All of its payload had been seen before.
    public var isRetransmission: Bool
    /// Part of its payload had been seen before, part is new.
    public var isPartialRetransmission: Bool
    /// It arrived ahead of a hole in the stream.
    public var isOutOfOrder: Bool
    /// A keepalive probe: one byte (or none) one below the next expected sequence number.
    public var isKeepalive: Bool
    /// It advertised a zero receive window.
    public var isZeroWindow: Bool { window == 0 && !flags.contains(.rst) && !flags.contains(.syn) }
}

/// Why bytes of a stream are missing.
public enum GapReason: String, Hashable, Sendable {
    case lost = "never captured"  // the segment never showed up
    case notCaptured = "cut by snap length"  // the packet was captured shorter than it was
    case bufferLimit = "buffer limit reached"  // out-of-order bytes hit a memory cap and the hole was skipped
}

/// What an RST meant to the side it reached.
public struct ResetInfo: Hashable, Sendable {
    /// Its sequence number is exactly the next one the receiver expects (RFC 5961: accepted at once).
    public var exact: Bool
    /// Its sequence number falls within the receiver's window (accepted, or answered with a challenge ACK).
    public var inWindow: Bool
    /// The sender's TCP state when it sent the RST.
    public var senderState: TCPState
    /// The receiver's state when the RST reached it: decides the error its socket returns.
    public var receiverState: TCPState
    /// Whether the receiver had already seen an RST from this sender (a repeated RST).
    public var repeated: Bool
}

/// Why amqpscope stopped following a connection.
public enum EndReason: String, Hashable, Sendable {
    case finished = "both sides sent FIN"
    case reset = "reset"
    case idle = "idle timeout"
    case replaced = "new connection on the same ports"
    case captureEnded = "still open when the capture ended"
    case evicted = "too many connections: oldest evicted"
}

package enum StreamEventKind {
    case opened(ConnectionInfo)
    case packet(PacketInfo)
    /// In-order bytes of one direction; the view is valid only during the sink call.
    case data(UnsafeRawBufferPointer)
    case gap(length: UInt64, reason: GapReason)
    case fin
    case reset(ResetInfo)
    /// A retransmitted copy of buffered bytes differed from the first copy (the first copy was kept).
    case overlapConflict(length: Int)
    /// Payload sent after this direction's own FIN.
    case dataAfterFIN(length: Int)
    case ended(EndReason)
}

/// One event. `offset` is the position in the direction's byte stream (for data, gap and fin).
package struct StreamEvent {
    package var connection: ConnectionID
    package var direction: Direction
    package var time: Timestamp
    package var packetNumber: Int
    package var offset: UInt64
    package var kind: StreamEventKind
}

/// Receives reassembly's events, in capture order.
package protocol StreamSink {
    mutating func consume(_ event: StreamEvent)
}
