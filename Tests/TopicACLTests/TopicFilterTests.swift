import Testing
import TopicACL

@Suite("TopicFilter")
struct TopicFilterTests {
    @Test("Valid and invalid filters (spec §4.7.1 examples)")
    func validity() throws {
        for valid in ["sport/tennis/player1/#", "sport/#", "#", "+", "+/tennis/#", "sport/+/player1", "/+", "a//b", "$SYS/#", "a b"] {
            #expect(TopicFilter.validate(valid) == nil, "\(valid)")
        }
        for invalid in ["sport/tennis#", "sport/tennis/#/ranking", "sport+", "+a", "a/+b", "#/a", ""] {
            #expect(TopicFilter.validate(invalid) != nil, "\(invalid)")
        }
    }

    @Test("Intersection", arguments: [
        ("#", "sensors/#", "sensors/#"), ("a/+/c", "a/b/#", "a/b/c"), ("+/x", "a/#", "a/x"), ("a/#", "a", "a"),
        ("a/#", "a/+", "a/+"), ("a/+", "a", nil), ("a/b", "a/c", nil), ("#", "$SYS/#", nil), ("$SYS/#", "$SYS/a", "$SYS/a"),
        ("+/+", "a/#", "a/+"), ("a/+/#", "a/b", "a/b"),
    ] as [(String, String, String?)])
    func intersection(a: String, b: String, expected: String?) throws {
        let fa = try TopicFilter(a)
        let fb = try TopicFilter(b)
        #expect(fa.intersection(fb)?.text == expected)
        #expect(fb.intersection(fa)?.text == expected)
    }

    @Test("Coverage", arguments: [
        ("a/b", "a/#", true), ("a", "a/#", true), ("a/#", "a/+/#", false), ("a/+", "a/#", true), ("a/+", "+/+", true),
        ("a/#", "#", true), ("$SYS/x", "#", false), ("$SYS/x", "$SYS/#", true), ("#", "a/#", false), ("a/+", "a/b", false),
        ("+", "+", true), ("a", "a", true), ("a/b", "a", false),
    ])
    func coverage(inner: String, outer: String, covered: Bool) throws {
        #expect(try TopicFilter(inner).isCovered(by: TopicFilter(outer)) == covered)
    }

    @Test("Matching agrees with coverage on topics (a topic is a filter without wildcards)")
    func matchingAgrees() throws {
        let filters = ["#", "+", "a/#", "a/+", "+/b", "a/b", "/+", "+/+", "$SYS/#", "a//b", "a/+/#"]
        let topics = ["a", "a/b", "/b", "a/", "", "/", "$SYS/x", "$SYS", "a//b", "a/b/c", "b"]
        for f in filters {
            for t in topics where !t.isEmpty {
                #expect(try TopicFilter(f).matches(t) == TopicFilter(t).isCovered(by: TopicFilter(f)), "\(f) vs \(t)")
            }
        }
    }
}
