//! The purity guard: the pure core (assessment, decisions, verification rules, the strategy
//! planners) never reaches the Kubernetes client, tokio or std I/O, an HTTP client, or the
//! operator's I/O layer. A plain test: it reads the sources, needs no environment.
//!
//! Every `use` (groups, renames, globs, nested on many lines), every path in code (types,
//! expressions, patterns, attributes) and every `a::b` path inside macro calls is resolved to
//! an absolute path, following `use` aliases, `self`/`super`/`crate`, glob imports and the
//! crate's own re-exports (`super::Cluster` in a strategy file is `strategy/mod.rs`'s
//! `pub use cluster::Cluster`, so it is `crate::strategy::cluster::Cluster`). Not followed:
//! `#[path]` attributes, and what a macro expands to (only paths written in the call are seen).
//! A guarded module that calls an unguarded crate module which itself does I/O is not caught:
//! guard the I/O layers by name in [`FORBIDDEN`].

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The pure core, relative to the repository: a folder covers every `.rs` file below it. A new
/// pure module (a rung's planner) goes here.
const PURE: &[&str] = &[
    "src/assess",
    "src/decide",
    "src/alerts/state.rs",
    "src/alerts/payload.rs",
    "src/verify/rules.rs",
    // Profile resolution: spec + profile + operator config → effective.
    "src/profile/resolve.rs",
    // The strategy planners and the pure helpers they share.
    "src/strategy/circuit_breaker.rs",
    "src/strategy/traffic_shifting.rs",
    "src/strategy/environment_switch.rs",
    "src/strategy/version_rollback.rs",
    "src/strategy/emergency_shutdown.rs",
    "src/strategy/webhook.rs",
    "src/strategy/route",
    "src/strategy/scale.rs",
    "src/strategy/record.rs",
    "src/strategy/undo_plan.rs",
    "src/strategy/kind.rs",
    "src/strategy/json.rs",
    "src/strategy/error.rs",
];

/// Guarded files that are pure by intent but not yet in fact, each a debt to pay: a listed
/// file that becomes pure fails the guard until it is removed from here. Empty since the rungs
/// read through the `Objects` trait instead of `Cluster`.
const NOT_YET_PURE: &[&str] = &[];

/// Absolute paths (and everything below them) the pure core may not reach, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("kube::Client", "the Kubernetes client"),
    ("kube::client", "the Kubernetes client"),
    ("kube::Api", "the Kubernetes client"),
    ("kube::api", "the Kubernetes client"),
    (
        "kube::runtime",
        "the Kubernetes client (watchers, controllers)",
    ),
    ("kube::Discovery", "the Kubernetes client (API discovery)"),
    ("kube::discovery", "the Kubernetes client (API discovery)"),
    (
        "kube::Config",
        "the Kubernetes client's configuration (reads files)",
    ),
    (
        "kube::config",
        "the Kubernetes client's configuration (reads files)",
    ),
    ("kube_client", "the Kubernetes client"),
    (
        "kube_runtime",
        "the Kubernetes client (watchers, controllers)",
    ),
    ("tokio::net", "tokio I/O"),
    ("tokio::fs", "tokio I/O"),
    ("tokio::io", "tokio I/O"),
    ("tokio::process", "tokio I/O"),
    ("tokio::signal", "tokio I/O"),
    // Sleeping and timeouts depend on the wall clock: pure code is given `now` instead.
    ("tokio::time", "tokio timers (pure code is given `now`)"),
    ("tokio::spawn", "tokio tasks"),
    ("tokio::task", "tokio tasks"),
    ("std::fs", "std I/O"),
    ("std::net", "std I/O"),
    ("std::process", "std I/O"),
    ("std::thread::sleep", "sleeping (pure code is given `now`)"),
    ("reqwest", "an HTTP client"),
    ("hyper", "an HTTP client"),
    ("prometheus_http_query", "an HTTP client (Prometheus)"),
    ("crate::controller", "the reconcilers (the I/O layer)"),
    ("crate::strategy::cluster", "the strategies' I/O layer"),
];

#[test]
fn the_pure_core_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let krate = Crate::load(root);
    let mut failures = vec![];
    for file in krate.files_under(PURE) {
        let found = krate.violations(&file);
        let temporary = NOT_YET_PURE.contains(&file.as_str());
        match (found.is_empty(), temporary) {
            (false, false) => failures.extend(found),
            (false, true) => {
                eprintln!("NOT_YET_PURE (temporary) {file}:\n  {}", found.join("\n  "))
            }
            (true, true) => failures.push(format!(
                "{file} is pure now: remove it from NOT_YET_PURE in tests/purity.rs"
            )),
            (true, false) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "the pure core reaches I/O:\n{}",
        failures.join("\n")
    );
}

