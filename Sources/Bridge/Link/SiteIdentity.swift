#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Foundation
public import NIOSSL
import SwiftASN1
import X509

/// The SHA-256 of a certificate's SubjectPublicKeyInfo (DER), the pin a paired site stores.
/// Printed like OpenSSH host key fingerprints: `SHA256:` + unpadded base64.
public struct SPKIFingerprint: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        self.bytes = bytes
    }

    /// The pin of a certificate's public key (`extractPublicKey().toSPKIBytes()`, not just the key point).
    public init(of certificate: NIOSSLCertificate) throws {
        self.init(bytes: Array(SHA256.hash(data: try certificate.extractPublicKey().toSPKIBytes())))
    }

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var value: String
        public var description: String { "\"\(value)\" is not a fingerprint: expected SHA256: followed by 43 base64 characters (as `mqbridge identity show` prints)" }
    }

    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("SHA256:") else { throw ParseError(value: text) }
        var body = String(trimmed.dropFirst(7))
        while body.count % 4 != 0 { body += "=" }
        guard let data = Data(base64Encoded: body), data.count == 32 else { throw ParseError(value: text) }
        self.init(bytes: Array(data))
    }

    public var description: String {
        "SHA256:" + Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }
}

/// A site's key and self-signed certificate, kept in a directory:
/// `key.pem` (P-256, mode 0600) and `cert.pem`. The certificate's common name is the site name.
public struct SiteIdentity: Sendable {
    public let name: String
    public let certificate: NIOSSLCertificate
    public let privateKey: NIOSSLPrivateKey
    public let fingerprint: SPKIFingerprint

    public struct Error: Swift.Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    static func keyPath(_ directory: String) -> String { URL(fileURLWithPath: directory).appendingPathComponent("key.pem").path }
    static func certificatePath(_ directory: String) -> String { URL(fileURLWithPath: directory).appendingPathComponent("cert.pem").path }

    /// Site names appear in logs, certificates and configuration: keep them plain.
    public static func validate(name: String) throws(Error) {
        let allowed = name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F }
        guard (1...64).contains(name.utf8.count), allowed else {
            throw Error("site name \"\(name)\" must be 1–64 characters of letters, digits, '-', '_' or '.'")
        }
    }

    /// Creates a new identity in `directory` (created if missing). Refuses to overwrite one.
    @discardableResult
    public static func create(in directory: String, name: String) throws -> SiteIdentity {
        try validate(name: name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for path in [keyPath(directory), certificatePath(directory)] where FileManager.default.fileExists(atPath: path) {
            throw Error("\(path) already exists: an identity is never overwritten (its fingerprint is pinned by paired sites); use another --dir or remove it deliberately")
        }
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let subject = try DistinguishedName {
            CommonName(name)
            OrganizationName("mqbridge")
        }
        let now = Date()
        var serial = [UInt8](repeating: 0, count: 16)
        for i in serial.indices { serial[i] = UInt8.random(in: 0...255) }
        serial[0] &= 0x7F
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(bytes: serial),
            publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            // Trust comes from the pinned key, not from the validity period; a long one means
            // a paired link never stops on a forgotten expiry date.
            notValidAfter: now.addingTimeInterval(20 * 365 * 24 * 3600),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.dnsName(name)])
            },
            issuerPrivateKey: privateKey
        )
        let keyPEM = try privateKey.serializeAsPEM().pemString + "\n"
        let certificatePEM = try certificate.serializeAsPEM().pemString + "\n"
        try writeExclusive(keyPath(directory), keyPEM, mode: 0o600)
        try writeExclusive(certificatePath(directory), certificatePEM, mode: 0o644)
        return try load(from: directory)
    }

    /// Creates a file that must not exist, with its mode set at creation (no window in which
    /// the key is readable by others).
    private static func writeExclusive(_ path: String, _ contents: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw Error("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(contents.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw Error("cannot write \(path): \(String(cString: strerror(errno)))") }
        fchmod(fd, mode)
    }

    /// Loads the identity in `directory`, refusing a private key readable by others.
    public static func load(from directory: String) throws -> SiteIdentity {
        let keyFile = keyPath(directory), certificateFile = certificatePath(directory)
        guard let keyData = FileManager.default.contents(atPath: keyFile), let certificateData = FileManager.default.contents(atPath: certificateFile) else {
            throw Error("no identity in \(directory) (need key.pem and cert.pem) — create one with `mqbridge identity init --dir \(directory) --name <site>`")
        }
        if let mode = (try? FileManager.default.attributesOfItem(atPath: keyFile))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
            throw Error("\(keyFile) is readable by other users (mode \(String(mode & 0o777, radix: 8))) — run `chmod 600 \(keyFile)`")
        }
        let privateKey = try NIOSSLPrivateKey(bytes: Array(keyData), format: .pem)
        let certificate = try NIOSSLCertificate(bytes: Array(certificateData), format: .pem)
        let parsed = try Certificate(pemEncoded: String(decoding: certificateData, as: UTF8.self))
        guard let commonName = parsed.subject.first(where: { $0.description.hasPrefix("CN=") })?.description.dropFirst(3) else {
            throw Error("\(certificateFile) has no common name (the site name)")
        }
        return SiteIdentity(name: String(commonName), certificate: certificate, privateKey: privateKey, fingerprint: try SPKIFingerprint(of: certificate))
    }
}
