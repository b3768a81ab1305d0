//! The module layout, checked against the code: no two top-level modules of `src/` import each
//! other, directly or through others, and the list of which module uses which in
//! ARCHITECTURE.md is the one the code has.
//!
//! An import is any `crate::module` path outside comments and test code (`tests.rs` files and
//! `#[cfg(test)]` items), in a `use` line or inline: reading the text is enough, since every
//! path to another module of the crate starts with `crate::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// For each top-level module, the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `line` without a trailing `//` comment (one that does not start inside a string).
fn strip_comment(line: &str) -> &str {
    let mut quotes = 0;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quotes += 1,
            b'/' if quotes % 2 == 0 && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The code of a file without comments and without its `#[cfg(test)]` items.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(strip_comment(line));
            out.push('\n');
            continue;
        }
        // Skip the item: to its `;`, or to the brace that closes it.
        let mut depth = 0i32;
        for item in lines.by_ref() {
            let item = strip_comment(item);
            depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
            if depth == 0 && (item.trim_end().ends_with(';') || item.trim_end().ends_with('}')) {
                break;
            }
        }
    }
    out
}

/// The top-level modules `code` names with `crate::`, grouped forms (`crate::{a, b::c}`)
/// included.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Which top-level module of `src` imports which.
fn imports(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(top.clone()).or_default();
        used.extend(
            named_modules(&code(&text))
                .into_iter()
                .filter(|m| *m != top),
        );
    }
    graph
}

/// A cycle of `graph` as the modules along it (first repeated at the end), if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

/// ARCHITECTURE.md's list of uses: the lines `module -> a, b` of its `uses` block.
fn documented() -> Graph {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```uses\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```uses block");
    let mut graph = Graph::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (module, used) = line.split_once("->").unwrap_or((line, ""));
        let used = used
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty());
        graph
            .entry(module.trim().to_string())
            .or_default()
            .extend(used);
    }
    graph
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string());
    }
    graph
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let graph = imports(&root().join("src"));
    assert!(graph.len() > 5, "read too few modules: {graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!(
            "an import cycle between top-level modules: {}",
            found.join(" -> ")
        );
    }
}

#[test]
fn architecture_md_lists_the_imports_the_code_has() {
    let code = imports(&root().join("src"));
    let doc = documented();
    for module in code.keys().chain(doc.keys()).collect::<BTreeSet<_>>() {
        let (in_code, in_doc) = (code.get(module), doc.get(module));
        assert_eq!(
            in_code.cloned().unwrap_or_default(),
            in_doc.cloned().unwrap_or_default(),
            "what {module} uses: the code (left) and ARCHITECTURE.md (right) differ"
        );
    }
}

#[test]
fn the_reading_finds_cycles_and_imports() {
    let direct = graph_of(&[("a", "b"), ("b", "a")]);
    assert_eq!(cycle(&direct).unwrap(), ["a", "b", "a"]);
    let through = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    assert_eq!(cycle(&through).unwrap().len(), 4);
    let layered = graph_of(&[("a", "b"), ("b", "c"), ("a", "c")]);
    assert_eq!(cycle(&layered), None);

    let text = "use crate::config::Config;\n\
                use crate::{resp, net::socket};\n\
                // crate::server in a comment\n\
                let x = crate::topology::Shard::new(); // crate::lock\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::proxy::Proxy;\n    fn f() { crate::lock::x() }\n}\n\
                fn g() -> crate::backend::Reply {}\n";
    let names: Vec<String> = named_modules(&code(text)).into_iter().collect();
    assert_eq!(
        names,
        ["backend", "config", "net", "resp", "topology"].map(String::from)
    );
}
