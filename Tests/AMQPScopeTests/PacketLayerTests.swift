import Testing

@testable import AMQPScopePackets

private func decode(_ bytes: [UInt8], _ link: LinkType) -> DecodedPacket {
    bytes.withUnsafeBytes { PacketDecoder.decode($0, linkType: link) }
}

private func segment(_ bytes: [UInt8], _ link: LinkType) -> TCPSegment? {
    if case .tcp(let s) = decode(bytes, link) { return s }
    return nil
}

@Suite("Packet layers") struct PacketLayerTests {
    /// A direction's value is changed in place through the subscripts (an addressor): a uniquely held array keeps
    /// its storage, a copy taken before is untouched, and each subscript reaches the half it names.
    @Test func perDirectionChangesInPlace() {
        var p = PerDirection(repeating: [Int]())
        p[.clientToServer].reserveCapacity(64)
        let storage = p.clientToServer.withUnsafeBufferPointer { $0.baseAddress }
        for i in 0..<32 { p[.clientToServer].append(i) }
        #expect(p.clientToServer.withUnsafeBufferPointer { $0.baseAddress } == storage)
        let before = p
        p[sentBy: .server].append(7)
        p[.serverToClient] += [8]
        p[sentBy: .client].removeAll()
        #expect(p.clientToServer.isEmpty)
        #expect(p.serverToClient == [7, 8])
        #expect(before.clientToServer == Array(0..<32))
        #expect(before.serverToClient.isEmpty)
        var counts = PerDirection(repeating: 0)
        for _ in 0..<1000 {
            counts[.clientToServer] += 1
            counts[sentBy: .client] += 2
            counts[sentBy: .server] -= 1
        }
        #expect(counts == PerDirection(clientToServer: 3000, serverToClient: -1000))
    }

    let tcpBytes = Build.tcp(
        sport: 40000, dport: 5672, seq: 1000, ack: 7, flags: [.psh, .ack], window: 512, payload: Array("hello".utf8))

