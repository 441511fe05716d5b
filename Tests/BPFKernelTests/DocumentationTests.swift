// Every BPFKernel file opens with the kernel file it mirrors; where its mechanism is told
// in the DocC catalog, the article exists and the catalog's landing page links it.
import XCTest

final class DocumentationTests: XCTestCase {
    func testEveryFileNamesWhatItMirrorsAndEveryArticleItPointsToExists() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let src = root.appendingPathComponent("Sources/BPFKernel")
        let catalog = src.appendingPathComponent("BPFKernel.docc")
        let landing = try String(contentsOf: catalog.appendingPathComponent("BPFKernel.md"), encoding: .utf8)
        let files = try FileManager.default.contentsOfDirectory(atPath: src.path).filter { $0.hasSuffix(".swift") }
        XCTAssertGreaterThan(files.count, 20)
        var articles = 0
        for f in files {
            let text = try String(contentsOf: src.appendingPathComponent(f), encoding: .utf8)
            let header = text.split(separator: "\n").prefix { $0.hasPrefix("//") }.joined(separator: "\n")
            XCTAssertTrue(header.contains("Mirror"), "\(f) does not say what it mirrors")
            if let r = header.range(of: "BPFKernel.docc/") {
                let name = header[r.upperBound...].prefix { $0 != " " && $0 != "\n" }
                let slug = String(name.dropLast(3))  // ".md"
                XCTAssertTrue(FileManager.default.fileExists(atPath: catalog.appendingPathComponent(String(name)).path), "\(f) points to a missing \(name)")
                XCTAssertTrue(landing.contains("<doc:\(slug)>"), "the landing page does not link \(slug)")
                articles += 1
            }
        }
        XCTAssertGreaterThanOrEqual(articles, 20)
    }
}
