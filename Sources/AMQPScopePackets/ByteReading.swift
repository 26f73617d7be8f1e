// The one integer reader of every layer: packet headers, TLS records and AMQP frames are all read through it, as
// swift-nio reads every integer through ByteBuffer's `getInteger`.

extension UnsafeRawBufferPointer {
    /// The big-endian (network order) integer at `offset`. The caller has checked that `offset` and the integer's
    /// size lie within the view: every layer checks a length before it reads.
    @inlinable
    package func integer<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// The little-endian integer at `offset` (BSD loopback headers, pcap headers), with the same contract.
    @inlinable
    package func littleEndianInteger<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
