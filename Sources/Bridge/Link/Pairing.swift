import Crypto
public import Foundation
public import Logging
public import NIOCore
import NIOPosix
import NIOSSL

/// A one-time pairing code: where the inviting site listens, the SPKI pin of its key, a
/// 128-bit secret and an expiry. Printed as `mqbp1-` + base32, ending in a 4-byte check
/// (the first bytes of SHA-256 over the rest).
///
/// The check is there because operators copy codes by hand: without it a mistyped character
/// surfaced as whatever it happened to damage (a host "1270.0.1" that does not resolve, a
/// key that does not match, a refused secret that counts as one of the inviter's three
/// attempts). With it, a code that was not copied whole is refused before anything is dialled.
///
/// The joining site pins the key from the code, so it cannot be talked into pairing with
/// anyone else; the secret proves to the inviting site that the joiner holds this code, so
/// a stranger who finds the listener cannot pair.
public struct PairingCode: Sendable, Equatable, CustomStringConvertible {
    public static let prefix = "mqbp1-"
    public var expires: Date
    public var secret: [UInt8]
    public var fingerprint: SPKIFingerprint
    /// Where the pairing exchange happens.
    public var address: HostPort
    /// Where the joiner should dial the link afterwards (nil: the inviter will dial).
    public var linkAddress: HostPort?

    public init(expires: Date, secret: [UInt8], fingerprint: SPKIFingerprint, address: HostPort, linkAddress: HostPort? = nil) {
        self.expires = expires
        self.secret = secret
        self.fingerprint = fingerprint
        self.address = address
        self.linkAddress = linkAddress
    }

    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public var description: String {
        var bytes: [UInt8] = []
        let seconds = UInt32(clamping: Int(expires.timeIntervalSince1970))
        bytes += withUnsafeBytes(of: seconds.bigEndian, Array.init)
        bytes += secret
        bytes += fingerprint.bytes
        bytes += Array(address.description.utf8)
        if let linkAddress { bytes += Array(" \(linkAddress)".utf8) }
        bytes += Self.check(bytes)
        return Self.prefix + Base32.encode(bytes)
    }

    static let checkSize = 4

    static func check(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        Array(SHA256.hash(data: Array(bytes)).prefix(checkSize))
    }

    public init(parsing text: String) throws(Invalid) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let body = String(trimmed.dropFirst(Self.prefix.count))
        guard trimmed.hasPrefix(Self.prefix), let decoded = Base32.decode(body) else {
            throw Invalid(description: "not a pairing code (it starts with \(Self.prefix); copy it whole from `mqbridge pair invite`)")
        }
        // Canonical too: the last character's unused low bits must be zero, or a character
        // that differs only there would decode to the same bytes and pass the check.
        guard decoded.count > 52 + Self.checkSize, Self.check(decoded.dropLast(Self.checkSize)) == Array(decoded.suffix(Self.checkSize)),
              Base32.encode(decoded) == body.lowercased().filter({ $0 != "-" }) else {
            throw Invalid(description: "the pairing code is mistyped or incomplete (its check does not match); copy it whole from `mqbridge pair invite`")
        }
        let bytes = Array(decoded.dropLast(Self.checkSize))
        let seconds = bytes[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard let addresses = String(validating: bytes[52...], as: UTF8.self)?.split(separator: " "), let first = addresses.first,
              let address = try? HostPort(parsing: String(first)) else {
            throw Invalid(description: "the pairing code is damaged (its address does not parse)")
        }
        let linkAddress = addresses.count > 1 ? try? HostPort(parsing: String(addresses[1])) : nil
        self.init(expires: Date(timeIntervalSince1970: TimeInterval(seconds)), secret: Array(bytes[4..<20]),
                  fingerprint: SPKIFingerprint(bytes: Array(bytes[20..<52])), address: address, linkAddress: linkAddress)
    }
}

