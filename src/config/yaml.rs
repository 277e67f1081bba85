//! Reading one YAML file into a tree of marked nodes (every node knows its
//! file, line and column), with what borgmatic users write:
//!
//! - anchors and aliases (`&defaults` / `*defaults`): an alias is a copy of
//!   the anchored node, keeping the anchor's positions, so an error in an
//!   aliased value points at the text that holds it;
//! - merge keys (`<<: *defaults`, `<<: [*a, *b]`, YAML 1.1's merge type,
//!   which YAML 1.2 parsers keep as an extension): the merged mappings'
//!   entries are added where the mapping has no key of that name, the
//!   first listed winning;
//! - `${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}`
//!   (unset) in values, from the environment; `$${` is a literal `${`. An
//!   unset variable without a default is an error at its position. Keys
//!   are never interpolated.
//!
//! Tags (`!!str`) stay unsupported, duplicate keys are errors, and quoted
//! scalars stay strings (`port: "8007"` is not an integer), as before.

use hashlink::LinkedHashMap;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode, Marker, Span};
use marked_yaml::Node;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker as YamlMarker, TScalarStyle};

/// A problem in a file: where, the field (`services[0].name`, empty for
/// syntax errors), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl YamlError {
    fn at(m: &Marker, message: impl Into<String>) -> YamlError {
        YamlError {
            line: m.line(),
            column: m.column(),
            path: String::new(),
            message: message.into(),
        }
    }
}

/// Parse one file's text (`file` is its index for the markers).
pub(crate) fn parse(file: usize, text: &str) -> Result<Node, YamlError> {
    let mut loader = Loader {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        done: None,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut loader, false) {
        let m = loader.marker(*e.marker());
        let full = e.to_string();
        // yaml-rust2 appends " at byte N line L column C": we give those.
        let msg = full.split(" at byte ").next().unwrap_or(&full).to_string();
        return Err(YamlError::at(&m, msg));
    }
    if let Some(e) = loader.error {
        return Err(e);
    }
    Ok(loader.done.unwrap_or_else(|| {
        let m = Marker::new(file, 0, 1, 1);
        Node::from(MarkedMappingNode::new_empty(Span::new_with_marks(m, m)))
    }))
}

/// A mapping or a sequence being read.
enum Frame {
    Map {
        start: Marker,
        anchor: usize,
        map: LinkedHashMap<MarkedScalarNode, Node>,
        key: Option<MarkedScalarNode>,
        /// `<<` values, merged at the end of the mapping.
        merges: Vec<(Marker, Node)>,
    },
    Seq {
        start: Marker,
        anchor: usize,
        list: Vec<Node>,
    },
}

struct Loader {
    file: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    done: Option<Node>,
    error: Option<YamlError>,
}

impl Loader {
    fn marker(&self, m: YamlMarker) -> Marker {
        Marker::new(self.file, m.index(), m.line(), m.col() + 1)
    }

