//! A block-style YAML writer whose output every YAML reader reads back the same: YAML 1.2
//! (yaml_serde, libyaml) and YAML 1.1 (kubectl and Helm through sigs.k8s.io/yaml, PyYAML).
//!
//! YAML 1.1 reads more plain scalars as non-strings than 1.2 does (`on`, `off`, `yes`, `no`,
//! `y`, `n` as booleans, `0777` as octal, `1_000` and `1:30` as numbers, `2026-01-01` as a
//! date), so a writer that quotes only what 1.2 would mis-read loses keys such as `on` when
//! kubectl applies the file. This writer quotes every such key and value. It covers what a
//! CRD holds: mappings, sequences, strings, numbers, booleans and null (no tags, no anchors).

use std::fmt::Write as _;

use yaml_serde::{Mapping, Value};

/// `value` as a YAML document (mappings and sequences in block style).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

/// Writes the entries of `m`, the first on the current line, the others at `indent`.
fn mapping(out: &mut String, m: &Mapping, indent: usize) {
    for (i, (key, value)) in m.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str(&key_text(key));
        out.push(':');
        match value {
            Value::Mapping(child) if !child.is_empty() => {
                out.push('\n');
                pad(out, indent + 2);
                mapping(out, child, indent + 2);
            }
            // Sequences under a key start at the key's column (as kubectl writes them).
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                pad(out, indent);
                sequence(out, items, indent);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent));
                out.push('\n');
            }
        }
    }
}

/// Writes the items of `s` as `- ` entries, the first on the current line, the others at
/// `indent`.
fn sequence(out: &mut String, s: &[Value], indent: usize) {
    for (i, item) in s.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Mapping(child) if !child.is_empty() => mapping(out, child, indent + 2),
            Value::Sequence(child) if !child.is_empty() => sequence(out, child, indent + 2),
            other => {
                out.push_str(&scalar(other, indent));
                out.push('\n');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn key_text(key: &Value) -> String {
    match key {
        // A key never uses a block scalar.
        Value::String(s) if s.contains('\n') => double_quoted(s),
        other => scalar(other, 0),
    }
}

/// A scalar, or an empty collection, as text; block scalars continue on lines indented past
/// `indent`.
fn scalar(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s, indent),
        Value::Sequence(_) => "[]".into(),
        Value::Mapping(_) => "{}".into(),
        // CRDs hold no tags; written as their value.
        Value::Tagged(t) => scalar(&t.value, indent),
    }
}

/// YAML 1.1 floats need a dot (`1e-7` is a string there, `1.0e-7` a number).
fn number(n: &yaml_serde::Number) -> String {
    let text = n.to_string();
    match text.find(['e', 'E']) {
        Some(e) if n.is_f64() && !text[..e].contains('.') => {
            format!("{}.0{}", &text[..e], &text[e..])
        }
        _ => text,
    }
}

fn string(s: &str, indent: usize) -> String {
    if s.contains('\n') {
        return literal_block(s, indent).unwrap_or_else(|| double_quoted(s));
    }
    if plain_is_safe(s) {
        s.to_owned()
    } else if s.chars().all(printable) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        double_quoted(s)
    }
}

/// `|` or `|-` with the lines indented by `indent + 2`, when the text survives it unchanged.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let (body, chomp) = match s.strip_suffix('\n') {
        Some(body) if body.ends_with('\n') => return None, // keep-chomping: not worth it
        Some(body) => (body, "|"),
        None => (s, "|-"),
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let fits = !body.is_empty()
        && !body.starts_with([' ', '\t'])
        && lines.iter().all(|l| {
            !l.ends_with([' ', '\t', '\r']) && l.chars().all(|c| c != '\t' && printable(c))
        });
    if !fits {
        return None;
    }
    let mut out = chomp.to_owned();
    for line in lines {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent + 2));
            out.push_str(line);
        }
    }
    Some(out)
}

