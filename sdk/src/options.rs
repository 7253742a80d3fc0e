//! Typed plugin options. A plugin declares its flags once, as a struct written with
//! [`options!`](crate::options!): the struct is deserialised from the run's options, and the
//! same declaration yields the [`ArgSpec`]s the host builds the command line from.
//!
//! ```ignore
//! deepembed_sdk::options! {
//!     pub struct MyOptions {
//!         /// The model directory.
//!         pub model_weights: std::path::PathBuf,
//!         /// Rows of context.
//!         #[arg(default = "30", min = 1)]
//!         pub context: i64,
//!         /// Options shared with other plugins, flattened into these.
//!         #[serde(flatten)]
//!         pub text: deepembed_sdk::options::TextInput,
//!     }
//! }
//! ```
//!
//! A field's doc comment is its help; its type gives the flag's kind (`Option<T>` and `bool`
//! may be left out, any other field without a default is required); `#[arg(...)]` calls the
//! [`ArgSpec`] builder methods of the same names.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;

use crate::{ArgKind, ArgSpec};

/// A plugin's options: deserialised from the run's options JSON, declaring their own flags.
/// Implemented by [`options!`](crate::options!).
pub trait Options: DeserializeOwned {
    fn arg_specs() -> Vec<ArgSpec>;
}

/// Reads a plugin's options from the JSON object the host sends.
pub fn parse<O: Options>(json: &str) -> Result<O> {
    Ok(serde_json::from_str(json)?)
}

/// A field's flags: one for a value, several for a flattened group of options.
pub trait Declare {
    fn declare(name: &str, help: &str) -> Vec<ArgSpec>;
}

/// A type that is one flag's value.
pub trait ArgType {
    const KIND: ArgKind;
    /// Whether the flag may be left out (`Option<T>`, `bool`).
    const OPTIONAL: bool = false;
    fn choices() -> Vec<String> {
        Vec::new()
    }
}

impl<T: ArgType> Declare for T {
    fn declare(name: &str, help: &str) -> Vec<ArgSpec> {
        let mut spec = ArgSpec::new(name, T::KIND, help);
        spec.required = !T::OPTIONAL;
        spec.choices = T::choices();
        vec![spec]
    }
}

macro_rules! arg_types {
    ($($ty:ty => $kind:ident),* $(,)?) => {
        $(impl ArgType for $ty {
            const KIND: ArgKind = ArgKind::$kind;
        })*
    };
}
arg_types!(String => String, PathBuf => Path, i64 => Int, u32 => Int, u64 => Int, usize => Int, f64 => Float, Vec<String> => List);

impl ArgType for bool {
    const KIND: ArgKind = ArgKind::Bool;
    const OPTIONAL: bool = true;
}

impl<T: ArgType> ArgType for Option<T> {
    const KIND: ArgKind = T::KIND;
    const OPTIONAL: bool = true;
    fn choices() -> Vec<String> {
        T::choices()
    }
}

