// One TLS connection: the handshake in clear (versions, cipher, server name, resumption), the record layer per
// direction, and alerts. Without keys, the application-data records tell the story, and the ones of exactly a
// heartbeat frame's encrypted size are inferred to be AMQP heartbeats; with a key log, records are decrypted and
// their application data goes to the AMQP codec.
import AMQPScopePackets

/// What the TLS layer tells the timeline, in capture order.
package struct TLSEvent {
    package enum Kind {
        case clientHello(ClientHello)
        case serverHello(ServerHello)
        case changeCipherSpec
        /// An alert in clear: level (1 warning, 2 fatal) and description (0 close_notify, ...).
        case alert(level: UInt8, description: UInt8)
        /// An alert record after the keys changed: its content is hidden. `inferred`: a TLS 1.3 application-data
        /// record of exactly an alert's encrypted length (2 + 1 + 16 bytes), taken to be one.
        case encryptedAlert(length: Int, inferred: Bool)
        /// Both sides finished the handshake (as far as record types and order show it), this long after the
        /// ClientHello (nanoseconds) when that was captured.
        case handshakeDone(after: Int64?)
        /// An application-data record after the handshake; `heartbeat` when its length is a heartbeat's.
        case applicationData(length: Int, heartbeat: Bool)
        case malformed(reason: String, skipped: UInt64)
        case cutRecord(contentType: UInt8, length: Int)
        case synchronized(skipped: UInt64)
    }
    package var direction: Direction
    package var time: Timestamp
    package var packetNumber: Int
    package var kind: Kind
}

/// Where a decrypted record's application data ends in the plaintext buffer, which way it went and which packet
/// completed its record.
package struct PlaintextPiece {
    package var direction: Direction
    package var end: Int
    package var time: Timestamp
    package var packetNumber: Int
    /// Plaintext bytes lost with a record cut by a capture gap (the piece then carries no bytes).
    package var gap: UInt64 = 0
}

/// Receives the TLS layer's events.
package protocol TLSSink {
    mutating func consume(_ event: TLSEvent)
}

/// An alert as the capture shows it.
public struct TLSAlert: Hashable, Sendable {
    /// Which way it travelled.
    public var direction: Direction
    /// When it was sent.
    public var time: Timestamp
    /// The packet that carried it.
    public var packetNumber: Int
    /// 1 warning, 2 fatal; nil when the alert was encrypted.
    public var level: UInt8?
    /// The alert description (0 close_notify, 40 handshake_failure, ...); nil when encrypted.
    public var description: UInt8?
    /// Not seen as an alert record but inferred: a TLS 1.3 record of exactly an alert's encrypted length.
    public var inferred: Bool

    /// "close_notify", "encrypted alert", or "alert-sized record (inferred)".
    public var name: String {
        description.map(TLSNames.alert) ?? (inferred ? "alert-sized record (inferred)" : "encrypted alert")
    }
}

/// What the TLS layer learned about a connection.
public struct TLSSummary: Hashable, Sendable {
    /// The negotiated version (0x0303 TLS 1.2, 0x0304 TLS 1.3), when the ServerHello was captured.
    public var version: UInt16?
    /// The negotiated cipher suite's IANA code, when the ServerHello was captured.
    public var cipherSuite: UInt16?
    /// The server name the client asked for (SNI).
    public var serverName: String?
    /// Application protocols the client offered (ALPN).
    public var alpn: [String] = []
    /// Cipher suites the client offered.
    public var offeredCipherSuites = 0
    /// The server resumed an earlier session (TLS 1.2: it echoed the session id; TLS 1.3: it accepted a PSK).
    public var resumed = false
    /// The ClientHello's time and packet.
    public var helloTime: Timestamp?
    /// The ClientHello's packet.
    public var helloPacket = 0
    /// When both sides had finished the handshake, as record types and order show it.
    public var handshakeDoneTime: Timestamp?
    /// Records per direction, of every type.
    public var records = PerDirection(repeating: 0)
    /// Application-data records after the handshake, per direction.
    public var applicationRecords = PerDirection(repeating: 0)
    /// Application-data records of a heartbeat frame's encrypted length, per direction; nil when the cipher is not
    /// known (so the length is not either).
    public var inferredHeartbeats: PerDirection<Int>?
    /// Alerts, in order.
    public var alerts: [TLSAlert] = []
    /// Records or bytes that were not TLS, and records cut by capture gaps.
    public var malformedRecords = 0
    /// The plaintext was decrypted with a key log.
    public var decrypted = false
    /// Why decryption failed or was not tried, when a key log was given.
    public var decryptError: String?