/// A renamed or moved module must not drop out of the guard unnoticed.
#[test]
fn every_guarded_path_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in PURE {
        assert!(
            root.join(path).exists(),
            "{path} (PURE in tests/purity.rs) does not exist: update the list"
        );
    }
    for path in NOT_YET_PURE {
        assert!(
            PURE.iter()
                .any(|p| path == p || path.starts_with(&format!("{p}/"))),
            "{path} is in NOT_YET_PURE but not covered by PURE"
        );
    }
}

/// The guard itself, on a small made-up crate: each way of reaching I/O is found, with its line.
#[test]
fn the_guard_sees_every_way_in() {
    let krate = Crate::from_sources(vec![
        (
            "src/lib.rs".into(),
            "pub mod decide;\npub mod strategy;\n".into(),
        ),
        (
            "src/strategy/mod.rs".into(),
            "mod cluster;\npub use cluster::Cluster;\n".into(),
        ),
        (
            "src/strategy/cluster.rs".into(),
            "pub struct Cluster;\n".into(),
        ),
        (
            "src/decide/mod.rs".into(),
            r#"use kube::{
    api::{Api, Patch},
    ResourceExt,
};
use tokio::io as aio;
fn a() { let _ = kube::Client::try_default(); }
fn b(_: &super::strategy::Cluster) {}
fn c() { tokio::join!(async { tokio::time::sleep(d()).await }); }
fn d() -> std::time::Duration { aio::empty(); std::time::Duration::ZERO }
mod tests {
    use super::*;
    fn e(_: Api<()>) {}
}
"#
            .into(),
        ),
    ]);
    let found = krate.violations("src/decide/mod.rs");
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.split(": ").next().unwrap())
        .collect();
    let expected = [
        "src/decide/mod.rs:2",  // Api, in a group on its own line
        "src/decide/mod.rs:2",  // Patch
        "src/decide/mod.rs:5",  // a renamed import
        "src/decide/mod.rs:6",  // a path in an expression
        "src/decide/mod.rs:7",  // through the crate's re-export
        "src/decide/mod.rs:8",  // inside a macro call
        "src/decide/mod.rs:9",  // through the renamed import
        "src/decide/mod.rs:12", // through a glob import of the parent's imports
    ];
    assert_eq!(lines, expected, "{found:#?}");
    assert!(
        found[4].contains("crate::strategy::cluster::Cluster"),
        "{}",
        found[4]
    );
    // A clean module passes; `ResourceExt` (kube, but not the client) and Duration are fine.
    let clean = Crate::from_sources(vec![
        ("src/lib.rs".into(), "mod pure;".into()),
        (
            "src/pure.rs".into(),
            "use kube::ResourceExt;\nuse std::time::Duration;\nfn f(_: Duration) {}".into(),
        ),
    ]);
    assert_eq!(clean.violations("src/pure.rs"), Vec::<String>::new());
}

type Segments = Vec<String>;

/// What one module declares that paths resolve through.
#[derive(Default)]
struct Module {
    /// `use` aliases: the name in scope, and the path as written (relative to this module).
    uses: BTreeMap<String, Segments>,
    /// Sources of `use ...::*`, as written.
    globs: Vec<Segments>,
    /// Child modules (files and inline `mod x { }`).
    children: BTreeSet<String>,
}

/// The library crate's sources and module tree.
struct Crate {
    /// Source text by file, relative to the repository (`src/...`).
    sources: BTreeMap<String, String>,
    /// Modules by absolute path (`crate`, `crate::strategy`, ...).
    modules: BTreeMap<Segments, Module>,
    /// (module, path) pairs [`Crate::resolve`] is working on, to stop at cycles.
    resolving: RefCell<BTreeSet<(Segments, Segments)>>,
}

