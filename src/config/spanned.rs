//! A serde `Deserializer` over marked-yaml's spanned node tree that reports
//! every error with its `file:line:column` and dotted path, instead of
//! stopping at the first one.
//!
//! How it keeps going: unknown keys are recorded and skipped before the
//! derived visitor sees them. Any other error (wrong type, value out of range,
//! an error raised by a `Deserialize` impl such as a bad cron expression) is
//! recorded at the node where it happened, that node is marked *poisoned*,
//! and the whole document is deserialized again with the poisoned node left
//! out (every config struct is `#[serde(default)]`, so a missing key is never
//! an error in itself). Each pass poisons one more node, so the loop ends, and
//! a typical config is a few hundred nodes: the passes cost microseconds.
//! This needs no placeholder values per type and works for any
//! `Deserialize` impl, including derived visitors we do not control.
//!
//! Along the way it records the position of every path it visits, so that
//! the semantic checks that run afterwards can point at the field too.

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::Node;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

/// A position in one of the loaded files (`file` indexes [`Diagnostics::files`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub file: usize,
    pub line: usize,
    pub column: usize,
}

/// One configuration error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Diagnostic {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// Errors, positions and poisoned nodes, shared by every file of one load.
#[derive(Default)]
pub(crate) struct Diagnostics {
    files: Vec<PathBuf>,
    errors: RefCell<Vec<Diagnostic>>,
    // Keyed by file, then path: a lookup by `&str` allocates nothing (a
    // load records a position for every node).
    positions: RefCell<HashMap<usize, HashMap<String, Pos>>>,
    /// Original indices of the items each sequence yielded (poisoned items
    /// are left out, so item `i` of the Vec may be item `j` of the YAML).
    seq_indices: RefCell<HashMap<usize, HashMap<String, Vec<usize>>>>,
    poisoned: RefCell<HashMap<usize, HashSet<String>>>,
}

impl Diagnostics {
    pub fn add_file(&mut self, path: PathBuf) -> usize {
        self.files.push(path);
        self.files.len() - 1
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn is_empty(&self) -> bool {
        self.errors.borrow().is_empty()
    }

    /// Record an error (the same error twice is kept once).
    pub fn error(&self, pos: Pos, path: &str, message: impl Into<String>) {
        let d = Diagnostic {
            pos,
            path: path.to_string(),
            message: message.into(),
        };
        let mut errors = self.errors.borrow_mut();
        if !errors.contains(&d) {
            errors.push(d);
        }
    }

    /// Record an error at `path`, or at its nearest ancestor that has a
    /// position (a missing key points at the mapping that lacks it). Errors
    /// under a node that already failed to deserialize are dropped: they
    /// would only repeat the first error.
    pub fn error_at(&self, file: usize, path: &str, message: impl Into<String>) {
        if self.is_poisoned(file, path) {
            return;
        }
        let pos = self.pos(file, path);
        self.error(pos, path, message);
    }

    /// Whether `path` or one of its ancestors failed to deserialize.
    pub fn is_poisoned(&self, file: usize, path: &str) -> bool {
        let poisoned = self.poisoned.borrow();
        let Some(poisoned) = poisoned.get(&file) else {
            return false;
        };
        let mut p = path;
        loop {
            if poisoned.contains(p) {
                return true;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return false,
            }
        }
    }

    /// Whether the YAML had this exact key (or item).
    pub fn has(&self, file: usize, path: &str) -> bool {
        self.positions
            .borrow()
            .get(&file)
            .is_some_and(|m| m.contains_key(path))
    }

    /// Position of `path`, or of its nearest recorded ancestor.
    pub fn pos(&self, file: usize, path: &str) -> Pos {
        let positions = self.positions.borrow();
        let positions = positions.get(&file);
        let mut p = path;
        loop {
            if let Some(pos) = positions.and_then(|m| m.get(p)) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => {
                    return Pos {
                        file,
                        line: 1,
                        column: 1,
                    }
                }
            }
        }
    }

