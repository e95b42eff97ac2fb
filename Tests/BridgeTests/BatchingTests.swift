@testable import Bridge
import MQTTCodec
import NIOCore
import Testing

@Suite("Inline framing and per-burst output batches")
struct BatchingTests {
    /// CONNECT (3.1.1, client id "c"), PUBLISH QoS 0 "a/b" "hi", PINGREQ.
    let stream: [UInt8] = [0x10, 0x0D, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x63]
        + [0x30, 0x07, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x68, 0x69]
        + [0xC0, 0x00]

    @Test("Packets split at every byte come out whole, in order, and only incomplete bytes are kept")
    func framesAcrossReads() throws {
        for split in 0...stream.count {
            var framer = InlineFramer(MQTTFrameDecoder(configuration: .server()))
            var frames: [MQTTFrame] = []
            for piece in [Array(stream[..<split]), Array(stream[split...])] {
                framer.append(ByteBuffer(bytes: piece))
                while let frame = try framer.next() { frames.append(frame) }
                framer.compact()
            }
            #expect(frames.map(\.type) == [.connect, .publish, .pingreq], "split at \(split)")
            #expect(frames.map { Array($0.bytes.readableBytesView) }.reduce([], +) == stream)
            #expect(framer.bufferedBytes == 0)
        }
        var framer = InlineFramer(MQTTFrameDecoder(configuration: .server()))
        framer.append(ByteBuffer(bytes: stream[..<20]))
        while try framer.next() != nil {}
        framer.compact()
        #expect(framer.bufferedBytes == 5)  // the first 5 bytes of the PUBLISH
    }

    @Test("An incomplete packet kept between reads is a copy: the read buffer is not held (NIOSSL reuses it)")
    func keepsNoReadBuffer() throws {
        var framer = InlineFramer(MQTTFrameDecoder(configuration: .server()))
        let read = ByteBuffer(bytes: stream[..<20])
        var frames: [MQTTFrame] = []
        framer.feed(read, while: { true }, onFrame: { frames.append($0) }, onError: { Issue.record("\($0)") })
        #expect(frames.map(\.type) == [.connect])
        #expect(framer.bufferedBytes == 5)
        /// Whether `kept` points into the memory of `read`.
        func shares(_ kept: ByteBuffer, _ read: ByteBuffer) -> Bool {
            let start = UInt(bitPattern: kept.withVeryUnsafeBytes { $0.baseAddress })
            return read.withVeryUnsafeBytes { bytes in
                let base = UInt(bitPattern: bytes.baseAddress)
                return start >= base && start < base + UInt(bytes.count)
            }
        }
        #expect(!shares(framer.pendingBytes, read))
        // A read consumed whole leaves nothing of it behind either.
        let whole = ByteBuffer(bytes: stream[20...])
        framer.feed(whole, while: { true }, onFrame: { frames.append($0) }, onError: { Issue.record("\($0)") })
        #expect(frames.map(\.type) == [.connect, .publish, .pingreq])
        #expect(!shares(framer.pendingBytes, whole))
    }

    @Test("A framing error is thrown once; nothing is framed after it")
    func errorStops() throws {
        var framer = InlineFramer(MQTTFrameDecoder(configuration: .server()))
        // The first packet must be CONNECT: a PUBLISH first is a protocol error.
        framer.append(ByteBuffer(bytes: stream[15...]))
        #expect(throws: MQTTCodecError.self) { try framer.next() }
        #expect(framer.failed)
        framer.append(ByteBuffer(bytes: stream))
        #expect(try framer.next() == nil)
    }