/// Declares an options struct: see the [module documentation](crate::options).
#[macro_export]
macro_rules! options {
    (
        $(#[$smeta:meta])*
        $svis:vis struct $name:ident {
            $(
                $(#[doc = $help:literal])*
                $(#[serde($($serde:tt)*)])?
                $(#[arg($($key:ident = $value:expr),* $(,)?)])?
                $fvis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, $crate::serde::Deserialize)]
        #[serde(crate = "deepembed_sdk::serde")]
        $svis struct $name {
            $(
                $(#[doc = $help])*
                $(#[serde($($serde)*)])?
                $fvis $field: $ty,
            )*
        }

        impl $crate::options::Declare for $name {
            fn declare(_name: &str, _help: &str) -> Vec<$crate::ArgSpec> {
                <$name as $crate::options::Options>::arg_specs()
            }
        }

        impl $crate::options::Options for $name {
            fn arg_specs() -> Vec<$crate::ArgSpec> {
                #[allow(unused_mut)]
                let mut specs = Vec::new();
                $(
                    for spec in <$ty as $crate::options::Declare>::declare(
                        stringify!($field),
                        concat!($($help),*).trim(),
                    ) {
                        #[allow(unused_mut)]
                        let mut spec = spec;
                        $($(spec = spec.$key($value);)*)?
                        specs.push(spec);
                    }
                )*
                specs
            }
        }
    };
}

/// Declares a flag whose value is one of a few words, as an enum.
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, $crate::serde::Deserialize)]
        #[serde(crate = "deepembed_sdk::serde")]
        $vis enum $name {
            $($(#[doc = $doc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The word on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl $crate::options::ArgType for $name {
            const KIND: $crate::ArgKind = $crate::ArgKind::String;
            fn choices() -> Vec<String> {
                vec![$($text.to_string()),+]
            }
        }
    };
}

options! {
    /// For a plugin without flags of its own.
    pub struct NoOptions {}
}

choice! {
    /// DeepTune's `--use_case`.
    pub enum UseCase {
        Pretrained = "pretrained",
        Finetuned = "finetuned",
        Peft = "peft",
    }
}

impl UseCase {
    /// DeepTune's upper-case spelling in MODEL_STR (`PRETRAINED`, `FINETUNED`, `PEFT`).
    pub fn upper(self) -> &'static str {
        match self {
            UseCase::Pretrained => "PRETRAINED",
            UseCase::Finetuned => "FINETUNED",
            UseCase::Peft => "PEFT",
        }
    }
}

choice! {
    /// How a batch of texts is padded.
    pub enum Padding {
        /// Pad each batch to its longest text (only where the embedding ignores padding).
        Longest = "longest",
        /// Pad every text to `--max_length`, as DeepTune does.
        MaxLength = "max_length",
    }
}

options! {
    /// The layers DeepTune adds on a backbone when fine-tuning, which a checkpoint also shows.
    pub struct HeadOptions {
        /// Layers DeepTune added on the backbone (1 or 2; with 2 the embedding is the added
        /// layer's output). Default: read from the checkpoint.
        #[arg(min = 1, max = 2)]
        pub added_layers: Option<i64>,
        /// Width of the added embedding layer. Default: read from the checkpoint.
        #[arg(min = 1)]
        pub embed_size: Option<i64>,
        /// Classes of the fine-tuned head. Default: read from the checkpoint.
        #[arg(min = 1)]
        pub num_classes: Option<i64>,
    }
}

impl HeadOptions {
    /// Flags that mean nothing for a pretrained model: warn rather than fail, as DeepTune
    /// accepts them.
    pub fn warn_if_given_for_pretrained(&self) {
        if self.added_layers.is_some() || self.embed_size.is_some() || self.num_classes.is_some() {
            log::warn!("--added_layers, --embed_size and --num_classes apply to finetuned and peft models; ignored");
        }
    }

    /// Checks a value read from the checkpoint against the one the user gave, if any.
    pub fn agree(flag: &str, given: Option<i64>, found: i64, why: impl FnOnce() -> String) -> Result<()> {
        match given {
            Some(given) if given != found => bail!("--{flag} {given} was given, but {}", why()),
            _ => Ok(()),
        }
    }
}

options! {
    /// The input columns and tokenizing of text plugins.
    pub struct TextInput {
        /// Column holding the texts.
        #[arg(default = "text")]
        pub text_column: String,
        /// Column holding labels, written out as `labels` (optional).
        #[arg(default = "labels")]
        pub label_column: String,
        /// Tokens per text, special tokens included; longer texts are truncated.
        #[arg(default = "256", min = 1, max = 100_000)]
        pub max_length: usize,
        /// longest: pad each batch to its longest text where that cannot change the embedding
        /// (same embeddings, less work); max_length: always pad to --max_length, as DeepTune.
        #[arg(default = "longest")]
        pub padding: Padding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    options! {
        struct Example {
            /// The weights.
            model_weights: PathBuf,
            /// How many.
            #[arg(default = "3", min = 1)]
            count: i64,
            /// Optional words.
            words: Option<Vec<String>>,
            /// A switch.
            verbose: bool,
            /// The use case.
            #[arg(default = "pretrained")]
            use_case: UseCase,
            #[serde(flatten)]
            head: HeadOptions,
        }
    }

    #[test]
    fn a_struct_declares_its_flags_once() {
        let specs = Example::arg_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["model_weights", "count", "words", "verbose", "use_case", "added_layers", "embed_size", "num_classes"]
        );
        let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap().clone();
        assert!(by("model_weights").required && by("model_weights").kind == ArgKind::Path);
        assert_eq!(by("model_weights").help, "The weights.");
        assert!(!by("count").required && by("count").default.as_deref() == Some("3") && by("count").min == Some(1));
        assert!(!by("words").required && by("words").kind == ArgKind::List);
        assert!(!by("verbose").required && by("verbose").kind == ArgKind::Bool);
        assert_eq!(by("use_case").choices, ["pretrained", "finetuned", "peft"]);
        assert_eq!((by("added_layers").min, by("added_layers").max), (Some(1), Some(2)));
    }

    #[test]
    fn options_read_back_from_the_hosts_json() {
        let json = r#"{"model_weights": "/m", "count": 5, "words": null, "verbose": true, "use_case": "peft",
                       "added_layers": 2, "embed_size": null, "num_classes": 3}"#;
        let options: Example = parse(json).unwrap();
        assert_eq!(options.model_weights, PathBuf::from("/m"));
        assert_eq!(options.count, 5);
        assert_eq!(options.use_case, UseCase::Peft);
        assert_eq!(options.head.added_layers, Some(2));
        assert!(options.words.is_none() && options.verbose);
        let err = parse::<Example>(r#"{"model_weights": "/m", "count": 5, "use_case": "lora"}"#).unwrap_err();
        assert!(err.to_string().contains("lora"), "{err}");
    }
}
