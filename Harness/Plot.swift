// Plot.swift — the SVG pieces bench's and sweep's plots share: "nice" axis ticks, a
// plot area with a grid, a zero line, tick labels and units, one colour per design
// family, and text lines wrapped so a long machine line never runs off the picture.
import Foundation

enum Plot {
    /// Round tick values covering lo…hi, about `count` of them (steps of 1, 2 or 5 × 10^k).
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / Double(max(1, count))
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var out: [Double] = []
        var v = (lo / step).rounded(.down) * step
        while v <= hi + step * 1e-9 {
            if v >= lo - step * 1e-9 { out.append(abs(v) < step * 1e-9 ? 0 : v) }
            v += step
        }
        return out
    }

    /// A tick label with as many decimals as the step needs.
    static func label(_ v: Double, step: Double) -> String {
        let decimals = step >= 1 ? 0 : Int(ceil(-log10(step)))
        return String(format: "%.\(decimals)f", v)
    }

    /// The colour of a design family (the seed's chain against tail: blue against orange).
    static func colour(_ f: DesignFamily) -> String {
        switch f {
        case .baseline: return "#555555"
        case .chainCalls: return "#1f77b4"
        case .tailCalls: return "#ff7f0e"
        case .extensions: return "#2ca02c"
        case .libxdp: return "#9467bd"
        case .dispatcher: return "#8c564b"
        case .staticKeys: return "#e377c2"
        case .callTables: return "#17becf"
        case .bytecode: return "#bcbd22"
        case .attachData: return "#7f7f7f"
        case .machineCode: return "#393b79"
        case .scenario: return "#d62728"
        }
    }

    /// Lines of at most `width` characters, broken at " | " or spaces.
    static func wrap(_ s: String, width: Int) -> [String] {
        var lines: [String] = [], cur = ""
        for word in s.components(separatedBy: " ") {
            if !cur.isEmpty && cur.count + 1 + word.count > width {
                lines.append(cur)
                cur = word
            } else {
                cur = cur.isEmpty ? word : cur + " " + word
            }
        }
        if !cur.isEmpty { lines.append(cur) }
        return lines
    }

    static func text(_ x: Double, _ y: Double, _ s: String, anchor: String = "start", size: Int = 12, fill: String = "#000",
                     extra: String = "") -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" text-anchor=\"\(anchor)\" font-size=\"\(size)\" fill=\"\(fill)\"\(extra)>\(s.xmlEscaped)</text>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    /// A rectangular plot area mapping data to pixels.
    struct Area {
        let left, top, width, height: Double
        let x: ClosedRange<Double>, y: ClosedRange<Double>
        func px(_ v: Double) -> Double { left + (v - x.lowerBound) / (x.upperBound - x.lowerBound) * width }
        func py(_ v: Double) -> Double { top + height - (v - y.lowerBound) / (y.upperBound - y.lowerBound) * height }

        /// The frame, the grid at each tick, tick labels, the axis titles and the zero line.
        func axes(xTicks: [Double], yTicks: [Double], xTitle: String, yTitle: String, verticalGrid: Bool = true) -> String {
            var s = "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(width))\" height=\"\(f(height))\" fill=\"none\" stroke=\"#999\"/>\n"
            let xs = xTicks.count > 1 ? xTicks[1] - xTicks[0] : 1, ys = yTicks.count > 1 ? yTicks[1] - yTicks[0] : 1
            for t in yTicks {
                s += "<line x1=\"\(f(left))\" y1=\"\(f(py(t)))\" x2=\"\(f(left + width))\" y2=\"\(f(py(t)))\" stroke=\"#e4e4e4\"/>\n"
                s += "<line x1=\"\(f(left - 4))\" y1=\"\(f(py(t)))\" x2=\"\(f(left))\" y2=\"\(f(py(t)))\" stroke=\"#666\"/>\n"
                s += Plot.text(left - 7, py(t) + 4, label(t, step: ys), anchor: "end", size: 11, fill: "#333")
            }
            for t in xTicks {
                if verticalGrid { s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(top))\" x2=\"\(f(px(t)))\" y2=\"\(f(top + height))\" stroke=\"#e4e4e4\"/>\n" }
                s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(top + height))\" x2=\"\(f(px(t)))\" y2=\"\(f(top + height + 4))\" stroke=\"#666\"/>\n"
                s += Plot.text(px(t), top + height + 17, label(t, step: xs), anchor: "middle", size: 11, fill: "#333")
            }
            if y.contains(0) {
                s += "<line x1=\"\(f(left))\" y1=\"\(f(py(0)))\" x2=\"\(f(left + width))\" y2=\"\(f(py(0)))\" stroke=\"#444\" stroke-width=\"1.2\"/>\n"
            }
            if x.contains(0) && !verticalGrid {
                s += "<line x1=\"\(f(px(0)))\" y1=\"\(f(top))\" x2=\"\(f(px(0)))\" y2=\"\(f(top + height))\" stroke=\"#444\" stroke-width=\"1.2\"/>\n"
            }
            s += Plot.text(left + width / 2, top + height + 36, xTitle, anchor: "middle", size: 12)
            s += Plot.text(left - 44, top + height / 2, yTitle, anchor: "middle", size: 12,
                           extra: " transform=\"rotate(-90 \(f(left - 44)) \(f(top + height / 2)))\"")
            return s
        }
    }

    static func header(width: Double, height: Double) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    }
}