    fn fail(&mut self, m: &Marker, msg: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError::at(m, msg));
        }
    }

    /// A complete node: remember it under its anchor, then hand it to the
    /// mapping or sequence it belongs to.
    fn complete(&mut self, node: Node, anchor: usize, mark: &Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if !matches!(node, Node::Mapping(_)) {
                    self.fail(mark, "the top level must be a mapping (key: value)");
                }
                self.done = Some(node);
            }
            Some(Frame::Seq { list, .. }) => list.push(node),
            Some(Frame::Map {
                map, key, merges, ..
            }) => match key.take() {
                None => match node {
                    Node::Scalar(k) => *key = Some(k),
                    _ => self.fail(mark, "mapping keys must be plain strings"),
                },
                Some(k) if k.as_str() == "<<" && k.may_coerce() => merges.push((*mark, node)),
                Some(k) => {
                    if let Some((prev, _)) = map.get_key_value(&k) {
                        let first = prev
                            .span()
                            .start()
                            .map(|m| format!("{}:{}", m.line(), m.column()))
                            .unwrap_or_default();
                        let msg = format!("duplicate key '{}' (first at line {first})", k.as_str());
                        let at = k.span().start().copied().unwrap_or(*mark);
                        self.fail(&at, msg);
                    } else {
                        map.insert(k, node);
                    }
                }
            },
        }
    }

    /// Add the `<<` mappings' entries the mapping does not have.
    fn merge(
        &mut self,
        map: &mut LinkedHashMap<MarkedScalarNode, Node>,
        merges: Vec<(Marker, Node)>,
    ) {
        for (mark, value) in merges {
            let sources: Vec<Node> = match value {
                Node::Mapping(_) => vec![value],
                Node::Sequence(s) => s.iter().cloned().collect(),
                Node::Scalar(_) => {
                    self.fail(
                        &mark,
                        "'<<' (merge) takes a mapping or a list of mappings, such as *defaults",
                    );
                    continue;
                }
            };
            for source in sources {
                let Node::Mapping(m) = source else {
                    self.fail(
                        &mark,
                        "'<<' (merge) takes a mapping or a list of mappings, such as *defaults",
                    );
                    continue;
                };
                for (k, v) in m.iter() {
                    if !map.contains_key(k) {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, ev: Event, ymark: YamlMarker) {
        if self.error.is_some() {
            return;
        }
        let mark = self.marker(ymark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart | Event::DocumentEnd => {}
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.complete(node, 0, &mark),
                None => self.fail(
                    &mark,
                    "an alias (*name) names no anchor (&name) defined before it",
                ),
            },
            Event::Scalar(value, style, anchor, tag) => {
                if tag.is_some() {
                    return self.fail(&mark, "YAML tags (!tag) are not supported");
                }
                let mut node = MarkedScalarNode::new(Span::new_start(mark), value);
                node.set_coerce(matches!(style, TScalarStyle::Plain));
                self.complete(Node::from(node), anchor, &mark);
            }
            Event::MappingStart(anchor, tag) | Event::SequenceStart(anchor, tag)
                if tag.is_some() =>
            {
                let _ = anchor;
                self.fail(&mark, "YAML tags (!tag) are not supported");
            }
            Event::MappingStart(anchor, _) => {
                if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                    return self.fail(&mark, "mapping keys must be plain strings");
                }
                self.stack.push(Frame::Map {
                    start: mark,
                    anchor,
                    map: LinkedHashMap::new(),
                    key: None,
                    merges: Vec::new(),
                });
            }
            Event::SequenceStart(anchor, _) => {
                if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                    return self.fail(&mark, "mapping keys must be plain strings");
                }
                self.stack.push(Frame::Seq {
                    start: mark,
                    anchor,
                    list: Vec::new(),
                });
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    start,
                    anchor,
                    mut map,
                    merges,
                    ..
                }) = self.stack.pop()
                {
                    self.merge(&mut map, merges);
                    let span = Span::new_with_marks(start, mark);
                    self.complete(
                        Node::from(MarkedMappingNode::new(span, map)),
                        anchor,
                        &start,
                    );
                }
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    start,
                    anchor,
                    list,
                }) = self.stack.pop()
                {
                    let span = Span::new_with_marks(start, mark);
                    self.complete(
                        Node::from(MarkedSequenceNode::new(span, list)),
                        anchor,
                        &start,
                    );
                }
            }
        }
    }
}

