// DidYouMean.swift — "did you mean" for every name a user types: mnemonics, scenario
// keys, designs. The lowest module has it, so every layer above shares one.

/// Levenshtein distance.
public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count), cur = Array(repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
public func suggestion(for word: String, in candidates: [String]) -> String? {
    let best = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }.min { $0.1 < $1.1 }
    guard let (c, d) = best, d <= (c.count <= 3 ? 1 : c.count <= 8 ? 2 : 3) else { return nil }
    return c
}
