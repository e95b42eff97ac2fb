import Bridge
import MQTTCodec
import NIOCore
import Testing

@Suite("SessionTranscript")
struct SessionTranscriptTests {
    @Test("Parses connections and decodes both directions with the CONNECT's version")
    func decodes() throws {
        let text = """
        # a v5 session
        = connection 1
        C 100e00044d5154540502003c0000
        C 0163
        S 2003
        S 000000
        C e000
        """
        let transcript = try SessionTranscript(parsing: text)
        #expect(transcript.comments == ["a v5 session"])
        #expect(transcript.connections.count == 1)
        let entries = transcript.decode()
        let kinds = entries.map { entry -> String in
            switch entry.result {
            case .success(let d): "\(entry.direction.rawValue) \(d.packet.type) \(entry.reencodesIdentically)"
            case .failure(let e): "error \(e)"
            }
        }
        #expect(kinds == ["C→S CONNECT true", "S→C CONNACK true", "C→S DISCONNECT true"])
    }

    @Test("A malformed packet in a transcript is reported, not skipped")
    func reportsErrors() throws {
        let transcript = try SessionTranscript(parsing: "= c\nC 100c00044d5154540402003c0000\nC 3005000361002f\n")
        let last = try #require(transcript.decode().last)
        guard case .failure(let error) = last.result else { Issue.record("no failure"); return }
        #expect(error.kind == .malformedPacket)
        #expect(error.specStatement == "MQTT-1.5.4-2")
    }

    @Test("Bad lines name their line number", arguments: [("= c\nX 00\n", 2), ("C 00\n", 1), ("= c\nC 0g\n", 2), ("= c\n\nC 012\n", 3)])
    func badLines(text: String, line: Int) {
        do {
            _ = try SessionTranscript(parsing: text)
            Issue.record("accepted")
        } catch {
            #expect(error.line == line)
        }
    }
}