impl Crate {
    /// The library under `root/src` (the binary's `main.rs` is another crate).
    fn load(root: &Path) -> Crate {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    if name != "src/main.rs" {
                        out.push((name, std::fs::read_to_string(&path).unwrap()));
                    }
                }
            }
        }
        let mut files = vec![];
        walk(&root.join("src"), root, &mut files);
        Crate::from_sources(files)
    }

    fn from_sources(files: Vec<(String, String)>) -> Crate {
        let mut krate = Crate {
            sources: files.into_iter().collect(),
            modules: BTreeMap::new(),
            resolving: RefCell::default(),
        };
        let files: Vec<(String, String)> = krate
            .sources
            .iter()
            .map(|(f, s)| (f.clone(), s.clone()))
            .collect();
        for (file, source) in files {
            let module = module_of(&file);
            krate.modules.entry(module.clone()).or_default();
            let syntax = syn::parse_file(&source).unwrap_or_else(|e| panic!("{file}: {e}"));
            if let Some((name, parent)) = module.split_last()
                && !parent.is_empty()
            {
                krate
                    .modules
                    .entry(parent.to_vec())
                    .or_default()
                    .children
                    .insert(name.clone());
            }
            let mut declare = Declarations {
                krate: &mut krate,
                module,
            };
            declare.visit_file(&syntax);
        }
        krate
    }

    /// Files of the crate under any of `roots` (files or folders), sorted.
    fn files_under(&self, roots: &[&str]) -> Vec<String> {
        self.sources
            .keys()
            .filter(|f| {
                roots
                    .iter()
                    .any(|r| f.as_str() == *r || f.starts_with(&format!("{r}/")))
            })
            .cloned()
            .collect()
    }

    /// `file:line: <path as written> reaches <forbidden> (<why>)` for each forbidden path.
    fn violations(&self, file: &str) -> Vec<String> {
        let syntax = syn::parse_file(&self.sources[file]).unwrap();
        let mut collect = Occurrences {
            module: module_of(file),
            found: vec![],
        };
        collect.visit_file(&syntax);
        let mut out = vec![];
        for (module, line, written) in collect.found {
            let resolved = self.resolve(&module, &written, 0).join("::");
            let hit = FORBIDDEN.iter().find(|(prefix, _)| {
                resolved == *prefix || resolved.starts_with(&format!("{prefix}::"))
            });
            if let Some((prefix, why)) = hit {
                let entry = format!(
                    "{file}:{line}: `{}` is {resolved}: {prefix} is {why}",
                    written.join("::")
                );
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }

    /// The absolute path of `path` written in module `at`. Paths of other crates (`kube::Api`)
    /// and local items that are not modules or imports (a type, a variable) stay as written.
    fn resolve(&self, at: &[String], path: &[String], depth: usize) -> Segments {
        // Imports can name each other in a circle through globs (`use StrategyKind::*` beside
        // `use super::*`): a path already being resolved stays as written.
        let key = (at.to_vec(), path.to_vec());
        if path.is_empty() || depth > 32 || self.resolving.borrow().contains(&key) {
            return path.to_vec();
        }
        self.resolving.borrow_mut().insert(key.clone());
        let resolved = self.resolve_step(at, path, depth);
        self.resolving.borrow_mut().remove(&key);
        resolved
    }

    fn resolve_step(&self, at: &[String], path: &[String], depth: usize) -> Segments {
        let first = path[0].as_str();
        if first == "crate" {
            return self.canonical(path, depth);
        }
        if first == "self" || first == "super" {
            let mut module = at.to_vec();
            let mut rest = &path[1..];
            if first == "super" {
                module.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    module.pop();
                    rest = &rest[1..];
                }
            }
            return self.canonical(&[module, rest.to_vec()].concat(), depth);
        }
        let Some(here) = self.modules.get(at) else {
            return path.to_vec();
        };
        // A name followed by more segments is a module or type: a child module wins over an
        // imported function of the same name (they live in different namespaces).
        if path.len() > 1 && here.children.contains(first) {
            return self.canonical(&[at.to_vec(), path.to_vec()].concat(), depth);
        }
        if let Some(target) = here.uses.get(first) {
            return self.resolve(
                at,
                &[target.clone(), path[1..].to_vec()].concat(),
                depth + 1,
            );
        }
        if here.children.contains(first) {
            return self.canonical(&[at.to_vec(), path.to_vec()].concat(), depth);
        }
        for glob in &here.globs {
            let source = self.resolve(at, glob, depth + 1);
            if self.declares(&source, first) {
                return self.canonical(&[source, path.to_vec()].concat(), depth + 1);
            }
        }
        path.to_vec()
    }

    /// Follows an absolute `crate::...` path through the modules it names and the imports
    /// (re-exports) it passes.
    fn canonical(&self, path: &[String], depth: usize) -> Segments {
        if path.first().is_none_or(|f| f != "crate") {
            return self.resolve(&[], path, depth + 1);
        }
        let mut module = vec!["crate".to_owned()];
        for (i, segment) in path.iter().enumerate().skip(1) {
            let Some(m) = self.modules.get(&module) else {
                break;
            };
            if m.children.contains(segment) {
                module.push(segment.clone());
            } else if m.uses.contains_key(segment) {
                return self.resolve(&module, &path[i..], depth + 1);
            } else {
                for glob in &m.globs {
                    let source = self.resolve(&module, glob, depth + 1);
                    if self.declares(&source, segment) {
                        return self.canonical(&[source, path[i..].to_vec()].concat(), depth + 1);
                    }
                }
                break;
            }
        }
        path.to_vec()
    }

    /// True when module `module` of this crate has a child module or an import named `name`.
    fn declares(&self, module: &[String], name: &str) -> bool {
        self.modules
            .get(module)
            .is_some_and(|m| m.children.contains(name) || m.uses.contains_key(name))
    }
}

