import ArgumentParser
import Bridge
import Foundation
import MQTTCodec
import NIOCore

/// `mqbridge decode --session FILE`: prints every packet of a captured session.
struct DecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode a captured MQTT session (scripts/capture-session.py format) and print every packet."
    )

    @Option(name: .long, help: "A .session file: '= connection N', then 'C <hex>' / 'S <hex>' lines.")
    var session: String

    func run() throws {
        let text: String
        do {
            text = try String(contentsOfFile: session, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read --session \(session): \(error.localizedDescription)")
        }
        let transcript: SessionTranscript
        do {
            transcript = try SessionTranscript(parsing: text)
        } catch {
            throw ValidationError("\(session):\(error.line): \(error.message)")
        }
        for comment in transcript.comments { print("# \(comment)") }
        var failures = 0
        for entry in transcript.decode() {
            switch entry.result {
            case .success(let decoded):
                let check = entry.reencodesIdentically ? "re-encodes identically" : "RE-ENCODING DIFFERS"
                print("[\(entry.connection)] \(entry.direction.rawValue) \(describe(decoded.packet))  (\(decoded.frame.size) bytes, \(check))")
                if !entry.reencodesIdentically { failures += 1 }
            case .failure(let error):
                print("[\(entry.connection)] \(entry.direction.rawValue) REJECTED: \(error)")
                failures += 1
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }

    private func describe(_ packet: MQTTPacket) -> String {
        switch packet {
        case .connect(let p): return p.description
        case .connAck(let p): return "CONNACK(code: \(ReasonCode(p.returnCode)), sessionPresent: \(p.sessionPresent)\(p.properties.map { ", \($0.count) properties" } ?? ""))"
        case .publish(let p):
            let preview = p.payload.getString(at: p.payload.readerIndex, length: min(p.payload.readableBytes, 24)) ?? "<binary>"
            return "PUBLISH(topic: \(p.topic), \(p.qos), id: \(p.packetIdentifier.map(String.init) ?? "-"), retain: \(p.retain), \(p.properties.count) properties, payload: \(p.payload.readableBytes) bytes \"\(preview)\(p.payload.readableBytes > 24 ? "…" : "")\")"
        case .pubAck(let p): return "PUBACK(id: \(p.packetIdentifier)\(p.reasonCode.map { ", \($0)" } ?? ""))"
        case .pubRec(let p): return "PUBREC(id: \(p.packetIdentifier)\(p.reasonCode.map { ", \($0)" } ?? ""))"
        case .pubRel(let p): return "PUBREL(id: \(p.packetIdentifier)\(p.reasonCode.map { ", \($0)" } ?? ""))"
        case .pubComp(let p): return "PUBCOMP(id: \(p.packetIdentifier)\(p.reasonCode.map { ", \($0)" } ?? ""))"
        case .subscribe(let p): return "SUBSCRIBE(id: \(p.packetIdentifier), \(p.subscriptions.map { "\($0.topicFilter) \($0.options.qos)" }.joined(separator: ", ")))"
        case .subAck(let p): return "SUBACK(id: \(p.packetIdentifier), \(p.reasonCodes.map(\.description).joined(separator: " ")))"
        case .unsubscribe(let p): return "UNSUBSCRIBE(id: \(p.packetIdentifier), \(p.topicFilters.joined(separator: ", ")))"
        case .unsubAck(let p): return "UNSUBACK(id: \(p.packetIdentifier)\(p.reasonCodes.isEmpty ? "" : ", " + p.reasonCodes.map(\.description).joined(separator: " ")))"
        case .pingReq: return "PINGREQ"
        case .pingResp: return "PINGRESP"
        case .disconnect(let p): return "DISCONNECT\(p.reasonCode.map { "(\($0))" } ?? "")"
        case .auth(let p): return "AUTH\(p.reasonCode.map { "(\($0))" } ?? "")"
        }
    }
}
