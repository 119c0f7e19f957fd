//! The README's Rust blocks are excerpts of this example: each names its
//! source file on its first line, and its lines must appear in that file,
//! in order (lines may be left out, and `// ...` marks where). So the
//! README cannot drift from code that compiles and is tested.

use std::path::Path;

/// The lines of `text` that carry code, trimmed.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && *line != "// ...")
        .collect()
}

#[test]
fn readme_rust_blocks_are_excerpts_of_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```rust\n") {
        let body_start = start + "```rust\n".len();
        let end = rest[body_start..]
            .find("```")
            .map(|at| body_start + at)
            .expect("a closed code block");
        let block = &rest[body_start..end];
        rest = &rest[end + 3..];
        blocks += 1;

        let (header, code) = block.split_once('\n').expect("a block with code");
        let source = header
            .strip_prefix("// ")
            .filter(|path| path.starts_with("examples/orders/"))
            .unwrap_or_else(|| panic!("a README Rust block must name its source: {header:?}"));
        let text =
            std::fs::read_to_string(root.join(source)).unwrap_or_else(|e| panic!("{source}: {e}"));
        let mut file = code_lines(&text).into_iter();
        for line in code_lines(code) {
            assert!(
                file.any(|candidate| candidate == line),
                "README block from {source}: {line:?} is not in the file (or out of order)"
            );
        }
    }
    assert!(blocks >= 5, "only {blocks} Rust blocks found");
}
