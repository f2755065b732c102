//! A linear pre-check of YAML text before the parser sees it: the parser's simple-key
//! handling costs the square of the nesting depth, so nesting and node count are bounded
//! first, in one pass over the bytes.

#![forbid(unsafe_code)]

/// The bytes [`check_shape`] looks at: quotes, comments, flow brackets and separators.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    let bytes = *b"\"'#[]{},:";
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
};

/// Deepest nesting a rules file or config may have (a rules file needs 4 levels).
pub const MAX_DEPTH: usize = 64;
/// Most YAML nodes (keys, values, list items) a file may have: 60,000 forwards of six
/// fields fit, a flood of tiny nodes does not.
pub const MAX_NODES: usize = 1_000_000;

/// A linear pass over the text that bounds its nesting and node count before the parser
/// sees it (the parser's simple-key handling is quadratic in the nesting depth). It is
/// conservative: every `{`, `[`, indentation level and `- ` opening a line counts as a
/// level, and every `: `, `- ` and `,` as a node. Returns the line and the problem.
pub(crate) fn check_shape(text: &str) -> Result<usize, (usize, String)> {
    let mut nodes = 0usize;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let rest = &bytes[indent..];
        if rest.is_empty() || rest[0] == b'#' {
            continue;
        }
        if flow == 0 {
            while indents.last().is_some_and(|t| *t >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        // Block sequence entries opening the line (`- - - x`) each nest once more.
        let mut dashes = 0;
        let mut j = 0;
        while j + 1 < rest.len() && rest[j] == b'-' && rest[j + 1] == b' ' {
            dashes += 1;
            j += 2;
            while j < rest.len() && rest[j] == b' ' {
                j += 1;
            }
        }
        // Only a few bytes matter; the rest are skipped by a table lookup. The byte before
        // a position (a space at the start) decides whether a quote opens or `#` comments.
        let tail = &rest[j..];
        let mut deepest = flow;
        let mut k = 0;
        while let Some(off) = tail[k..].iter().position(|c| SPECIAL[usize::from(*c)]) {
            k += off;
            let c = tail[k];
            let prev = if k == 0 { b' ' } else { tail[k - 1] };
            match c {
                b'"' | b'\'' if matches!(prev, b' ' | b'[' | b'{' | b',' | b':') => {
                    // Skip to the closing quote on this line; none: the rest is quoted.
                    match tail[k + 1..].iter().position(|b| *b == c) {
                        Some(close) => k += close + 1,
                        None => break,
                    }
                }
                b'#' if prev == b' ' => break,
                b'[' | b'{' => {
                    flow += 1;
                    deepest = deepest.max(flow);
                }
                b']' | b'}' => flow = flow.saturating_sub(1),
                b',' | b':' => nodes += 1,
                _ => {}
            }
            k += 1;
        }
        nodes += dashes;
        let depth = indents.len() + dashes + deepest;
        if depth > MAX_DEPTH {
            return Err((i + 1, format!("nesting is deeper than {MAX_DEPTH} levels; a rules file needs 4")));
        }
        if nodes > MAX_NODES {
            return Err((i + 1, format!("more than {MAX_NODES} YAML nodes; split the file")));
        }
    }
    Ok(nodes)
}
