//! The schema's keys, listed from the config types themselves: a
//! deserializer that answers every `deserialize_struct` with each of the
//! struct's fields once (serde's own field lists, so every key the loader
//! accepts), every list with one item and every option with a value. Used
//! by the test that every accepted key is read by some code path.

use serde::de::{self, value::Error, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;
use std::cell::RefCell;

/// Every key path of the YAML schema: `global.backup.keep_last`,
/// `services[].health_checks[].url`, ... (lists as `[]`), sorted.
pub fn all_keys() -> Vec<String> {
    let out = RefCell::new(Vec::new());
    let _ = super::Config::deserialize(Tracer {
        path: String::new(),
        out: &out,
    })
    .expect("the config types trace");
    let mut keys = out.into_inner();
    keys.sort();
    keys.dedup();
    keys
}

struct Tracer<'a> {
    path: String,
    out: &'a RefCell<Vec<String>>,
}

impl Tracer<'_> {
    /// A string the field's own `Deserialize` accepts: a crontab nickname
    /// for schedules, a zone name for time zones, a URL (which is also a
    /// valid path and secret) else.
    fn sample(&self) -> &'static str {
        if self.path.ends_with("schedule") {
            "daily"
        } else if self.path.ends_with("timezone") {
            "UTC"
        } else {
            "https://127.0.0.1/x"
        }
    }
}

macro_rules! scalar {
    ($($m:ident => $v:ident($val:expr)),* $(,)?) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.$v($val)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str(self.sample())
    }
    scalar! {
        deserialize_bool => visit_bool(true),
        deserialize_i8 => visit_i8(1),
        deserialize_i16 => visit_i16(1),
        deserialize_i32 => visit_i32(1),
        deserialize_i64 => visit_i64(1),
        deserialize_u8 => visit_u8(1),
        deserialize_u16 => visit_u16(1),
        deserialize_u32 => visit_u32(1),
        deserialize_u64 => visit_u64(1),
        deserialize_f32 => visit_f32(1.0),
        deserialize_f64 => visit_f64(1.0),
        deserialize_char => visit_char('x'),
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str(self.sample())
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str(self.sample())
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str(self.sample())
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bytes(b"x")
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bytes(b"x")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(One(Some(Tracer {
            path: format!("{}[]", self.path),
            out: self.out,
        })))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // Free-form maps (headers, labels): their keys are the user's.
        v.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
            String,
            String,
        )>()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            fields: fields.iter(),
            parent: self.path,
            current: String::new(),
            out: self.out,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_enum(variants[0].into_deserializer())
    }
}

/// A list of one item.
struct One<'a>(Option<Tracer<'a>>);

impl<'de> de::SeqAccess<'de> for One<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

/// Each field of a struct once, recorded as a key.
struct Fields<'a> {
    fields: std::slice::Iter<'static, &'static str>,
    parent: String,
    current: String,
    out: &'a RefCell<Vec<String>>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(f) = self.fields.next() else {
            return Ok(None);
        };
        self.current = if self.parent.is_empty() {
            f.to_string()
        } else {
            format!("{}.{f}", self.parent)
        };
        self.out.borrow_mut().push(self.current.clone());
        seed.deserialize(de::value::StrDeserializer::<Error>::new(f))
            .map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Tracer {
            path: self.current.clone(),
            out: self.out,
        })
    }
}
