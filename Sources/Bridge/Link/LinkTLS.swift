import NIOCore
public import NIOSSL

/// TLS for the link: 1.3 only, both sides authenticated, hostnames ignored (sites are
/// identified by key, not by DNS).
///
/// With pins, a custom verification callback accepts a certificate only if the SHA-256 of its
/// SubjectPublicKeyInfo is pinned; BoringSSL's chain checks are replaced entirely, which is
/// the point: trust is the pinned key. With an operator CA, BoringSSL verifies the chain and
/// the peer is identified afterwards by its certificate's common name.
public struct LinkTLS: Sendable {
    public let identity: SiteIdentity
    public let trust: LinkTrust
    public let serverContext: NIOSSLContext
    public let clientContext: NIOSSLContext

    /// Builds both contexts once, at startup (context creation does blocking file I/O).
    public init(identity: SiteIdentity, trust: LinkTrust) throws {
        self.identity = identity
        self.trust = trust
        let roots: NIOSSLTrustRoots
        switch trust {
        case .pins: roots = .certificates([])
        case .certificateAuthority(let path): roots = .file(path)
        }
        var server = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: [.certificate(identity.certificate)], privateKey: .privateKey(identity.privateKey), trustRoots: roots)
        server.minimumTLSVersion = .tlsv13
        server.maximumTLSVersion = .tlsv13
        server.certificateVerification = .noHostnameVerification
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = [.certificate(identity.certificate)]
        client.privateKey = .privateKey(identity.privateKey)
        client.trustRoots = roots
        client.minimumTLSVersion = .tlsv13
        client.maximumTLSVersion = .tlsv13
        client.certificateVerification = .noHostnameVerification
        serverContext = try NIOSSLContext(configuration: server)
        clientContext = try NIOSSLContext(configuration: client)
    }

    /// Accepts exactly the certificates whose SPKI pin is in `allowed` (pins mode), or nil to
    /// leave verification to BoringSSL and the CA (CA mode).
    public func verifier(allowing allowed: Set<SPKIFingerprint>) -> NIOSSLCustomVerificationCallback? {
        guard case .pins = trust else { return nil }
        return { certificates, promise in
            guard let leaf = certificates.first, let pin = try? SPKIFingerprint(of: leaf), allowed.contains(pin) else {
                promise.succeed(.failed)
                return
            }
            promise.succeed(.certificateVerified)
        }
    }

    public func makeServerHandler(allowing allowed: Set<SPKIFingerprint>) -> NIOSSLServerHandler {
        if let verifier = verifier(allowing: allowed) {
            return NIOSSLServerHandler(context: serverContext, customVerificationCallback: verifier)
        }
        return NIOSSLServerHandler(context: serverContext)
    }

    public func makeClientHandler(allowing allowed: Set<SPKIFingerprint>) throws -> NIOSSLClientHandler {
        if let verifier = verifier(allowing: allowed) {
            return try NIOSSLClientHandler(context: clientContext, serverHostname: nil, customVerificationCallback: verifier)
        }
        return try NIOSSLClientHandler(context: clientContext, serverHostname: nil)
    }
}
