import MQTTCodec
import NIOCore

/// A decoder that frames one unit at a time from the front of a buffer (consuming it), or
/// returns nil and consumes nothing when more bytes are needed.
protocol IncrementalFrameDecoder {
    associatedtype Frame
    mutating func nextFrame(from buffer: inout ByteBuffer) throws -> Frame?
}

extension MQTTFrameDecoder: IncrementalFrameDecoder {}
extension LinkFrameDecoder: IncrementalFrameDecoder {}

/// Frames a byte stream that arrives in pieces (MQTT packets, link frames) inside the handler
/// that consumes them: a frame goes straight to its consumer instead of through a pipeline
/// hop boxed in an NIOAny (a large share of the per-packet cost with small packets).
///
/// What stays between reads (an incomplete frame) is copied out of the read buffer: the
/// channel, and above all NIOSSL, which reuses one plaintext buffer for every read, would
/// otherwise find its buffer shared on the next read and copy it whole, growing it each time
/// (measured: site B's relay reached 265 MB and spent 57 % of its CPU copying).
struct InlineFramer<Decoder: IncrementalFrameDecoder> {
    private var decoder: Decoder
    private var buffer = ByteBuffer.noBytes
    /// `buffer` is the caller's read buffer (adopted without a copy), not storage of our own.
    private var adopted = false
    /// After a framing error nothing more is framed: the connection is being closed.
    private(set) var failed = false

    init(_ decoder: Decoder) { self.decoder = decoder }

    /// Bytes received and not yet framed.
    var bufferedBytes: Int { buffer.readableBytes }
    /// Those bytes (for tests).
    var pendingBytes: ByteBuffer { buffer }

    mutating func append(_ bytes: ByteBuffer) {
        guard !failed else { return }
        if buffer.readableBytes == 0 {
            buffer = bytes  // the common case: adopt the read buffer, no copy
            adopted = true
        } else {
            buffer.writeImmutableBuffer(bytes)
            adopted = false
        }
    }

    /// The next complete frame, nil when more bytes are needed.
    mutating func next() throws -> Decoder.Frame? {
        guard !failed else { return nil }
        do {
            return try decoder.nextFrame(from: &buffer)
        } catch {
            failed = true
            buffer = .noBytes
            throw error
        }
    }

    /// One read: frames `bytes` (with what an earlier read left) and hands each frame to
    /// `onFrame` while `proceed()` holds; a framing error goes to `onError` and ends framing.
    /// Keeps only the bytes of an incomplete frame afterwards.
    @inline(__always)  // on the per-read path: lets the closures inline, as a hand-written loop
    mutating func feed(_ bytes: ByteBuffer, while proceed: () -> Bool, onFrame: (Decoder.Frame) -> Void, onError: (any Error) -> Void) {
        append(bytes)
        do {
            while proceed(), let frame = try next() { onFrame(frame) }
        } catch {
            onError(error)
        }
        compact()
    }

    /// End of a burst: keep only the bytes of an incomplete packet, in storage of our own.
    mutating func compact() {
        if buffer.readableBytes == 0 {
            buffer = .noBytes
        } else if adopted {
            buffer = ByteBuffer(copying: buffer)
        }
        adopted = false
    }
}

extension ByteBuffer {
    /// One empty buffer to hold when nothing is pending, instead of allocating one each time.
    static let noBytes = ByteBuffer()

    /// The readable bytes in storage of their own (nothing else shares it).
    init(copying other: ByteBuffer) {
        self = ByteBufferAllocator().buffer(capacity: other.readableBytes)
        self.writeImmutableBuffer(other)
    }
}

/// Packets for one side collected during a read burst and handed to the channel as one
/// buffer when the burst ends: one write (and, over a link, one DATA frame) per burst.
struct OutputBatch {
    /// Packets this large are written as they are: copying them would cost more than a write.
    static let directWriteSize = 4096
    private var pending: ByteBuffer?
    /// Something went to `write` past the batch since the burst began: the burst must end
    /// with a flush even when nothing is left in the batch.
    private var wrotePastBatch = false

    /// Adds `bytes`, or, for a large packet, passes what was batched and then the packet to
    /// `write` so that the order is kept.
    mutating func append(_ bytes: ByteBuffer, orWrite write: (ByteBuffer) -> Void) {
        if bytes.readableBytes >= Self.directWriteSize {
            if let batched = pending {
                pending = nil
                write(batched)
            }
            write(bytes)
            wrotePastBatch = true
        } else if pending == nil {
            pending = bytes  // a single packet per burst is not copied
        } else {
            pending!.writeImmutableBuffer(bytes)
        }
    }

    /// What was batched, if anything; the batch is empty afterwards. (For a caller that
    /// tracks its own need to flush.)
    mutating func take() -> ByteBuffer? {
        defer { pending = nil; wrotePastBatch = false }
        return pending
    }

    /// End of a burst: writes what was batched and tells whether the burst wrote anything,
    /// i.e. whether the caller must flush. A burst of only large packets has an empty batch
    /// but still needs its flush.
    mutating func endBurst(write: (ByteBuffer) -> Void) -> Bool {
        let wrote = wrotePastBatch || pending != nil
        if let batched = take() { write(batched) }
        return wrote
    }
}