    @Test("Small packets are joined into one buffer; a large one is written as is, after what was batched")
    func batches() {
        var batch = OutputBatch()
        var written: [[UInt8]] = []
        batch.append(ByteBuffer(bytes: [1, 2])) { written.append(Array($0.readableBytesView)) }
        batch.append(ByteBuffer(bytes: [3])) { written.append(Array($0.readableBytesView)) }
        #expect(written.isEmpty)
        let large = [UInt8](repeating: 9, count: OutputBatch.directWriteSize)
        batch.append(ByteBuffer(bytes: large)) { written.append(Array($0.readableBytesView)) }
        #expect(written == [[1, 2, 3], large])
        #expect(batch.take() == nil)
        batch.append(ByteBuffer(bytes: [4])) { written.append(Array($0.readableBytesView)) }
        #expect(batch.take().map { Array($0.readableBytesView) } == [4])
        #expect(batch.take() == nil)
    }

    @Test("A burst of only a large packet still ends in a flush; an empty burst does not")
    func largeOnlyBurstNeedsFlush() {
        var batch = OutputBatch()
        var written: [[UInt8]] = []
        let large = [UInt8](repeating: 7, count: OutputBatch.directWriteSize + 1)
        batch.append(ByteBuffer(bytes: large)) { written.append(Array($0.readableBytesView)) }
        #expect(batch.endBurst { written.append(Array($0.readableBytesView)) } == true)
        #expect(written == [large])
        #expect(batch.endBurst { written.append(Array($0.readableBytesView)) } == false)
        batch.append(ByteBuffer(bytes: [5])) { written.append(Array($0.readableBytesView)) }
        #expect(batch.endBurst { written.append(Array($0.readableBytesView)) } == true)
        #expect(written == [large, [5]])
    }

    @Test("A burst is acknowledged at once only if it began packets and all were QoS 0 PUBLISHes")
    func unansweredBurst() {
        var burst = UnansweredBurst()
        var ends: [Bool] = []
        ends.append(burst.end())  // nothing began (e.g. the middle of a large body)
        burst.packet(0x30); burst.packet(0x31)
        ends.append(burst.end())
        burst.packet(0x30); burst.packet(0x32)  // a QoS 1 PUBLISH gets a PUBACK
        ends.append(burst.end())
        burst.packet(0xC0)  // PINGREQ
        ends.append(burst.end())
        burst.packet(0x30)  // reset after each end
        ends.append(burst.end())
        #expect(ends == [false, true, false, false, true])
    }

    @Test("TCP_QUICKACK is set after the first unanswered burst, and again only after a write to the socket")
    func quickAckArming() {
        var arming = QuickAckArming()
        var asked: [Bool] = []
        asked.append(arming.needsArming())  // first burst: set
        asked.append(arming.needsArming())  // nothing written since: the kernel still ACKs at once
        asked.append(arming.needsArming())
        arming.wrote()  // sending data can put the kernel back into delayed-ACK mode
        asked.append(arming.needsArming())
        arming.wrote(); arming.wrote()
        asked.append(arming.needsArming())
        asked.append(arming.needsArming())
        #expect(asked == [true, false, false, true, true, false])
    }

    @Test("Site A follows a local client's raw bytes: a burst of QoS 0 PUBLISHes is found across any cut")
    func scannedBursts() {
        // CONNECT (bytes 0–14), then two QoS 0 PUBLISHes (15–23, 24–32), cut once anywhere.
        let publish: [UInt8] = [0x30, 0x07, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x68, 0x69]
        let bytes = Array(stream[..<15]) + publish + publish
        for cut in 1..<bytes.count {
            var scanner = MQTTPacketBoundaryScanner()
            var burst = UnansweredBurst()
            var results: [Bool] = []
            for piece in [Array(bytes[..<cut]), Array(bytes[cut...])] {
                scanner.scan(ByteBuffer(bytes: piece)) { burst.packet($0) }
                results.append(burst.end())
            }
            // The first burst holds the CONNECT (answered); the second is QoS 0 only, and
            // asks for an ACK if a PUBLISH begins in it.
            #expect(results == [false, cut <= 24], "cut at \(cut)")
        }
    }
}