    /// The YAML index of the `i`-th deserialized item of the list at `path`.
    pub fn yaml_index(&self, file: usize, path: &str, i: usize) -> usize {
        self.seq_indices
            .borrow()
            .get(&file)
            .and_then(|m| m.get(path))
            .and_then(|v| v.get(i).copied())
            .unwrap_or(i)
    }

    /// Every error, formatted `file:line:column: dotted.path: message`,
    /// sorted by file then position.
    pub fn render(&self) -> Vec<String> {
        let mut errors = self.errors.borrow().clone();
        errors.sort();
        errors
            .iter()
            .map(|d| {
                let file = self.files.get(d.pos.file).map(|p| p.display().to_string());
                let path = if d.path.is_empty() {
                    "(top level)"
                } else {
                    d.path.as_str()
                };
                format!(
                    "{}:{}:{}: {}: {}",
                    file.as_deref().unwrap_or("?"),
                    d.pos.line,
                    d.pos.column,
                    path,
                    d.message
                )
            })
            .collect()
    }

    fn poison(&self, file: usize, path: &str) {
        self.poisoned
            .borrow_mut()
            .entry(file)
            .or_default()
            .insert(path.to_string());
    }

    fn poisoned_count(&self) -> usize {
        self.poisoned.borrow().values().map(HashSet::len).sum()
    }

    fn record_pos(&self, file: usize, path: &str, pos: Pos) {
        self.positions
            .borrow_mut()
            .entry(file)
            .or_default()
            .insert(path.to_string(), pos);
    }

