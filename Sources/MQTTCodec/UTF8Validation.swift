/// UTF-8 rules for MQTT strings (spec §1.5.4, 3.1.1 §1.5.3).
///
/// Built on the standard library's validation (never `readString`, which silently repairs bad
/// bytes: two different byte strings would then match the same ACL topic), plus MQTT's own
/// rules: U+0000 is forbidden (MQTT-1.5.4-2) and surrogates (MQTT-1.5.4-1) cannot appear in
/// valid UTF-8. Control characters and non-characters "SHOULD NOT" appear (MQTT-1.5.4-3);
/// mosquitto rejects them, and since mosquitto is the broker we stand in front of, so do we
/// unless `allowDiscouragedCodePoints` is set.
public enum MQTTUTF8 {
    public enum Violation: Error, Hashable, Sendable, CustomStringConvertible {
        case illFormed
        case nullCharacter
        case controlCharacter(UInt32)
        case nonCharacter(UInt32)

        public var description: String {
            switch self {
            case .illFormed: "ill-formed UTF-8"
            case .nullCharacter: "U+0000 is not allowed"
            case .controlCharacter(let c): "control character U+\(String(c, radix: 16, uppercase: true)) is not allowed"
            case .nonCharacter(let c): "non-character U+\(String(c, radix: 16, uppercase: true)) is not allowed"
            }
        }

        public var specStatement: String {
            switch self {
            case .illFormed: "MQTT-1.5.4-1"
            case .nullCharacter: "MQTT-1.5.4-2"
            case .controlCharacter, .nonCharacter: "MQTT-1.5.4-3"
            }
        }
    }

    /// Decodes and validates; returns the string or the first violation.
    @inlinable
    public static func decode(_ bytes: UnsafeRawBufferPointer, allowDiscouragedCodePoints: Bool) -> Result<String, Violation> {
        // Fast path: pure printable ASCII is by far the common case for topics and ids.
        var allPrintableASCII = true
        for byte in bytes where byte < 0x20 || byte >= 0x7F {
            allPrintableASCII = false
            break
        }
        if allPrintableASCII {
            return .success(String(decoding: bytes, as: UTF8.self))
        }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            return .failure(.illFormed)
        }
        for scalar in string.unicodeScalars {
            let value = scalar.value
            if value == 0 { return .failure(.nullCharacter) }
            if allowDiscouragedCodePoints { continue }
            if value <= 0x1F || (0x7F...0x9F).contains(value) { return .failure(.controlCharacter(value)) }
            if (0xFDD0...0xFDEF).contains(value) || value & 0xFFFE == 0xFFFE {
                return .failure(.nonCharacter(value))
            }
        }
        return .success(string)
    }
}