@Suite("Broker framing: a PUBLISH over the limit is skipped, not buffered")
struct BrokerFrameDecoderTests {
    /// A QoS 1 PUBLISH of `payload` bytes on `topic` with packet id `id`, then a PINGRESP.
    static func stream(payload: Int, topic: String = "big/t", id: UInt16 = 7) -> [UInt8] {
        var body: [UInt8] = [UInt8(topic.utf8.count >> 8), UInt8(topic.utf8.count & 0xff)] + Array(topic.utf8) + [UInt8(id >> 8), UInt8(id & 0xff)]
        body += [UInt8](repeating: 0x5a, count: payload)
        var length = body.count, header: [UInt8] = [0x32]
        repeat {
            var byte = UInt8(length % 128)
            length /= 128
            if length > 0 { byte |= 0x80 }
            header.append(byte)
        } while length > 0
        return header + body + [0xd0, 0x00]
    }

    func frames(_ bytes: [UInt8], splitEvery step: Int, skips: Bool) throws -> [String] {
        var framer = InlineFramer(BrokerFrameDecoder(maximumPacketSize: 1024, skipsOversizedPublish: skips))
        var out: [String] = []
        var index = 0
        while index < bytes.count {
            framer.append(ByteBuffer(bytes: bytes[index..<min(index + step, bytes.count)]))
            index += step
            while let frame = try framer.next() {
                switch frame {
                case .packet(let packet): out.append("\(packet.type) \(packet.size)")
                case .oversizedPublish(let p): out.append("skipped \(p.topic) qos \(p.qos.rawValue) id \(p.packetIdentifier ?? 0) \(p.size)")
                }
            }
            framer.compact()
        }
        #expect(framer.bufferedBytes == 0)
        return out
    }

    @Test("A 5,000-byte PUBLISH over a 1 KiB limit: reported with topic, QoS and id, its bytes dropped as they arrive, the next packet framed")
    func skipsOversized() throws {
        let bytes = Self.stream(payload: 5000)
        for step in [1, 7, 100, 1024, bytes.count] {
            let got = try frames(bytes, splitEvery: step, skips: true)
            #expect(got == ["skipped big/t qos 1 id 7 5012", "PINGRESP 2"], "step \(step)")
        }
        // Under the limit it is an ordinary packet.
        let small = try frames(Self.stream(payload: 10), splitEvery: 3, skips: true)
        #expect(small == ["PUBLISH 21", "PINGRESP 2"])
    }

    @Test("Without skipping (5.0 brokers were told the limit), or for another packet type, over the limit is an error")
    func otherwiseAnError() throws {
        #expect(throws: MQTTCodecError.self) { try frames(Self.stream(payload: 5000), splitEvery: 100, skips: false) }
        let subAck: [UInt8] = [0x90, 0x8c, 0x10, 0x00, 0x01] + [UInt8](repeating: 0, count: 2058)  // 2,063 bytes
        #expect(throws: MQTTCodecError.self) { try frames(subAck, splitEvery: 100, skips: true) }
    }
}

@Suite("Link stream credit for units larger than the window")
struct IncompleteUnitCreditTests {
    @Test("An incomplete unit is credited as it arrives; when taken, only what was not credited yet")
    func credit() {
        var credit = IncompleteUnitCredit()
        // A 300 KiB unit arrives in pieces: each piece is credited once.
        #expect(credit.incomplete(buffered: 100_000) == 100_000)
        #expect(credit.incomplete(buffered: 100_000) == 0)
        #expect(credit.incomplete(buffered: 250_000) == 150_000)
        // It completes (300,000 bytes) with 20 bytes of the next unit behind it.
        #expect(credit.taken(300_000) == 50_000)
        #expect(credit.taken(20) == 20)
        // Two small units that arrive whole are credited when taken.
        #expect(credit.taken(10) == 10)
        // A unit taken in part credited: 8 of its 12 bytes came as an incomplete piece.
        #expect(credit.incomplete(buffered: 8) == 8)
        #expect(credit.taken(12) == 4)
    }
}
