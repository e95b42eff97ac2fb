import Bridge
import Foundation
import Testing

@Suite("Pairing codes")
struct PairingCodeTests {
    static let code = PairingCode(expires: Date(timeIntervalSince1970: 1_900_000_000), secret: Array(1...16), fingerprint: SPKIFingerprint(bytes: Array(100..<132)),
                                  address: HostPort(host: "192.0.2.7", port: 7883), linkAddress: HostPort(host: "bridge-b.example", port: 8883))

    @Test("A code reads back as what was printed, with and without a link address")
    func roundTrip() throws {
        #expect(try PairingCode(parsing: Self.code.description) == Self.code)
        var noLink = Self.code
        noLink.linkAddress = nil
        #expect(try PairingCode(parsing: noLink.description) == noLink)
        // Surrounding whitespace (a copied line) is not part of the code.
        #expect(try PairingCode(parsing: "  \(Self.code)\n") == Self.code)
    }

    @Test("Every code with one character changed, at any place, to any other letter or digit of the alphabet, is refused")
    func everySubstitution() {
        let text = Array(Self.code.description)
        let body = text.indices.dropFirst(PairingCode.prefix.count)
        var accepted: [String] = []
        var tried = 0
        for index in body {
            for replacement in "abcdefghijklmnopqrstuvwxyz234567" where replacement != text[index] {
                var changed = text
                changed[index] = replacement
                tried += 1
                if (try? PairingCode(parsing: String(changed))) != nil { accepted.append(String(changed)) }
            }
        }
        #expect(tried == body.count * 31)
        let acceptedCount = accepted.count
        #expect(acceptedCount == 0, "accepted, for example: \(accepted.prefix(3))")
    }

    @Test("A code cut short, or with a character dropped, is refused as mistyped")
    func truncated() {
        let text = Self.code.description
        for cut in [1, 2, 7, 20] {
            #expect(throws: PairingCode.Invalid.self) { try PairingCode(parsing: String(text.dropLast(cut))) }
        }
        var dropped = Array(text)
        dropped.remove(at: 30)
        do {
            _ = try PairingCode(parsing: String(dropped))
            Issue.record("a code with a dropped character was accepted")
        } catch {
            #expect(error.description.contains("mistyped or incomplete"))
        }
    }
}
