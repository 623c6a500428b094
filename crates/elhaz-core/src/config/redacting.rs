//! A deserializer over toml's spanned document whose errors never quote a value and know
//! their field path and position; see [`deserialize_all`].

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Problem, closest};

/// A path segment, innermost first while an error travels outwards.
#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A deserialization error without the value that caused it.
#[derive(Debug)]
pub(super) struct DeError {
    /// Innermost segment first.
    path: Vec<Seg>,
    span: Option<Range<usize>>,
    message: String,
    /// Start of the key to leave out on the next attempt (the innermost key involved).
    skip: Option<usize>,
}

impl DeError {
    fn new(message: String) -> DeError {
        DeError {
            path: Vec::new(),
            span: None,
            message,
            skip: None,
        }
    }

    fn at(mut self, span: Range<usize>) -> DeError {
        self.span.get_or_insert(span);
        self
    }

    fn in_key(
        mut self,
        key: &Spanned<toml::de::DeString<'_>>,
        value_span: Range<usize>,
    ) -> DeError {
        self.path.push(Seg::Key(key.get_ref().to_string()));
        self.span.get_or_insert(value_span);
        self.skip.get_or_insert(key.span().start);
        self
    }

    fn field(&self) -> String {
        let mut s = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Key(k) if s.is_empty() => s.push_str(k),
                Seg::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// What kind of value was found, without the value itself.
fn kind(u: &Unexpected<'_>) -> &'static str {
    match u {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a float",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "nothing",
        Unexpected::Option => "an optional value",
        Unexpected::NewtypeStruct | Unexpected::NewtypeVariant => "a value",
        Unexpected::Seq => "an array",
        Unexpected::Map | Unexpected::StructVariant => "a table",
        Unexpected::Enum | Unexpected::UnitVariant | Unexpected::TupleVariant => "a variant",
        Unexpected::Other(_) => "a value of another type",
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> DeError {
        DeError::new(msg.to_string())
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> DeError {
        DeError::new(format!("expected {exp}, found {}", kind(&unexp)))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> DeError {
        DeError::new(format!("invalid value ({}): expected {exp}", kind(&unexp)))
    }
    fn invalid_length(len: usize, exp: &dyn Expected) -> DeError {
        DeError::new(format!("has {len} elements; expected {exp}"))
    }
    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> DeError {
        DeError::new(format!(
            "unknown value; expected one of {}",
            expected.join(", ")
        ))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> DeError {
        let hint = match closest(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "expected one of {}",
                expected
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        // The path stays the enclosing table's: "field `role`: unknown field `rol`".
        DeError::new(format!("unknown field `{field}`; {hint}"))
    }
    fn missing_field(field: &'static str) -> DeError {
        let mut e = DeError::new("is required".into());
        e.path.push(Seg::Key(field.to_string()));
        e
    }
    fn duplicate_field(field: &'static str) -> DeError {
        let mut e = DeError::new("is set twice".into());
        e.path.push(Seg::Key(field.to_string()));
        e
    }
}

/// A value of the document plus the keys to leave out.
struct Node<'a, 'i> {
    v: &'a Spanned<DeValue<'i>>,
    skip: &'a HashSet<usize>,
}

impl<'de> de::Deserializer<'de> for Node<'_, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.v.span();
        let out = match self.v.get_ref() {
            DeValue::String(s) => visitor.visit_str(s),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => visitor.visit_i64(n),
                Err(_) => match u64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => visitor.visit_u64(n),
                    Err(_) => Err(DeError::new("integer out of range".into())),
                },
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => visitor.visit_f64(x),
                Err(_) => Err(DeError::new("invalid float".into())),
            },
            DeValue::Boolean(b) => visitor.visit_bool(*b),
            DeValue::Datetime(_) => Err(de::Error::invalid_type(
                Unexpected::Other("a datetime"),
                &visitor,
            )),
            DeValue::Array(a) => visitor.visit_seq(Seq {
                iter: a.iter().enumerate(),
                skip: self.skip,
            }),
            DeValue::Table(t) => visitor.visit_map(Map {
                iter: t.iter(),
                pending: None,
                skip: self.skip,
            }),
        };
        out.map_err(|e| e.at(span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.v.span();
        visitor.visit_some(self).map_err(|e| e.at(span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.v.span();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(span))
    }

    /// A unit variant is spelt as a string (`sso_token_cache = "memory"`); anything else
    /// goes through `deserialize_any` (and is refused by the enum's visitor).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.v.span();
        match self.v.get_ref() {
            DeValue::String(s) => {
                let d: de::value::StrDeserializer<'_, DeError> = s.as_ref().into_deserializer();
                visitor.visit_enum(d).map_err(|e| e.at(span))
            }
            _ => {
                let _ = (name, variants);
                self.deserialize_any(visitor)
            }
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

struct Seq<'a, I> {
    iter: I,
    skip: &'a HashSet<usize>,
}

impl<'de, 'a, 'i: 'a, I> de::SeqAccess<'de> for Seq<'a, I>
where
    I: Iterator<Item = (usize, &'a Spanned<DeValue<'i>>)>,
{
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, v)) = self.iter.next() else {
            return Ok(None);
        };
        seed.deserialize(Node { v, skip: self.skip })
            .map(Some)
            .map_err(|mut e| {
                e.path.push(Seg::Index(i));
                e.at(v.span())
            })
    }
}

struct Map<'a, 'i, I> {
    iter: I,
    pending: Option<(
        &'a Spanned<toml::de::DeString<'i>>,
        &'a Spanned<DeValue<'i>>,
    )>,
    skip: &'a HashSet<usize>,
}

impl<'de, 'a, 'i: 'a, I> de::MapAccess<'de> for Map<'a, 'i, I>
where
    I: Iterator<
        Item = (
            &'a Spanned<toml::de::DeString<'i>>,
            &'a Spanned<DeValue<'i>>,
        ),
    >,
{
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self
            .iter
            .by_ref()
            .find(|(k, _)| !self.skip.contains(&k.span().start))
        else {
            return Ok(None);
        };
        self.pending = Some((k, v));
        let key: de::value::StrDeserializer<'_, DeError> = k.get_ref().as_ref().into_deserializer();
        seed.deserialize(key).map(Some).map_err(|mut e| {
            // The key itself is the problem (unknown field): report and skip the key.
            e.span.get_or_insert(k.span());
            e.skip.get_or_insert(k.span().start);
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (k, v) = self
            .pending
            .take()
            .ok_or_else(|| DeError::new("value requested before its key".into()))?;
        seed.deserialize(Node { v, skip: self.skip })
            .map_err(|e| e.in_key(k, v.span()))
    }
}

/// Deserializes `T` from `src`, reporting every field problem rather than only the first:
/// after an error the offending key is left out and the document is deserialized again
/// (at most [`super::MAX_PROBLEMS`] times). A syntax error is reported alone. Returns the
/// value built without the offending keys, if any could be built, and the problems.
pub(super) fn deserialize_all<T: de::DeserializeOwned>(src: &str) -> (Option<T>, Vec<Problem>) {
    let doc = match DeTable::parse(src) {
        Ok(doc) => doc,
        Err(e) => {
            return (
                None,
                vec![Problem {
                    at: e.span().map(|s| s.start),
                    field: String::new(),
                    message: e.message().to_string(),
                }],
            );
        }
    };
    let span = doc.span();
    let root = Spanned::new(span, DeValue::Table(doc.into_inner()));
    let mut skip = HashSet::new();
    let mut problems = Vec::new();
    // Each attempt leaves out one more key; bounded twice over (see the dedup below).
    for _ in 0..2 * super::MAX_PROBLEMS {
        if problems.len() >= super::MAX_PROBLEMS {
            break;
        }
        match T::deserialize(Node {
            v: &root,
            skip: &skip,
        }) {
            Ok(t) => return (Some(t), problems),
            Err(e) => {
                let again = e.skip.is_some_and(|s| skip.insert(s));
                let field = e.field();
                // A key left out for being invalid is then "missing": one report is enough.
                if !problems
                    .iter()
                    .any(|p: &Problem| p.field == field && !field.is_empty())
                {
                    problems.push(Problem {
                        at: e.span.as_ref().map(|s| s.start),
                        field,
                        message: e.message,
                    });
                }
                if !again {
                    break;
                }
            }
        }
    }
    (None, problems)
}