/// RFC 4648 base32, lowercase, without padding (easy to read aloud and copy).
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer = 0, bits = 0
        for byte in bytes {
            buffer = buffer << 8 | Int(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[(buffer >> (bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = 0, bits = 0
        for char in text.lowercased().utf8 where char != UInt8(ascii: "-") {
            guard let value = alphabet.firstIndex(of: char) else { return nil }
            buffer = (buffer << 5 | value) & 0xFFFF
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> (bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return out
    }
}

/// What a pairing produced: the new peer (already written to peers.yaml) and the short
/// comparison code both sides print.
public struct PairingResult: Sendable {
    public var peer: PeerConfiguration
    public var comparison: String
}

public struct PairingError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The pairing exchange, over TLS 1.3 with both certificates:
///
///     joiner → inviter: name, HMAC(secret, "join" ‖ pin(inviter) ‖ pin(joiner) ‖ name(joiner))
///     inviter → joiner: 1, name, HMAC(secret, "accept" ‖ pin(inviter) ‖ pin(joiner) ‖ name(inviter))   (or 0: refused)
///
/// Both MACs bind the two keys actually seen in the TLS handshake, so a relay in the middle
/// cannot splice two pairings together. The comparison code is derived from the secret and
/// both pins; matching codes confirm both sides saw the same keys.
public enum Pairing {
    static func mac(_ secret: [UInt8], _ label: String, _ inviter: SPKIFingerprint, _ joiner: SPKIFingerprint, _ name: String) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        hmac.update(data: Array("mqbridge pair v1 \(label)".utf8))
        hmac.update(data: inviter.bytes)
        hmac.update(data: joiner.bytes)
        hmac.update(data: Array(name.utf8))
        return Array(hmac.finalize())
    }

    /// Six digits, grouped "123 456".
    static func comparison(_ secret: [UInt8], _ inviter: SPKIFingerprint, _ joiner: SPKIFingerprint) -> String {
        var hash = SHA256()
        hash.update(data: Array("mqbridge pair v1 compare".utf8))
        hash.update(data: secret)
        hash.update(data: inviter.bytes)
        hash.update(data: joiner.bytes)
        let value = Array(hash.finalize()).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) } % 1_000_000
        let digits = String(value).leftPadded(to: 6)
        return "\(digits.prefix(3)) \(digits.suffix(3))"
    }

    /// Listens once for a joiner holding `code`. Returns after a successful pairing; throws on
    /// expiry or after three wrong attempts.
    public static func invite(identity: SiteIdentity, identityDirectory: String, listen: HostPort, advertise: HostPort?, linkAddress: HostPort?, lifetime: TimeAmount,
                              group: any EventLoopGroup, logger: Logger, onCode: @escaping @Sendable (PairingCode) -> Void) async throws -> PairingResult {
        var secret = [UInt8](repeating: 0, count: 16)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        var tls = TLSConfiguration.makeServerConfigurationWithMTLS(certificateChain: [.certificate(identity.certificate)], privateKey: .privateKey(identity.privateKey),
                                                                    trustRoots: .certificates([]))
        tls.minimumTLSVersion = .tlsv13
        tls.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: tls)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: listen.host, port: listen.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Any client key may try: the secret decides, and that key is the one recorded.
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context, customVerificationCallback: { _, promise in
                        promise.succeed(.certificateVerified)
                    }))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(PairMessageDecoder()))
                    try channel.pipeline.syncOperations.addHandler(PairMessageEncoder())
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let boundPort = server.channel.localAddress?.port ?? listen.port
        let code = PairingCode(expires: Date().addingTimeInterval(Double(lifetime.nanoseconds) / 1e9), secret: secret, fingerprint: identity.fingerprint,
                               address: advertise ?? HostPort(host: listen.host, port: boundPort), linkAddress: linkAddress)
        onCode(code)
        // At expiry the listener closes, which ends the loop below.
        let listenerChannel = server.channel
        let expiry = listenerChannel.eventLoop.scheduleTask(in: lifetime) { listenerChannel.close(promise: nil) }
        defer { expiry.cancel() }
        var failures = 0
        return try await server.executeThenClose { inbound in
            for try await connection in inbound {
                do {
                    return try await answer(connection, secret: secret, identity: identity, identityDirectory: identityDirectory, logger: logger)
                } catch {
                    failures += 1
                    logger.warning("pairing attempt refused: \(error)", metadata: ["event": "pair_refused"])
                    if failures >= 3 { throw PairingError("three wrong pairing attempts: the code is no longer valid") }
                }
            }
            throw PairingError("the pairing code expired unused")
        }
    }

    private static func answer(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, secret: [UInt8], identity: SiteIdentity, identityDirectory: String,
                               logger: Logger) async throws -> PairingResult {
        try await connection.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            guard var request = try await iterator.next() else { throw PairingError("the joiner closed the connection") }
            let channel = connection.channel
            let joinerFingerprint = try await channel.eventLoop.submit {
                let certificate = try channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
                guard let certificate else { throw PairingError("the joiner sent no certificate") }
                return try SPKIFingerprint(of: certificate)
            }.get()
            guard let name = request.readShortString(), let presented = request.readBytes(length: 32) else { throw PairingError("malformed pairing request") }
            let expected = mac(secret, "join", identity.fingerprint, joinerFingerprint, name)
            guard constantTimeEqual(presented, expected) else {
                var refusal = ByteBuffer()
                refusal.writeInteger(UInt8(0))
                try await outbound.write(refusal)
                throw PairingError("wrong pairing secret from \(channel.remoteAddress.map { $0.logDescription } ?? "?")")
            }
            try SiteIdentity.validate(name: name)
            var reply = ByteBuffer()
            reply.writeInteger(UInt8(1))
            reply.writeShortString(identity.name)
            reply.writeBytes(Self.mac(secret, "accept", identity.fingerprint, joinerFingerprint, identity.name))
            try await outbound.write(reply)
            let peer = PeerConfiguration(name: name, fingerprint: joinerFingerprint, connect: nil)
            try PairedPeers.record(peer, in: identityDirectory)
            return PairingResult(peer: peer, comparison: comparison(secret, identity.fingerprint, joinerFingerprint))
        }
    }

    /// Joins with `code`: connects pinning the inviter's key, proves the secret, records the
    /// inviter (with the address to dial) in peers.yaml.
    public static func join(identity: SiteIdentity, identityDirectory: String, code: PairingCode, group: any EventLoopGroup) async throws -> PairingResult {
        guard code.expires > Date() else {
            throw PairingError("the pairing code expired at \(code.expires) — ask for a new one (`mqbridge pair invite`)")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = [.certificate(identity.certificate)]
        tls.privateKey = .privateKey(identity.privateKey)
        tls.trustRoots = .certificates([])
        tls.minimumTLSVersion = .tlsv13
        tls.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: tls)
        let pin = code.fingerprint
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .connect(host: code.address.host, port: code.address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Only the key named in the code.
                        let handler = try NIOSSLClientHandler(context: context, serverHostname: nil, customVerificationCallback: { certificates, promise in
                            guard let leaf = certificates.first, (try? SPKIFingerprint(of: leaf)) == pin else {
                                promise.succeed(.failed)
                                return
                            }
                            promise.succeed(.certificateVerified)
                        })
                        try channel.pipeline.syncOperations.addHandler(handler)
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(PairMessageDecoder()))
                        try channel.pipeline.syncOperations.addHandler(PairMessageEncoder())
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw PairingError("cannot reach the inviting site at \(code.address): \(error)")
        }
        return try await channel.executeThenClose { inbound, outbound in
            var request = ByteBuffer()
            request.writeShortString(identity.name)
            request.writeBytes(mac(code.secret, "join", code.fingerprint, identity.fingerprint, identity.name))
            try await outbound.write(request)
            var iterator = inbound.makeAsyncIterator()
            guard var reply = try await iterator.next() else {
                throw PairingError("the inviting site closed the connection (is the code still valid?)")
            }
            guard reply.readInteger(as: UInt8.self) == 1, let name = reply.readShortString(), let theirMAC = reply.readBytes(length: 32) else {
                throw PairingError("pairing refused: the code is wrong or has expired")
            }
            guard constantTimeEqual(theirMAC, mac(code.secret, "accept", code.fingerprint, identity.fingerprint, name)) else {
                throw PairingError("the inviting site could not prove it holds the code")
            }
            try SiteIdentity.validate(name: name)
            let peer = PeerConfiguration(name: name, fingerprint: code.fingerprint, connect: code.linkAddress)
            try PairedPeers.record(peer, in: identityDirectory)
            return PairingResult(peer: peer, comparison: comparison(code.secret, code.fingerprint, identity.fingerprint))
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}

/// Pairing messages: a 2-byte length, then the message.
struct PairMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self), buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

final class PairMessageEncoder: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let message = unwrapOutboundIn(data)
        var framed = context.channel.allocator.buffer(capacity: message.readableBytes + 2)
        framed.writeInteger(UInt16(message.readableBytes))
        framed.writeImmutableBuffer(message)
        context.write(wrapOutboundOut(framed), promise: promise)
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        count >= length ? self : String(repeating: "0", count: length - count) + self
    }
}