    @Test func ethernetIPv4TCP() throws {
        let s = try #require(
            segment(
                Build.ethernet(payload: Build.ipv4(src: 0x0a00_0001, dst: 0x0a00_0002, payload: tcpBytes)), .ethernet))
        #expect(s.source.description == "10.0.0.1:40000")
        #expect(s.destination.description == "10.0.0.2:5672")
        #expect(s.sequence == 1000 && s.acknowledgment == 7 && s.window == 512)
        #expect(s.flags == [.psh, .ack])
        #expect(s.payloadLength == 5 && s.capturedPayloadLength == 5)
    }

    @Test func ethernetPaddingIsNotPayload() throws {
        // A minimum-size Ethernet frame carries padding after the IP packet; the IP length must bound the payload.
        let bare = Build.ethernet(payload: Build.ipv4(payload: Build.tcp(sport: 1, dport: 2, seq: 0, flags: [.ack])))
        let s = try #require(segment(bare + [0, 0, 0, 0, 0, 0], .ethernet))
        #expect(s.payloadLength == 0)
        #expect(s.capturedPayloadLength == 0)
    }

    @Test func stackedVLANTags() throws {
        let frame = Build.ethernet(
            etherType: 0x0800, vlanTags: [0x88a8, 0x8100], payload: Build.ipv4(payload: tcpBytes))
        let s = try #require(segment(frame, .ethernet))
        #expect(s.destination.port == 5672)
        // Nine stacked tags is past the limit.
        let hostile = Build.ethernet(
            etherType: 0x0800, vlanTags: Array(repeating: 0x8100, count: 9), payload: Build.ipv4(payload: tcpBytes))
        #expect(decode(hostile, .ethernet) == .malformed(Malformed(.vlan, "more than 8 stacked VLAN tags")))
    }

    @Test func linuxCookedV1AndV2() throws {
        let ip = Build.ipv4(payload: tcpBytes)
        let sll: [UInt8] = [0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0] + Build.be16(0x0800) + ip
        #expect(segment(sll, .linuxSLL)?.destination.port == 5672)
        let sll2: [UInt8] =
            Build.be16(0x0800) + [0, 0] + Build.be32(1) + [0, 1, 0, 6] + [1, 2, 3, 4, 5, 6, 0, 0] + ip
        #expect(segment(sll2, .linuxSLL2)?.destination.port == 5672)
        #expect(
            decode(Array(sll2.prefix(19)), .linuxSLL2)
                == .malformed(Malformed(.link, "Linux cooked v2 header shorter than 20 bytes")))
    }

    @Test func loopbackFamilyInEitherByteOrder() throws {
        let ip = Build.ipv4(payload: tcpBytes)
        #expect(segment(Build.le32(2) + ip, .null) != nil)
        #expect(segment(Build.be32(2) + ip, .null) != nil)
        #expect(segment(Build.be32(2) + ip, .loop) != nil)
        let ip6 = Build.ipv6(payload: tcpBytes)
        #expect(segment(Build.le32(30) + ip6, .null)?.source.description == "[::1]:40000")  // Darwin's AF_INET6
        #expect(segment(Build.be32(24) + ip6, .loop) != nil)
        #expect(decode(Build.le32(17) + ip, .null) == .other)
    }

    @Test func rawIP() throws {
        #expect(segment(Build.ipv4(payload: tcpBytes), .raw) != nil)
        #expect(segment(Build.ipv4(payload: tcpBytes), .rawDLT12) != nil)
        #expect(segment(Build.ipv6(payload: tcpBytes), .raw) != nil)
        #expect(
            decode([0x50, 1, 2, 3], .raw)
                == .malformed(Malformed(.link, "raw IP packet with IP version neither 4 nor 6")))
    }

    @Test func ipv4OptionsAndFragments() throws {
        let withOptions = Build.ipv4(options: [1, 1, 1, 0], payload: tcpBytes)  // NOPs + end of list
        #expect(segment(withOptions, .raw)?.payloadLength == 5)
        // More fragments follow.
        #expect(decode(Build.ipv4(flagsFragment: 0x2000, payload: tcpBytes), .raw) == .fragment(.ipv4))
        #expect(decode(Build.ipv4(flagsFragment: 0x0010, payload: tcpBytes), .raw) == .fragment(.ipv4))  // offset
        #expect(decode(Build.ipv4(proto: 17, payload: [0, 1, 0, 2, 0, 8, 0, 0]), .raw) == .other)
    }

    @Test func ipv6ExtensionHeaders() throws {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
        let hopByHop: [UInt8] = [60, 0, 1, 4, 0, 0, 0, 0]
        let destination: [UInt8] = [6, 1] + Array(repeating: 1, count: 14)
        let packet = Build.ipv6(next: 0, extensions: hopByHop + destination, payload: tcpBytes)
        let s = try #require(segment(packet, .raw))
        #expect(s.destination.port == 5672 && s.payloadLength == 5)
        // An atomic fragment header (offset 0, no more fragments) is passed through; a real fragment is skipped.
        #expect(segment(Build.ipv6(next: 44, extensions: [6, 0, 0, 0, 0, 0, 0, 1], payload: tcpBytes), .raw) != nil)
        #expect(
            decode(Build.ipv6(next: 44, extensions: [6, 0, 0, 1, 0, 0, 0, 1], payload: tcpBytes), .raw)
                == .fragment(.ipv6))
        // An extension header whose length runs past the payload.
        let runaway = Build.ipv6(next: 0, extensions: [6, 200, 0, 0, 0, 0, 0, 0], payload: tcpBytes)
        if case .malformed = decode(runaway, .raw) {} else { Issue.record("runaway extension header was accepted") }
    }

    @Test func ipv6AddressText() {
        #expect(IPAddress(ipv6High: 0x2001_0db8_0000_0000, low: 0x0000_0000_0000_0001).description == "2001:db8::1")
        #expect(IPAddress(ipv6High: 0, low: 0).description == "::")
        #expect(
            IPAddress(ipv6High: 0x2001_0db8_0001_0000, low: 0x0001_0000_0000_0001).description == "2001:db8:1:0:1::1")
        #expect(Endpoint(address: IPAddress(ipv6High: 0, low: 1), port: 5672).description == "[::1]:5672")
    }

    @Test func tcpOptions() throws {
        let options: [UInt8] = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7]
        let s = try #require(
            segment(Build.ipv4(payload: Build.tcp(sport: 1, dport: 2, seq: 0, flags: [.syn], options: options)), .raw))
        #expect(s.options.maximumSegmentSize == 1460)
        #expect(s.options.sackPermitted)
        #expect(s.options.timestampValue == 1 && s.options.timestampEcho == 2)
        #expect(s.options.windowScale == 7)
        #expect(!s.options.malformed)
        let bad: [UInt8] = [2, 9, 0, 0]  // MSS claiming 9 bytes
        let t = try #require(
            segment(Build.ipv4(payload: Build.tcp(sport: 1, dport: 2, seq: 0, flags: [.syn], options: bad)), .raw))
        #expect(t.options.malformed)
    }

    @Test func truncatedCaptureKeepsWirePayloadLength() throws {
        let frame = Build.ethernet(payload: Build.ipv4(payload: tcpBytes))
        let s = try #require(segment(Array(frame.prefix(frame.count - 3)), .ethernet))
        #expect(s.payloadLength == 5)
        #expect(s.capturedPayloadLength == 2)
    }

    /// Every prefix of valid packets, and garbage, at every layer: nothing traps, a prefix never yields more payload.
    @Test(arguments: [LinkType.ethernet, .linuxSLL, .linuxSLL2, .null, .raw])
    func everyPrefixIsSafe(link: LinkType) {
        let ip4 = Build.ipv4(
            options: [1, 1, 1, 1],
            payload: Build.tcp(sport: 1, dport: 2, seq: 3, flags: [.ack], options: [1, 1, 1, 0], payload: [1, 2, 3]))
        let ip6 = Build.ipv6(
            next: 0, extensions: [6, 0, 1, 4, 0, 0, 0, 0],
            payload: Build.tcp(sport: 1, dport: 2, seq: 3, flags: [.ack], payload: [9]))
        for ip in [ip4, ip6] {
            let etherType: UInt16 = ip[0] >> 4 == 4 ? 0x0800 : 0x86dd
            let packet: [UInt8]
            switch link {
            case .ethernet: packet = Build.ethernet(etherType: etherType, vlanTags: [0x8100], payload: ip)
            case .linuxSLL: packet = [0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0] + Build.be16(etherType) + ip
            case .linuxSLL2:
                packet = Build.be16(etherType) + [0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0] + ip
            case .null: packet = Build.le32(ip[0] >> 4 == 4 ? 2 : 10) + ip
            default: packet = ip
            }
            var sawTCP = false
            for length in 0...packet.count {
                if case .tcp(let s) = decode(Array(packet.prefix(length)), link) {
                    sawTCP = true
                    #expect(s.capturedPayloadLength <= s.payloadLength)
                    #expect(s.payloadOffset + s.capturedPayloadLength <= length)
                }
            }
            #expect(sawTCP)
        }
        var rng = SeededGenerator(seed: UInt64(link.rawValue))
        for _ in 0..<2000 {
            let garbage = (0..<Int.random(in: 0..<120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = decode(garbage, link)
        }
    }
}