    /// Whether this very node (not an ancestor) failed to deserialize.
    fn is_poisoned_exactly(&self, file: usize, path: &str) -> bool {
        self.poisoned
            .borrow()
            .get(&file)
            .is_some_and(|s| s.contains(path))
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> `` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

pub(crate) fn child_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn child_index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Where a node starts. A block mapping's own mark is unhelpful (it points
/// past the first key), so a mapping is located by its first key.
pub(crate) fn node_pos(node: &Node) -> Pos {
    let marker = match node {
        Node::Mapping(m) => m
            .iter()
            .next()
            .and_then(|(k, _)| k.span().start())
            .or(m.span().start()),
        _ => node.span().start(),
    };
    marker_pos(marker)
}

fn marker_pos(marker: Option<&marked_yaml::Marker>) -> Pos {
    match marker {
        Some(m) => Pos {
            file: m.source(),
            line: m.line(),
            column: m.column(),
        },
        None => Pos {
            file: 0,
            line: 1,
            column: 1,
        },
    }
}

/// Where a map entry is reported: at the value for scalars, at the key for
/// mappings and lists (whose own marks sit on the next line).
fn entry_pos(key: &MarkedScalarNode, value: &Node) -> Pos {
    match value {
        Node::Scalar(s) if !s.as_str().is_empty() => marker_pos(s.span().start()),
        _ => marker_pos(key.span().start()),
    }
}

/// Deserialize one document. Returns `None` when the top level itself is
/// unusable; every problem found is in `diag` either way.
pub(crate) fn from_node<T: DeserializeOwned>(node: &Node, diag: &Diagnostics) -> Option<T> {
    loop {
        let before = diag.poisoned_count();
        match T::deserialize(NodeDe::new(node, String::new(), diag)) {
            Ok(v) => return Some(v),
            Err(DeError::Abort) if diag.poisoned_count() > before => continue,
            Err(DeError::Abort) => return None,
            Err(DeError::Msg(m)) => {
                diag.error(node_pos(node), "", m);
                return None;
            }
        }
    }
}

/// `Msg` is a fresh error the caller records; `Abort` means "already
/// recorded, unwind to the top and try again".
#[derive(Debug)]
pub(crate) enum DeError {
    Msg(String),
    Abort,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Msg(m) => f.write_str(m),
            DeError::Abort => f.write_str("(error already reported)"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Msg(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::Msg(format!("missing required key '{field}'"))
    }
}

/// Closest candidate within a small edit distance, for "did you mean".
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = if word.len() <= 4 {
        1
    } else {
        2 + word.len() / 8
    };
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn one_of(value: &str, allowed: &[&str]) -> String {
    let mut m = format!(
        "unknown value '{value}', expected one of: {}",
        allowed.join(", ")
    );
    if let Some(s) = did_you_mean(value, allowed) {
        m.push_str(&format!(" (did you mean '{s}'?)"));
    }
    m
}

// ---------------------------------------------------------------------------
// Scalar interpretation (YAML 1.2 core schema, plain scalars only).

fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

fn as_bool(s: &MarkedScalarNode) -> Option<bool> {
    s.as_bool()
}

fn as_int(s: &MarkedScalarNode) -> Option<i128> {
    if !s.may_coerce() {
        return None;
    }
    let t = s.as_str();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn as_float(s: &MarkedScalarNode) -> Option<f64> {
    if !s.may_coerce() {
        return None;
    }
    match s.as_str() {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        t if t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            t.parse().ok()
        }
        _ => None,
    }
}

/// "a string 'x'", "an integer (5)", "a list", ... for type errors.
fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Scalar(s) if is_null(s) => "an empty value".into(),
        Node::Scalar(s) if as_bool(s).is_some() => format!("a boolean ({})", s.as_str()),
        Node::Scalar(s) if as_int(s).is_some() => format!("an integer ({})", s.as_str()),
        Node::Scalar(s) if as_float(s).is_some() => format!("a number ({})", s.as_str()),
        Node::Scalar(s) => {
            let t = s.as_str();
            if t.chars().count() > 40 {
                let short: String = t.chars().take(37).collect();
                format!("a string '{short}...'")
            } else {
                format!("a string '{t}'")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The deserializer.

pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    diag: &'a Diagnostics,
}

impl<'a> NodeDe<'a> {
    pub fn new(node: &'a Node, path: String, diag: &'a Diagnostics) -> Self {
        NodeDe { node, path, diag }
    }

    fn file(&self) -> usize {
        node_pos(self.node).file
    }

    fn scalar(&self) -> Option<&'a MarkedScalarNode> {
        self.node.as_scalar()
    }

    fn is_null(&self) -> bool {
        self.scalar().is_some_and(is_null)
    }

    fn mismatch<T>(&self, expected: &str) -> Result<T, DeError> {
        Err(DeError::Msg(format!(
            "expected {expected}, found {}",
            describe(self.node)
        )))
    }

    fn int(&self, min: i128, max: i128) -> Result<i128, DeError> {
        match self.scalar().and_then(as_int) {
            Some(v) if v >= min && v <= max => Ok(v),
            Some(v) => Err(DeError::Msg(format!(
                "expected an integer between {min} and {max}, found {v}"
            ))),
            None => self.mismatch("an integer"),
        }
    }

    fn map_access(&self, fields: Option<&'static [&'static str]>) -> MapAcc<'a> {
        let mut entries = Vec::new();
        let file = self.file();
        if let Node::Mapping(m) = self.node {
            for (k, v) in m.iter() {
                let path = child_key(&self.path, k.as_str());
                if let Some(fields) = fields {
                    if !fields.contains(&k.as_str()) {
                        let mut msg = format!("unknown key '{}'", k.as_str());
                        if let Some(s) = did_you_mean(k.as_str(), fields) {
                            msg.push_str(&format!(" (did you mean '{s}'?)"));
                        }
                        self.diag.error(marker_pos(k.span().start()), &path, msg);
                        continue;
                    }
                }
                if self.diag.is_poisoned_exactly(file, &path) {
                    continue;
                }
                let pos = entry_pos(k, v);
                self.diag.record_pos(file, &path, pos);
                entries.push((k, v, path, pos));
            }
        }
        MapAcc {
            entries: entries.into_iter(),
            value: None,
            diag: self.diag,
        }
    }

    fn seq_access(&self) -> SeqAcc<'a> {
        let mut items = Vec::new();
        let mut indices = Vec::new();
        let file = self.file();
        if let Node::Sequence(s) = self.node {
            for (i, item) in s.iter().enumerate() {
                let path = child_index(&self.path, i);
                if self.diag.is_poisoned_exactly(file, &path) {
                    continue;
                }
                let pos = node_pos(item);
                self.diag.record_pos(file, &path, pos);
                indices.push(i);
                items.push((item, path, pos));
            }
        }
        self.diag
            .seq_indices
            .borrow_mut()
            .entry(file)
            .or_default()
            .insert(self.path.clone(), indices);
        SeqAcc {
            items: items.into_iter(),
            diag: self.diag,
        }
    }
}