    /// "1.2", "1.3", or nil.
    public var versionName: String? { version.map(TLSNames.version) }
    /// The cipher suite's IANA name, such as "TLS_AES_128_GCM_SHA256".
    public var cipherName: String? { cipherSuite.map(TLSNames.cipherSuite) }
    /// The length of the record that carries one 8-byte AMQP heartbeat frame (or 1.0 empty frame) with this
    /// version and cipher, or nil when it cannot be known (CBC suites pad to a block; unknown cipher).
    public var heartbeatRecordLength: Int? {
        guard let version, let cipherSuite else { return nil }
        return TLSNames.recordLength(plaintext: 8, version: version, cipherSuite: cipherSuite)
    }
}

package struct TLSSession {
    package private(set) var summary = TLSSummary()
    private var parsers: PerDirection<RecordParser>
    private var handshake = PerDirection(repeating: HandshakeAssembler())
    /// Whether each direction's records are encrypted now.
    private var encrypted = PerDirection(repeating: false)
    /// TLS 1.2: each direction's Finished (its first encrypted handshake record) was seen.
    private var finished = PerDirection(repeating: false)
    private var clientSessionID: [UInt8] = []
    /// Stream bytes lost (gaps and skipped bytes) since each direction's last decrypted record.
    private var lostBytes = PerDirection<UInt64>(repeating: 0)
    /// Whether the client's protocol header (its first heartbeat-length record) has passed.
    private var clientHeaderSeen = false
    private var time = Timestamp(nanoseconds: 0)
    private var packetNumber = 0
    /// Secrets to decrypt with, when a key log was given.
    private var keyLog: KeyLog?
    /// The key log may still grow (a live capture re-reads it): protected records wait for their secrets.
    private let keysMayArrive: Bool
    private var serverHello: ServerHello?
    /// Protected records held until their secrets appear in a growing key log (bounded by `TLSLimits`).
    private var waiting: [(header: RecordHeader, body: [UInt8], direction: Direction, time: Timestamp, packet: Int)] =
        []
    private var waitingBytes = 0
    private var awaitingKeys = false
    private var clientRandom: [UInt8] = []
    /// Each direction's record protection while decrypting.
    private var keys = PerDirection<RecordKeys?>(repeating: nil)
    /// TLS 1.2: the keys each direction switches to at its ChangeCipherSpec.
    private var pendingKeys = PerDirection<RecordKeys?>(repeating: nil)
    /// TLS 1.3: whether each direction has switched to its application traffic secret (once, at its Finished).
    private var applicationKeysSet = PerDirection(repeating: false)
    private var suite: SuiteParameters?
    /// Decrypted application data not yet taken by the codec, per direction.
    private var plaintext: [UInt8] = []
    /// Where each decrypted record's application data ends in `plaintext`, with its direction and packet.
    private var pieces: [PlaintextPiece] = []
    private var scratch: [UInt8] = []

    /// `fromStart`: the capture saw the connection open, so the stream starts at a record boundary. With a key log,
    /// records are decrypted and their application data handed to the codec (`swapPlaintext`); `keysMayArrive`
    /// when the key log is still growing (live).
    package init(fromStart: Bool, keyLog: KeyLog? = nil, keysMayArrive: Bool = false) {
        parsers = PerDirection(repeating: RecordParser(fromStart: fromStart))
        self.keyLog = keyLog
        self.keysMayArrive = keysMayArrive
        if !fromStart {
            encrypted = PerDirection(repeating: true)
            if keyLog != nil { summary.decryptError = "the capture joined after the handshake: no client random" }
        }
    }

    /// Swaps the application data decrypted since the last call, and where each record's piece ends, with
    /// `bytes` and `pieces` (emptied ones whose capacity is kept: neither side allocates per packet); false when
    /// there is none. The pieces are in the order their records arrived, each with its own direction and packet.
    package mutating func swapPlaintext(_ bytes: inout [UInt8], _ pieces: inout [PlaintextPiece]) -> Bool {
        guard !self.pieces.isEmpty else { return false }
        swap(&plaintext, &bytes)
        swap(&self.pieces, &pieces)
        return true
    }

    /// Sets up decryption from the key log once the ServerHello has chosen the version and suite; false when the key
    /// log lacks the secrets (said in `decryptError`).
    @discardableResult
    private mutating func prepareDecryption(_ hello: ServerHello) -> Bool {
        guard let keyLog else { return false }
        guard let parameters = SuiteParameters.of(hello.cipherSuite) else {
            summary.decryptError = "\(TLSNames.cipherSuite(hello.cipherSuite)) is not decrypted (only AEAD suites are)"
            return false
        }
        suite = parameters
        if hello.version == 0x0304 {
            guard let client = keyLog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET", clientRandom: clientRandom),
                let server = keyLog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", clientRandom: clientRandom)
            else {
                summary.decryptError = "the key log has no TLS 1.3 secrets for this connection's client random"
                return false
            }
            keys.clientToServer = RecordKeys(tls13Secret: client, parameters: parameters)
            keys.serverToClient = RecordKeys(tls13Secret: server, parameters: parameters)
        } else {
            guard let master = keyLog.secret("CLIENT_RANDOM", clientRandom: clientRandom) else {
                summary.decryptError = "the key log has no CLIENT_RANDOM secret for this connection's client random"
                return false
            }
            let ivLength = parameters.aead == .chacha20Poly1305 ? 12 : 4
            let block = KeySchedule.prf(
                parameters.hash, secret: master, label: "key expansion", seed: hello.random + clientRandom,
                length: 2 * parameters.keyLength + 2 * ivLength)
            let k = parameters.keyLength
            pendingKeys.clientToServer = RecordKeys(
                tls12Key: Array(block[0..<k]), iv: Array(block[2 * k..<2 * k + ivLength]), parameters: parameters)
            pendingKeys.serverToClient = RecordKeys(
                tls12Key: Array(block[k..<2 * k]), iv: Array(block[2 * k + ivLength..<2 * k + 2 * ivLength]),
                parameters: parameters)
        }
        summary.decryptError = nil
        return true
    }

    /// A record that needs keys: TLS 1.3 application-data records, and in TLS 1.2 everything after the sender's CCS.
    private func isProtected(_ header: RecordHeader, _ direction: Direction) -> Bool {
        if header.contentType == ContentType.changeCipherSpec.rawValue { return false }
        if summary.version == 0x0304 { return header.contentType == ContentType.applicationData.rawValue }
        return encrypted[direction]
    }

    /// Holds a protected record until its secrets appear; past the bound, gives up and tells the records' story.
    private mutating func wait<S: TLSSink>(
        _ header: RecordHeader, _ body: UnsafeRawBufferPointer, _ direction: Direction, into sink: inout S
    ) {
        waiting.append((header, Array(body), direction, time, packetNumber))
        waitingBytes += body.count
        if waitingBytes > TLSLimits.maximumWaitingBytes || waiting.count > TLSLimits.maximumWaitingRecords {
            awaitingKeys = false
            summary.decryptError =
                "the key log had no secrets for this connection's client random by the time "
                + "\(waiting.count) protected records had arrived"
            replayWaiting(into: &sink)
        }
    }

    /// Gives up waiting for secrets (the decoders' memory cap was reached): the held records are told without keys.
    package mutating func shed<S: TLSSink>(into sink: inout S) {
        guard awaitingKeys else { return }
        awaitingKeys = false
        summary.decryptError = "stopped waiting for this connection's secrets: the decoders' memory cap was reached"
        replayWaiting(into: &sink)
    }

    /// The connection ended: records still waiting for secrets are told without keys.
    package mutating func finish<S: TLSSink>(into sink: inout S) {
        retryWaiting(into: &sink)
        guard awaitingKeys else { return }
        awaitingKeys = false
        summary.decryptError = "the key log had no secrets for this connection's client random by its end"
        replayWaiting(into: &sink)
    }

    /// Tries the (possibly re-read) key log again; once the secrets are there, the held records are decrypted.
    private mutating func retryWaiting<S: TLSSink>(into sink: inout S) {
        guard awaitingKeys, let hello = serverHello, prepareDecryption(hello) else { return }
        awaitingKeys = false
        // TLS 1.2: the directions whose CCS already passed switch to their keys now.
        for direction in Direction.allCases where encrypted[direction] && summary.version != 0x0304 {
            if let pending = pendingKeys[direction] {
                keys[direction] = pending
                pendingKeys[direction] = nil
            }
        }
        replayWaiting(into: &sink)
    }

    private mutating func replayWaiting<S: TLSSink>(into sink: inout S) {
        let held = waiting
        waiting = []
        waitingBytes = 0
        let (now, packet) = (time, packetNumber)
        for record in held {
            time = record.time
            packetNumber = record.packet
            record.body.withUnsafeBytes { body in
                if keys[record.direction] != nil, let type = decrypt(record.header, body, record.direction) {
                    decrypted(type, record.direction, into: &sink)
                } else {
                    self.record(record.header, body, record.direction, into: &sink)
                }
            }
        }
        (time, packetNumber) = (now, packet)
    }

    /// Decrypts a protected record and returns its (inner) content type: application data is left in the direction's
    /// plaintext for the codec, other content in `scratch`. Nil (after saying why, once) when it does not
    /// authenticate: the connection then falls back to the record story.
    private mutating func decrypt(_ header: RecordHeader, _ body: UnsafeRawBufferPointer, _ direction: Direction)
        -> UInt8?
    {
        guard let keys = keys[direction] else { return nil }
        // Decrypted straight after the direction's pending plaintext: application data stays there for the codec;
        // anything else moves to `scratch`.
        let start = plaintext.count
        var opened = keys.open(header, body, into: &plaintext)
        if !opened && lostBytes[direction] > 0 {
            // Whole records were lost in a gap (their headers too, so the parser could not count them): the
            // sequence numbers they used are found by trying the next few.
            let sequenceBefore = keys.sequence &- 1
            let overhead = 5 + 16 + (keys.tls13 ? 1 : (keys.parameters.aead == .chacha20Poly1305 ? 0 : 8))
            keys.rewind(to: sequenceBefore)
            if let lost = keys.openAfterLoss(header, body, into: &plaintext, limit: TLSLimits.maximumLostRecords) {
                opened = true
                let lostPlaintext = max(0, Int(lostBytes[direction]) - lost * overhead)
                if applicationKeysSet[direction] || !keys.tls13, lostPlaintext > 0 {
                    pieces.append(
                        PlaintextPiece(
                            direction: direction, end: start, time: time, packetNumber: packetNumber,
                            gap: UInt64(lostPlaintext)))
                }
            }
        }
        lostBytes[direction] = 0
        guard opened else {
            summary.decryptError =
                "could not decrypt from record \(summary.records[direction]) \(direction): authentication failed "
                + "(a key log of another session, or a cut record)"
            self.keys[direction] = nil
            pendingKeys[direction] = nil
            return nil
        }
        summary.decrypted = true
        var type = header.contentType
        if keys.tls13 {
            // TLSInnerPlaintext: content, the real content type, zero padding (RFC 8446 section 5.2).
            while plaintext.count > start, plaintext.last == 0 { plaintext.removeLast() }
            guard plaintext.count > start else { return nil }
            type = plaintext.removeLast()
        }
        if type != ContentType.applicationData.rawValue {
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: plaintext[start...])
            plaintext.removeSubrange(start...)
        } else if plaintext.count > start {
            if let last = pieces.last, last.direction == direction, last.packetNumber == packetNumber, last.gap == 0 {
                pieces[pieces.count - 1].end = plaintext.count
            } else {
                pieces.append(
                    PlaintextPiece(direction: direction, end: plaintext.count, time: time, packetNumber: packetNumber))
            }
        }
        return type
    }

    /// A decrypted record: application data (already in the plaintext) counted, alerts named, handshake messages
    /// (in `scratch`) followed (Finished switches TLS 1.3 to the application secrets, KeyUpdate to the next generation).
    private mutating func decrypted<S: TLSSink>(_ type: UInt8, _ direction: Direction, into sink: inout S) {
        switch ContentType(rawValue: type) {
        case .applicationData:
            summary.applicationRecords[direction] += 1
        case .alert where scratch.count == 2:
            summary.alerts.append(
                TLSAlert(
                    direction: direction, time: time, packetNumber: packetNumber, level: scratch[0],
                    description: scratch[1], inferred: false))
            emit(.alert(level: scratch[0], description: scratch[1]), direction, into: &sink)
        case .handshake:
            var at = 0
            // Only whole messages in this record are acted on (a message split across records is not read).
            while at + 4 <= scratch.count {
                let messageType = scratch[at]
                let length = Int(scratch[at + 1]) << 16 | Int(scratch[at + 2]) << 8 | Int(scratch[at + 3])
                guard at + 4 + length <= scratch.count else { break }
                at += 4 + length
                guard keys[direction]?.tls13 == true else {
                    if messageType == HandshakeType.finished.rawValue { finishedTLS12(direction, into: &sink) }
                    continue
                }
                if messageType == HandshakeType.finished.rawValue, !applicationKeysSet[direction] {
                    switchToApplicationKeys(direction, into: &sink)
                } else if messageType == HandshakeType.keyUpdate.rawValue {
                    keys[direction]?.update()
                }
            }
        default:
            break
        }
    }

    /// TLS 1.3: a direction's Finished; its records switch to the application traffic secret, looked up in the key
    /// log as it is now (a client writes it after the handshake secrets, RFC 8446 section 7.1).
    private mutating func switchToApplicationKeys<S: TLSSink>(_ direction: Direction, into sink: inout S) {
        applicationKeysSet[direction] = true
        let label = direction == .clientToServer ? "CLIENT_TRAFFIC_SECRET_0" : "SERVER_TRAFFIC_SECRET_0"
        guard let parameters = suite, let secret = keyLog?.secret(label, clientRandom: clientRandom) else {
            summary.decryptError = "the key log has no \(label) for this connection's client random"
            keys = PerDirection(repeating: nil)
            return
        }
        keys[direction] = RecordKeys(tls13Secret: secret, parameters: parameters)
        if direction == .clientToServer && summary.handshakeDoneTime == nil {
            summary.handshakeDoneTime = time
            emit(.handshakeDone(after: summary.helloTime.map { time.since($0) }), direction, into: &sink)
        }
    }

    /// TLS 1.2: a direction's Finished; the handshake is done when both have sent theirs.
    private mutating func finishedTLS12<S: TLSSink>(_ direction: Direction, into sink: inout S) {
        guard !finished[direction] else { return }
        finished[direction] = true
        if finished[direction.reversed] && summary.handshakeDoneTime == nil {
            summary.handshakeDoneTime = time
            emit(.handshakeDone(after: summary.helloTime.map { time.since($0) }), direction, into: &sink)
        }
    }

    /// Bytes the TLS layer holds for this connection.
    /// A mutating getter, read in place (see ConnectionDecoder.bufferedBytes): a session is large.
    package var bufferedBytes: Int {
        mutating get {
            waitingBytes + parsers[.clientToServer].bufferedBytes + parsers[.serverToClient].bufferedBytes
                + handshake[.clientToServer].bufferedBytes + handshake[.serverToClient].bufferedBytes
        }
    }

    /// A newer key log (a live capture re-reads the file as clients append to it).
    package mutating func update(keyLog newer: KeyLog) { keyLog = newer }

    package mutating func data<S: TLSSink>(
        _ bytes: UnsafeRawBufferPointer, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        if awaitingKeys { retryWaiting(into: &sink) }
        self.time = time
        self.packetNumber = packetNumber
        var parser = parsers[direction]
        parsers[direction] = RecordParser(fromStart: false)
        parser.feed(bytes) { output in handle(output, direction, into: &sink) }
        parsers[direction] = parser
    }

    package mutating func gap<S: TLSSink>(
        _ length: UInt64, direction: Direction, time: Timestamp, packetNumber: Int, into sink: inout S
    ) {
        self.time = time
        self.packetNumber = packetNumber
        handshake[direction].reset()
        if keys[direction] != nil { lostBytes[direction] += length }
        var parser = parsers[direction]
        parsers[direction] = RecordParser(fromStart: false)
        parser.gap(length) { output in handle(output, direction, into: &sink) }
        parsers[direction] = parser
    }

    private func emit<S: TLSSink>(_ kind: TLSEvent.Kind, _ direction: Direction, into sink: inout S) {
        sink.consume(TLSEvent(direction: direction, time: time, packetNumber: packetNumber, kind: kind))
    }

    private mutating func handle<S: TLSSink>(_ output: RecordOutput, _ direction: Direction, into sink: inout S) {
        switch output {
        case .record(let header, let body, _):
            summary.records[direction] += 1
            if awaitingKeys && isProtected(header, direction) {
                wait(header, body, direction, into: &sink)
                return
            }
            if keys[direction] != nil, header.contentType != ContentType.changeCipherSpec.rawValue,
                keys[direction]?.tls13 == false || header.contentType == ContentType.applicationData.rawValue
            {
                if let type = decrypt(header, body, direction) {
                    decrypted(type, direction, into: &sink)
                    return
                }
            }
            record(header, body, direction, into: &sink)
        case .cutRecord(let header, _):
            summary.records[direction] += 1
            summary.malformedRecords += 1
            emit(.cutRecord(contentType: header.contentType, length: header.length), direction, into: &sink)
            // While decrypting, the lost record still took a sequence number; the codec is told its plaintext is
            // missing (its length less the AEAD's overhead, as far as the header shows it).
            if let keys = keys[direction], isProtected(header, direction) {
                keys.skipRecord()
                // Only application data feeds the codec: a lost handshake record is no gap in the AMQP stream.
                let application =
                    keys.tls13
                    ? applicationKeysSet[direction] : header.contentType == ContentType.applicationData.rawValue
                guard application else { break }
                let overhead = 16 + (keys.tls13 ? 1 : (keys.parameters.aead == .chacha20Poly1305 ? 0 : 8))
                pieces.append(
                    PlaintextPiece(
                        direction: direction, end: plaintext.count, time: time, packetNumber: packetNumber,
                        gap: UInt64(max(0, header.length - overhead))))
            }
        case .malformed(let reason, _, let skipped):
            summary.malformedRecords += 1
            emit(.malformed(reason: reason, skipped: skipped), direction, into: &sink)
        case .synchronized(_, let skipped):
            lostBytes[direction] += skipped
            emit(.synchronized(skipped: skipped), direction, into: &sink)
        }
    }

    private mutating func record<S: TLSSink>(
        _ header: RecordHeader, _ body: UnsafeRawBufferPointer, _ direction: Direction, into sink: inout S
    ) {
        switch ContentType(rawValue: header.contentType) {
        case .changeCipherSpec:
            emit(.changeCipherSpec, direction, into: &sink)
            // Before a ServerHello (after a HelloRetryRequest) a CCS is TLS 1.3's compatibility one (RFC 8446 D.4).
            if let version = summary.version, version != 0x0304 {
                encrypted[direction] = true
                if let pending = pendingKeys[direction] {
                    keys[direction] = pending
                    pendingKeys[direction] = nil
                }
            }
        case .alert:
            // TLS 1.3 protects every record as outer type 23: an outer alert is always in clear (RFC 8446 5.2).
            if (summary.version == 0x0304 || !encrypted[direction]) && body.count == 2 {
                summary.alerts.append(
                    TLSAlert(
                        direction: direction, time: time, packetNumber: packetNumber, level: body[0],
                        description: body[1], inferred: false))
                emit(.alert(level: body[0], description: body[1]), direction, into: &sink)
            } else {
                summary.alerts.append(
                    TLSAlert(
                        direction: direction, time: time, packetNumber: packetNumber, level: nil, description: nil,
                        inferred: false))
                emit(.encryptedAlert(length: header.length, inferred: false), direction, into: &sink)
            }
        case .handshake:
            if encrypted[direction] {
                // TLS 1.2: the first encrypted handshake record is the sender's Finished.
                if summary.version != 0x0304 && !finished[direction] {
                    finished[direction] = true
                    if finished[direction.reversed] && summary.handshakeDoneTime == nil {
                        summary.handshakeDoneTime = time
                        emit(.handshakeDone(after: summary.helloTime.map { time.since($0) }), direction, into: &sink)
                    }
                }
                return
            }
            var messages: [(UInt8, [UInt8])] = []
            handshake[direction].add(body) { type, message in messages.append((type, Array(message))) }
            for (type, message) in messages { handshakeMessage(type, message, direction, into: &sink) }
        case .applicationData:
            if summary.handshakeDoneTime == nil && summary.version == 0x0304 {
                // TLS 1.3 hides the rest of the handshake in application-data records. A client record of an
                // alert's length is an alert (a client that rejects the server's certificate says so here); the
                // client's first record long enough for a Finished (4 + hash + 1 + 16 bytes) ends its handshake.
                if direction == .clientToServer {
                    if header.length == TLSNames.alertRecordLength13 {
                        summary.alerts.append(
                            TLSAlert(
                                direction: direction, time: time, packetNumber: packetNumber, level: nil,
                                description: nil, inferred: true))
                        emit(.encryptedAlert(length: header.length, inferred: true), direction, into: &sink)
                    } else if header.length >= 4 + (SuiteParameters.of(summary.cipherSuite ?? 0)?.hashLength ?? 32) + 17
                    {
                        summary.handshakeDoneTime = time
                        emit(.handshakeDone(after: summary.helloTime.map { time.since($0) }), direction, into: &sink)
                    }
                }
                return
            }
            if summary.handshakeDoneTime == nil && summary.helloTime != nil { return }
            if summary.version == 0x0304, header.length == TLSNames.alertRecordLength13 {
                summary.alerts.append(
                    TLSAlert(
                        direction: direction, time: time, packetNumber: packetNumber, level: nil, description: nil,
                        inferred: true))
                emit(.encryptedAlert(length: header.length, inferred: true), direction, into: &sink)
                return
            }
            summary.applicationRecords[direction] += 1
            // The client's first record of a heartbeat's length is its 8-byte protocol header ("AMQP" and the
            // version, in 0-9-1 and 1.0 alike): a client cannot heartbeat before it has sent it.
            var heartbeat = summary.heartbeatRecordLength == header.length
            if heartbeat && direction == .clientToServer && !clientHeaderSeen && summary.helloTime != nil {
                clientHeaderSeen = true
                heartbeat = false
            }
            if heartbeat { summary.inferredHeartbeats?[direction] += 1 }
            emit(.applicationData(length: header.length, heartbeat: heartbeat), direction, into: &sink)
        case .heartbeat, nil:
            break
        }
    }

    private mutating func handshakeMessage<S: TLSSink>(
        _ type: UInt8, _ message: [UInt8], _ direction: Direction, into sink: inout S
    ) {
        switch HandshakeType(rawValue: type) {
        case .clientHello where direction == .clientToServer:
            guard let hello = message.withUnsafeBytes({ HandshakeParsing.clientHello($0) }) else { return }
            if summary.helloTime == nil {
                summary.helloTime = time
                summary.helloPacket = packetNumber
            }
            summary.serverName = hello.serverName
            summary.alpn = hello.alpn
            summary.offeredCipherSuites = hello.cipherSuites.count
            clientSessionID = hello.sessionID
            clientRandom = hello.random
            emit(.clientHello(hello), direction, into: &sink)
        case .serverHello where direction == .serverToClient:
            guard let hello = message.withUnsafeBytes({ HandshakeParsing.serverHello($0) }) else { return }
            emit(.serverHello(hello), direction, into: &sink)
            guard !hello.isHelloRetryRequest else { return }
            summary.version = hello.version
            summary.cipherSuite = hello.cipherSuite
            if summary.heartbeatRecordLength != nil { summary.inferredHeartbeats = PerDirection(repeating: 0) }
            serverHello = hello
            if !prepareDecryption(hello) && keysMayArrive && keyLog != nil
                && SuiteParameters.of(hello.cipherSuite) != nil
            {
                awaitingKeys = true
            }
            if hello.version == 0x0304 {
                summary.resumed = hello.acceptedPreSharedKey
                // Everything after the ServerHello is encrypted, in both directions (CCS aside).
                encrypted = PerDirection(repeating: true)
            } else {
                summary.resumed = !hello.sessionID.isEmpty && hello.sessionID == clientSessionID
            }
        default:
            break
        }
    }
}