/// The module path of a file: `src/lib.rs` is `crate`, `src/a/mod.rs` and `src/a.rs` are
/// `crate::a`.
fn module_of(file: &str) -> Segments {
    let inner = file.trim_start_matches("src/").trim_end_matches(".rs");
    let mut module = vec!["crate".to_owned()];
    for part in inner.split('/') {
        if part != "lib" && part != "mod" {
            module.push(part.to_owned());
        }
    }
    module
}

/// One `use` tree flattened: (path, the name it brings into scope, glob, line of its last name).
fn flatten(tree: &syn::UseTree, prefix: &mut Segments, out: &mut Vec<UseLeaf>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let (path, alias) = if n.ident == "self" {
                (prefix.clone(), prefix.last().cloned())
            } else {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                (path, Some(n.ident.to_string()))
            };
            out.push(UseLeaf {
                path,
                alias,
                glob: false,
                line: n.ident.span().start().line,
            });
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            let alias = (r.rename != "_").then(|| r.rename.to_string());
            out.push(UseLeaf {
                path,
                alias,
                glob: false,
                line: r.ident.span().start().line,
            });
        }
        syn::UseTree::Glob(g) => out.push(UseLeaf {
            path: prefix.clone(),
            alias: None,
            glob: true,
            line: g.star_token.spans[0].start().line,
        }),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                flatten(tree, prefix, out);
            }
        }
    }
}

struct UseLeaf {
    path: Segments,
    alias: Option<String>,
    glob: bool,
    line: usize,
}

fn leaves(item: &syn::ItemUse) -> Vec<UseLeaf> {
    let mut out = vec![];
    flatten(&item.tree, &mut vec![], &mut out);
    out
}

/// Records each module's imports and inline child modules (first pass).
struct Declarations<'a> {
    krate: &'a mut Crate,
    module: Segments,
}

impl<'ast> Visit<'ast> for Declarations<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let module = self.krate.modules.entry(self.module.clone()).or_default();
        for leaf in leaves(item) {
            if leaf.glob {
                module.globs.push(leaf.path);
            } else if let Some(alias) = leaf.alias {
                module.uses.insert(alias, leaf.path);
            }
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let name = item.ident.to_string();
        self.krate
            .modules
            .entry(self.module.clone())
            .or_default()
            .children
            .insert(name.clone());
        if item.content.is_some() {
            self.module.push(name);
            self.krate.modules.entry(self.module.clone()).or_default();
            visit::visit_item_mod(self, item);
            self.module.pop();
        }
    }
}

/// Collects every path a file writes: (module it is written in, line, segments).
struct Occurrences {
    module: Segments,
    found: Vec<(Segments, usize, Segments)>,
}

impl Occurrences {
    fn record(&mut self, line: usize, path: Segments) {
        self.found.push((self.module.clone(), line, path));
    }

    /// `a::b::c` sequences in macro input (which syn leaves as tokens).
    fn scan(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.scan(g.stream()),
                TokenTree::Ident(first) => {
                    let mut path = vec![first.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || a.spacing() != Spacing::Joint || b.as_char() != ':'
                        {
                            break;
                        }
                        path.push(next.to_string());
                        j += 3;
                    }
                    if path.len() > 1 {
                        self.record(first.span().start().line, path);
                        i = j;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Occurrences {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        for leaf in leaves(item) {
            self.record(leaf.line, leaf.path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.record(first.ident.span().start().line, segments);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        visit::visit_item_mod(self, item);
        self.module.pop();
    }
}