/// Run `seed` on a child node; a fresh error is recorded at the child and
/// the child poisoned, then everything unwinds for another pass.
fn child<'de, T: DeserializeSeed<'de>>(
    seed: T,
    node: &Node,
    path: String,
    pos: Pos,
    diag: &Diagnostics,
) -> Result<T::Value, DeError> {
    match seed.deserialize(NodeDe::new(node, path.clone(), diag)) {
        Ok(v) => Ok(v),
        Err(DeError::Abort) => Err(DeError::Abort),
        Err(DeError::Msg(m)) => {
            diag.error(pos, &path, m);
            diag.poison(pos.file, &path);
            Err(DeError::Abort)
        }
    }
}

macro_rules! de_int {
    ($($method:ident $t:ty => $visit:ident $as:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.int(<$t>::MIN as i128, <$t>::MAX as i128)?;
            visitor.$visit(v as $as)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            Node::Mapping(_) => visitor.visit_map(self.map_access(None)),
            Node::Sequence(_) => visitor.visit_seq(self.seq_access()),
            Node::Scalar(s) if is_null(s) => visitor.visit_unit(),
            Node::Scalar(s) => {
                if let Some(b) = as_bool(s) {
                    visitor.visit_bool(b)
                } else if let Some(i) = as_int(s) {
                    if let Ok(v) = i64::try_from(i) {
                        visitor.visit_i64(v)
                    } else if let Ok(v) = u64::try_from(i) {
                        visitor.visit_u64(v)
                    } else {
                        visitor.visit_str(s.as_str())
                    }
                } else if let Some(f) = as_float(s) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(s.as_str())
                }
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().and_then(as_bool) {
            Some(b) => visitor.visit_bool(b),
            None => self.mismatch("a boolean (true or false)"),
        }
    }

    de_int! {
        deserialize_i8 i8 => visit_i64 i64,
        deserialize_i16 i16 => visit_i64 i64,
        deserialize_i32 i32 => visit_i64 i64,
        deserialize_i64 i64 => visit_i64 i64,
        deserialize_u8 u8 => visit_u64 u64,
        deserialize_u16 u16 => visit_u64 u64,
        deserialize_u32 u32 => visit_u64 u64,
        deserialize_u64 u64 => visit_u64 u64,
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_i128(self.int(i128::MIN, i128::MAX)?)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_u128(self.int(0, i128::MAX)? as u128)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().and_then(as_float) {
            Some(f) => visitor.visit_f64(f),
            None => self.mismatch("a number"),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(|s| s.as_str()) {
            Some(t) if t.chars().count() == 1 => {
                visitor.visit_char(t.chars().next().unwrap_or(' '))
            }
            _ => self.mismatch("a single character"),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            // Any non-null scalar is text: `name: 123` is the string "123".
            Some(s) if !is_null(s) => visitor.visit_str(s.as_str()),
            _ => self.mismatch("a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_unit()
        } else {
            self.mismatch("an empty value")
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // An empty value (`key:` with nothing after it) is an empty list.
        if matches!(self.node, Node::Sequence(_)) || self.is_null() {
            visitor.visit_seq(self.seq_access())
        } else {
            self.mismatch("a list")
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if matches!(self.node, Node::Mapping(_)) || self.is_null() {
            visitor.visit_map(self.map_access(None))
        } else {
            self.mismatch("a mapping")
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // An empty value (`monitoring:` with everything commented out) means
        // all defaults.
        if matches!(self.node, Node::Mapping(_)) || self.is_null() {
            visitor.visit_map(self.map_access(Some(fields)))
        } else {
            self.mismatch("a mapping")
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Only unit variants written as plain strings (`type: vm`).
        match self.scalar() {
            Some(s) if !is_null(s) => {
                if variants.contains(&s.as_str()) {
                    visitor.visit_enum(s.as_str().into_deserializer())
                } else {
                    Err(DeError::Msg(one_of(s.as_str(), variants)))
                }
            }
            _ => self.mismatch(&format!("one of: {}", variants.join(", "))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

type MapEntry<'a> = (&'a MarkedScalarNode, &'a Node, String, Pos);

struct MapAcc<'a> {
    entries: std::vec::IntoIter<MapEntry<'a>>,
    value: Option<(&'a Node, String, Pos)>,
    diag: &'a Diagnostics,
}

impl<'de> de::MapAccess<'de> for MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value, path, pos)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((value, path, pos));
        let k: de::value::StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
        seed.deserialize(k).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path, pos) = self.value.take().ok_or(DeError::Abort)?;
        child(seed, node, path, pos, self.diag)
    }
}

struct SeqAcc<'a> {
    items: std::vec::IntoIter<(&'a Node, String, Pos)>,
    diag: &'a Diagnostics,
}

impl<'de> de::SeqAccess<'de> for SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((node, path, pos)) => child(seed, node, path, pos, self.diag).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        a: u16,
        b: bool,
        c: Option<String>,
        kind: Kind,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        #[default]
        Plain,
        Fancy,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        items: Vec<Inner>,
        name: String,
        tags: Vec<String>,
    }

    fn run(yaml: &str) -> (Option<Outer>, Vec<String>) {
        let mut diag = Diagnostics::default();
        let file = diag.add_file("t.yaml".into());
        let node = parse(file, yaml).unwrap();
        let out = from_node::<Outer>(&node, &diag);
        (out, diag.render())
    }

    #[test]
    fn every_error_is_reported_with_position_and_path() {
        let yaml = "\
items:
  - a: 70000
    b: maybe
    kind: fancy
  - a: 3
    cc: x
    kind: fanci
name: [x]
tags: hello
";
        let (out, errors) = run(yaml);
        assert_eq!(
            errors,
            [
                "t.yaml:2:8: items[0].a: expected an integer between 0 and 65535, found 70000",
                "t.yaml:3:8: items[0].b: expected a boolean (true or false), found a string 'maybe'",
                "t.yaml:6:5: items[1].cc: unknown key 'cc' (did you mean 'c'?)",
                "t.yaml:7:11: items[1].kind: unknown value 'fanci', expected one of: plain, fancy \
                 (did you mean 'fancy'?)",
                "t.yaml:8:1: name: expected a string, found a list",
                "t.yaml:9:7: tags: expected a list, found a string 'hello'",
            ]
        );
        let out = out.unwrap();
        assert_eq!(out.items.len(), 2);
        assert_eq!(out.items[0].kind, Kind::Fancy);
        assert_eq!(out.items[1].a, 3);
    }

    #[test]
    fn empty_values_mean_defaults_and_quoted_numbers_are_strings() {
        let (out, errors) = run("items:\n  - a: '5'\n    c: 12\nname: x\ntags:\n");
        assert_eq!(
            errors,
            ["t.yaml:2:8: items[0].a: expected an integer, found a string '5'"]
        );
        let out = out.unwrap();
        assert!(out.tags.is_empty());
        assert_eq!(out.items[0].c.as_deref(), Some("12"));
    }

    #[test]
    fn poisoned_items_keep_their_yaml_index() {
        let mut diag = Diagnostics::default();
        let file = diag.add_file("t.yaml".into());
        let node = parse(file, "items:\n  - 5\n  - a: 1\n").unwrap();
        let out = from_node::<Outer>(&node, &diag).unwrap();
        assert_eq!(out.items.len(), 1);
        assert_eq!(diag.yaml_index(file, "items", 0), 1);
        assert!(diag.has(file, "items[1].a"));
        assert_eq!(
            diag.pos(file, "items[1].nothing"),
            Pos {
                file,
                line: 3,
                column: 5
            }
        );
    }

    #[test]
    fn did_you_mean_finds_close_keys_only() {
        let keys = ["retention_days", "keep_last", "keep_daily"];
        assert_eq!(
            did_you_mean("retention_dayz", &keys),
            Some("retention_days")
        );
        assert_eq!(did_you_mean("keep_dayly", &keys), Some("keep_daily"));
        assert_eq!(did_you_mean("compression", &keys), None);
    }
}
