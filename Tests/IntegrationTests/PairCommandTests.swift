import Bridge
import Foundation
import TestSupport
import Testing

/// `mqbridge pair` between two identities, as two operators run it.
@Suite("mqbridge pair", .serialized)
struct PairCommandTests {
    struct Sites {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mqbridge-pair-\(UUID().uuidString)")
        func path(_ p: String) -> String { directory.appendingPathComponent(p).path }

        init() throws {
            for (dir, name) in [("a", "site-a"), ("b", "site-b")] {
                let r = try TestEnvironment.run([TestEnvironment.mqbridgeBinary, "identity", "init", "--dir", directory.appendingPathComponent(dir).path, "--name", name])
                guard r.status == 0 else { throw TestError(r.stderr) }
            }
        }

        func fingerprint(_ dir: String) throws -> String {
            let out = String(decoding: try TestEnvironment.run([TestEnvironment.mqbridgeBinary, "identity", "show", "--dir", path(dir)]).stdout, as: UTF8.self)
            return String(out.split(separator: "\n").last!.dropFirst("fingerprint: ".count))
        }

        /// Starts an invitation and returns the process and the printed code.
        func invite(_ extra: [String] = []) throws -> (ChildProcess, String) {
            let process = try ChildProcess([TestEnvironment.mqbridgeBinary, "pair", "invite", "--identity", path("a"), "--listen", "127.0.0.1:0"] + extra,
                                           log: directory.appendingPathComponent("invite-\(UUID().uuidString).log"))
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if let code = process.log.split(whereSeparator: \.isWhitespace).first(where: { $0.hasPrefix("mqbp1-") }).map(String.init) {
                    return (process, code)
                }
                usleep(20_000)
            }
            throw TestError("no code printed: \(process.log)")
        }

        func join(_ code: String) throws -> (status: Int32, stdout: String, stderr: String) {
            let r = try TestEnvironment.run([TestEnvironment.mqbridgeBinary, "pair", "join", "--identity", path("b"), "--code", code])
            return (r.status, String(decoding: r.stdout, as: UTF8.self), r.stderr)
        }
    }

    @Test("Invite and join: each side records the other's pin; both print the same comparison code")
    func pairs() async throws {
        try await TestEnvironment.blocking {
            let sites = try Sites()
            defer { try? FileManager.default.removeItem(at: sites.directory) }
            let (inviter, code) = try sites.invite(["--link-address", "127.0.0.1:18883"])
            let joined = try sites.join(code)
            #expect(joined.status == 0, "\(joined.stderr)")
            inviter.wait(timeout: 10)
            #expect(inviter.exitCode == 0)
            let joinerComparison = joined.stdout.split(separator: "\n").first { $0.hasPrefix("comparison: ") }
            let inviterComparison = inviter.log.split(separator: "\n").first { $0.hasPrefix("comparison: ") }
            #expect(joinerComparison != nil && joinerComparison == inviterComparison)
            let peersA = try String(contentsOfFile: sites.path("a/peers.yaml"), encoding: .utf8)
            let peersB = try String(contentsOfFile: sites.path("b/peers.yaml"), encoding: .utf8)
            #expect(peersA.contains("- name: site-b\n  fingerprint: \(try sites.fingerprint("b"))\n"))
            #expect(peersB.contains("- name: site-a\n  fingerprint: \(try sites.fingerprint("a"))\n  connect: 127.0.0.1:18883\n"))
        }
    }

    @Test("A wrong code is refused and nothing is recorded; the inviter gives up after three")
    func wrongCode() async throws {
        try await TestEnvironment.blocking {
            let sites = try Sites()
            defer { try? FileManager.default.removeItem(at: sites.directory) }
            let (inviter, code) = try sites.invite()
            // Same address and pin, another secret, a valid check: what someone who saw the
            // inviter's address and key, but not the code, could make.
            var forged = try PairingCode(parsing: code)
            forged.secret[0] ^= 0x01
            let tampered = forged.description
            for _ in 0..<3 {
                let r = try sites.join(tampered)
                #expect(r.status == 2)
                #expect(r.stderr.contains("pairing refused") || r.stderr.contains("closed the connection"), "\(r.stderr)")
            }
            inviter.wait(timeout: 10)
            #expect(inviter.exitCode == 2)
            #expect(inviter.log.contains("three wrong pairing attempts"))
            #expect(!FileManager.default.fileExists(atPath: sites.path("a/peers.yaml")))
            #expect(!FileManager.default.fileExists(atPath: sites.path("b/peers.yaml")))
        }
    }

    @Test("A mistyped code is refused before anything is dialled; the inviter still takes the right one")
    func mistyped() async throws {
        try await TestEnvironment.blocking {
            let sites = try Sites()
            defer { try? FileManager.default.removeItem(at: sites.directory) }
            let (inviter, code) = try sites.invite()
            defer { inviter.stop() }
            // One character off in the address, in the secret, in the check; one missing.
            let body = Array(code.dropFirst("mqbp1-".count))
            func changed(_ index: Int) -> String {
                var chars = body
                chars[index] = chars[index] == "a" ? "b" : "a"
                return "mqbp1-" + String(chars)
            }
            let addressIndex = (4 + 16 + 32) * 8 / 5 + 2
            for typo in [changed(addressIndex), changed(10), changed(body.count - 1), String(code.dropLast())] {
                let r = try sites.join(typo)
                #expect(r.status == 2)
                #expect(r.stderr.contains("mistyped or incomplete"), "\(r.stderr)")
            }
            // Four refusals and no attempt reached the inviter (it gives up after three wrong
            // ones), so the right code still pairs.
            #expect(!inviter.log.contains("pair_refused"), "\(inviter.log)")
            let joined = try sites.join(code)
            #expect(joined.status == 0, "\(joined.stderr)")
            #expect(FileManager.default.fileExists(atPath: sites.path("b/peers.yaml")))
        }
    }

    @Test("An expired code is refused by the joiner, and the inviter stops when it expires")
    func expired() async throws {
        try await TestEnvironment.blocking {
            let sites = try Sites()
            defer { try? FileManager.default.removeItem(at: sites.directory) }
            let (inviter, code) = try sites.invite(["--expires", "1s"])
            inviter.wait(timeout: 10)
            #expect(inviter.exitCode == 2)
            #expect(inviter.log.contains("expired unused"))
            let r = try sites.join(code)
            #expect(r.status == 2)
            #expect(r.stderr.contains("expired"))
            #expect(!FileManager.default.fileExists(atPath: sites.path("b/peers.yaml")))
        }
    }

    @Test("A code that is not a code is refused with a hint")
    func garbage() async throws {
        try await TestEnvironment.blocking {
            let sites = try Sites()
            defer { try? FileManager.default.removeItem(at: sites.directory) }
            let r = try sites.join("hello")
            #expect(r.status == 2)
            #expect(r.stderr.contains("not a pairing code"))
        }
    }
}