/// Replace `${VAR}` forms in every value of `node` (not in keys), from
/// `lookup`. Returns the errors (unset variables, unclosed `${`) with their
/// positions; the values with errors are left as written.
pub(crate) fn interpolate(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<YamlError> {
    let mut errors = Vec::new();
    walk(node, "", lookup, &mut errors);
    errors
}

fn walk(
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<YamlError>,
) {
    match node {
        Node::Scalar(s) => {
            if !s.as_str().contains("${") {
                return;
            }
            match expand(s.as_str(), lookup) {
                Ok(v) => {
                    let coerce = s.may_coerce();
                    let mut n = MarkedScalarNode::new(*s.span(), v);
                    n.set_coerce(coerce);
                    *s = n;
                }
                Err(msg) => {
                    let m = s
                        .span()
                        .start()
                        .copied()
                        .unwrap_or_else(|| Marker::new(0, 0, 1, 1));
                    let mut e = YamlError::at(&m, msg);
                    e.path = path.to_string();
                    errors.push(e);
                }
            }
        }
        Node::Sequence(seq) => {
            for (i, n) in seq.iter_mut().enumerate() {
                walk(n, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Node::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.as_str().to_string()
                } else {
                    format!("{path}.{}", k.as_str())
                };
                walk(v, &p, lookup, errors);
            }
        }
    }
}

/// One value with its `${...}` forms replaced.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("'${{' without a closing '}}' in '{text}'"))?;
            out.push_str(&substitute(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default, empty_counts) = match (expr.find(":-"), expr.find('-')) {
        (Some(i), _) => (&expr[..i], Some(&expr[i + 2..]), true),
        (None, Some(i)) => (&expr[..i], Some(&expr[i + 1..]), false),
        (None, None) => (expr, None, false),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'${{{expr}}}' is not a variable reference (${{NAME}}, ${{NAME:-default}} or ${{NAME-default}}; $${{ for a literal ${{)"
        ));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() && empty_counts => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (give a default with ${{{name}:-default}})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("pve1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_the_forms_and_leaves_other_dollars() {
        let e = |t: &str| expand(t, &env);
        assert_eq!(e("https://${HOST}:8006").unwrap(), "https://pve1:8006");
        assert_eq!(e("${NOPE:-x}/${EMPTY:-y}/${EMPTY-z}").unwrap(), "x/y/");
        assert_eq!(e("${NOPE-}").unwrap(), "");
        assert_eq!(
            e("$${HOST} costs $5 and $HOME").unwrap(),
            "${HOST} costs $5 and $HOME"
        );
        assert!(e("${NOPE}").unwrap_err().contains("NOPE is not set"));
        assert!(e("${HOST").unwrap_err().contains("without a closing"));
        assert!(e("${1X}").unwrap_err().contains("not a variable reference"));
    }

    #[test]
    fn anchors_aliases_and_merge_keys_keep_positions() {
        let text =
            "base: &b\n  a: 1\n  b: 2\nx:\n  <<: *b\n  b: 3\ny: *b\nz:\n  <<: [*b, {c: 4}]\n";
        let node = parse(0, text).unwrap();
        let m = node.as_mapping().unwrap();
        let x = m.get_mapping("x").unwrap();
        assert_eq!(x.get_scalar("a").unwrap().as_str(), "1");
        assert_eq!(
            x.get_scalar("b").unwrap().as_str(),
            "3",
            "explicit keys win"
        );
        // The merged value keeps the position where it is written.
        assert_eq!(x.get_scalar("a").unwrap().span().start().unwrap().line(), 2);
        assert_eq!(
            m.get_mapping("y")
                .unwrap()
                .get_scalar("b")
                .unwrap()
                .as_str(),
            "2"
        );
        let z = m.get_mapping("z").unwrap();
        assert_eq!(z.get_scalar("c").unwrap().as_str(), "4");
        assert!(z.get_node("<<").is_none());
    }

    #[test]
    fn errors_name_their_line() {
        let e = parse(0, "a: 1\nb: *nope\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        let e = parse(0, "a: 1\na: 2\n").unwrap_err();
        assert!(
            e.message.contains("duplicate key 'a' (first at line 1:1)"),
            "{e:?}"
        );
        assert_eq!(e.line, 2);
        let e = parse(0, "x:\n  <<: 5\n").unwrap_err();
        assert!(e.message.contains("merge"), "{e:?}");
        let e = parse(0, "a: !!str 1\n").unwrap_err();
        assert!(e.message.contains("tags"), "{e:?}");
        let e = parse(0, "- 1\n").unwrap_err();
        assert!(e.message.contains("top level"), "{e:?}");
        let e = parse(0, "a: [1\n").unwrap_err();
        assert!(e.line >= 1 && !e.message.contains(" at byte "), "{e:?}");
    }
}
