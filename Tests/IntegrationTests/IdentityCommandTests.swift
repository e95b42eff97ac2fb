import Foundation
import TestSupport
import Testing

@Suite("mqbridge identity")
struct IdentityCommandTests {
    func mqbridge(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try TestEnvironment.run([TestEnvironment.mqbridgeBinary] + arguments)
        return (result.status, String(decoding: result.stdout, as: UTF8.self), result.stderr)
    }

    @Test("init creates key.pem (0600) and cert.pem; show prints the same fingerprint openssl computes; no overwrite")
    func initAndShow() async throws {
        try await TestEnvironment.blocking {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-id-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let created = try mqbridge(["identity", "init", "--dir", dir, "--name", "site-a"])
            #expect(created.status == 0, "\(created.stderr)")
            let mode = try FileManager.default.attributesOfItem(atPath: dir + "/key.pem")[.posixPermissions] as? Int
            #expect(mode == 0o600)
            let shown = try mqbridge(["identity", "show", "--dir", dir])
            #expect(shown.status == 0)
            let lines = shown.stdout.split(separator: "\n")
            #expect(lines.first == "name: site-a")
            let fingerprint = String(lines.last!.dropFirst("fingerprint: ".count))
            // The pin is SHA-256 over the DER SubjectPublicKeyInfo, as openssl computes it.
            let openssl = try TestEnvironment.run(["sh", "-c", "openssl x509 -in '\(dir)/cert.pem' -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64 | tr -d '='"])
            #expect("SHA256:" + String(decoding: openssl.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == fingerprint)
            #expect(created.stdout.contains(fingerprint))
            // The certificate names the site and is a P-256 key.
            let text = String(decoding: try TestEnvironment.run(["openssl", "x509", "-in", dir + "/cert.pem", "-noout", "-subject", "-text"]).stdout, as: UTF8.self)
            #expect(text.contains("CN = site-a"))
            #expect(text.contains("prime256v1"))
            // Never overwritten.
            let again = try mqbridge(["identity", "init", "--dir", dir, "--name", "site-b"])
            #expect(again.status == 2)
            #expect(again.stderr.contains("already exists"))
            #expect(try mqbridge(["identity", "show", "--dir", dir]).stdout == shown.stdout)
        }
    }

    @Test("A key readable by others is refused; a bad name is refused; a missing identity explains how to create one")
    func refusals() async throws {
        try await TestEnvironment.blocking {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-id-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            #expect(try mqbridge(["identity", "init", "--dir", dir, "--name", "bad name"]).status == 2)
            let missing = try mqbridge(["identity", "show", "--dir", dir])
            #expect(missing.status == 2)
            #expect(missing.stderr.contains("mqbridge identity init --dir"))
            _ = try mqbridge(["identity", "init", "--dir", dir, "--name", "ok"])
            chmod(dir + "/key.pem", 0o644)
            let loose = try mqbridge(["identity", "show", "--dir", dir])
            #expect(loose.status == 2)
            #expect(loose.stderr.contains("chmod 600"))
        }
    }
}
