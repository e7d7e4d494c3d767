//! Settings that take one of a few named values (`--method hesaff`, `--geometry fundamental`):
//! the [`Choice`] trait, and the [`choices!`](crate::choices) macro that defines such an enum
//! with its names, help lines, `Display`, `FromStr` and serde names from one list.
//!
//! The library knows nothing of command-line parsing; the CLI turns every `Choice` into a flag's
//! possible values, with each variant's doc comment as its help.

/// A fieldless enum whose values have names (the same in flags, reports and JSON).
pub trait Choice: Copy + Eq + Send + Sync + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// One line on what the value does (the variant's doc comment).
    fn help(self) -> &'static str;
    /// The value with this name.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
    /// "a, b or c": every name, for messages.
    fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }
}

/// Defines an enum whose variants each carry a name (`Variant = "name"`): derives `Clone`,
/// `Copy`, `Debug`, `PartialEq`, `Eq`, `Hash` and serde with those names, and implements [`Choice`]
/// (help from the doc comments), an inherent `name()`, `Display` and `FromStr`.
#[macro_export]
macro_rules! choices {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $name:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $ty {
            $( $(#[doc = $doc])* #[serde(rename = $name)] $variant ),*
        }

        impl $ty {
            /// The value's name, as flags, reports and JSON write it.
            pub fn name(self) -> &'static str {
                match self { $( $ty::$variant => $name ),* }
            }
        }

        impl $crate::choice::Choice for $ty {
            const ALL: &'static [Self] = &[$( $ty::$variant ),*];
            fn name(self) -> &'static str {
                $ty::name(self)
            }
            fn help(self) -> &'static str {
                match self { $( $ty::$variant => concat!($($doc),*).trim_ascii() ),* }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                <$ty as $crate::choice::Choice>::from_name(s).ok_or_else(|| {
                    $crate::Error::invalid(format!(
                        "unknown {} '{s}': expected {}",
                        stringify!($ty),
                        <$ty as $crate::choice::Choice>::names()
                    ))
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    choices! {
        /// A test enum.
        enum Colour {
            /// Like the sky,
            /// on a good day.
            Blue = "blue",
            /// Like grass.
            Green = "green-ish",
        }
    }

    #[test]
    fn names_help_display_parse_and_serde_agree() {
        assert_eq!(Colour::ALL, &[Colour::Blue, Colour::Green]);
        assert_eq!(Colour::Green.name(), "green-ish");
        assert_eq!(Colour::Blue.help(), "Like the sky, on a good day.");
        assert_eq!(Colour::Green.to_string(), "green-ish");
        assert_eq!("green-ish".parse::<Colour>().unwrap(), Colour::Green);
        let e = "red".parse::<Colour>().unwrap_err().to_string();
        assert!(
            e.contains("'red'") && e.contains("blue or green-ish"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_string(&Colour::Green).unwrap(),
            "\"green-ish\""
        );
        let back: Colour = serde_json::from_str("\"blue\"").unwrap();
        assert_eq!(back, Colour::Blue);
    }
}