/// Printable in a quoted scalar without an escape.
fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if !printable(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True when `s` written plain reads back as this string under YAML 1.1 and 1.2 alike.
fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Indicators, and what YAML 1.1 may resolve to numbers, dates or sexagesimals: anything
    // starting like a number is quoted (`.5`, `+1`, `-1`, `1:30`, `2026-01-01`, `0x1f`), but
    // not a path such as `.spec.type`.
    let second = s.chars().nth(1);
    let starts_badly = "-?:,[]{}#&*!|>'\"%@`~=<+ ".contains(first)
        || first.is_ascii_digit()
        || (first == '.' && second.is_none_or(|c| c.is_ascii_digit() || c == '.'));
    !starts_badly
        && !yaml11_special(s)
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(|c| printable(c) && c != '\t')
}

/// Words YAML 1.1 or 1.2 reads as booleans, null or special floats, in any letter case.
fn yaml11_special(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "true"
            | "false"
            | "null"
            | "nan"
            | "inf"
            | ".nan"
            | ".inf"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(s: &str) -> String {
        to_string(&Value::String(s.into())).trim_end().to_owned()
    }

    #[test]
    fn quotes_what_yaml_1_1_reads_as_booleans_or_numbers() {
        for word in [
            "on",
            "On",
            "ON",
            "off",
            "OFF",
            "yes",
            "Yes",
            "no",
            "NO",
            "y",
            "Y",
            "n",
            "N",
            "true",
            "False",
            "~",
            "null",
            "Null",
            "NULL",
            "",
            "0777",
            "1_000",
            "1:30",
            "0x1f",
            "1e3",
            "+1",
            "-1",
            ".5",
            ".inf",
            "-.inf",
            ".NaN",
            ".",
            "...",
            "2026-01-01",
            "=",
            "<<",
            "12",
        ] {
            let text = written(word);
            assert!(
                text.starts_with('\'') || text.starts_with('"'),
                "{word:?} written as {text}"
            );
            let back: Value = yaml_serde::from_str(&text).unwrap();
            assert_eq!(back, Value::String(word.into()), "{word:?} → {text}");
        }
    }

    #[test]
    fn quotes_keys_too() {
        let mut m = Mapping::new();
        m.insert("on".into(), Value::Sequence(vec!["Release".into()]));
        m.insert("incidents".into(), Value::Bool(true));
        let text = to_string(&Value::Mapping(m.clone()));
        assert_eq!(text, "'on':\n- Release\nincidents: true\n");
        assert_eq!(
            yaml_serde::from_str::<Value>(&text).unwrap(),
            Value::Mapping(m)
        );
    }

    #[test]
    fn leaves_ordinary_words_plain() {
        for word in [
            "Release",
            "rollback.frys.io",
            "apps/v1",
            "self.type == 'VersionRollback' || !has(self.versionRollback)",
            "Ready",
            "onDelete",
            "note",
            ".spec.type",
            ".status.conditions[?(@.type==\"Ready\")].status",
        ] {
            assert_eq!(written(word), word);
        }
    }

    #[test]
    fn writes_kubectl_style_blocks() {
        let value: Value = yaml_serde::from_str(
            "a:\n  b: [x, {c: 1, d: [2.5, null]}]\n  e: {}\n  f: []\n  g: \"line one\\nline two\"\n",
        )
        .unwrap();
        assert_eq!(
            to_string(&value),
            "a:\n  b:\n  - x\n  - c: 1\n    d:\n    - 2.5\n    - null\n  e: {}\n  f: []\n  g: |-\n    line one\n    line two\n"
        );
    }

    #[test]
    fn floats_keep_a_dot() {
        let value = Value::Number(1e-7.into());
        assert_eq!(to_string(&value), "1.0e-7\n");
        assert_eq!(to_string(&Value::Number(100.0.into())), "100.0\n");
    }

    proptest! {
        /// Whatever the text, it reads back as the same string (and a key as the same key).
        #[test]
        fn strings_read_back_unchanged(s in "\\PC*|[ -~\\n\\t]{0,40}|(on|yes|[0-9:._+-]{1,6})") {
            let mut m = Mapping::new();
            m.insert(Value::String(s.clone()), Value::String(s.clone()));
            m.insert("next".into(), Value::Sequence(vec![Value::String(s.clone())]));
            let text = to_string(&Value::Mapping(m.clone()));
            let back: Value = yaml_serde::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, Value::Mapping(m), "{}", text);
        }
    }
}
