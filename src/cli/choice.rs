//! Flags whose values are a library [`Choice`]: clap's possible values (with each value's help
//! line) from the enum's names, so that core enums carry no clap derive.

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::choice::Choice;

/// The value parser of a flag that takes one of `T`'s names: `value_parser = choice::<T>()`.
pub fn choice<T: Choice>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

/// See [`choice`].
#[derive(Clone, Copy, Debug)]
pub struct ChoiceParser<T>(PhantomData<T>);

impl<T: Choice> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own parser gives the usual "invalid value ... [possible values: ...]" error.
        let values = T::ALL.iter().map(|v| possible(*v));
        let name = PossibleValuesParser::new(values).parse_ref(cmd, arg, value)?;
        Ok(T::from_name(&name).expect("the parser accepted one of T's names"))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(T::ALL.iter().map(|v| possible(*v))))
    }
}

fn possible<T: Choice>(value: T) -> PossibleValue {
    PossibleValue::new(value.name()).help(value.help())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::HomographyError;

    #[test]
    fn parses_names_and_refuses_others_with_the_possible_values() {
        let cmd = clap::Command::new("t").arg(
            clap::Arg::new("e")
                .long("e")
                .value_parser(choice::<HomographyError>()),
        );
        let m = cmd
            .clone()
            .try_get_matches_from(["t", "--e", "symmetric-max"])
            .unwrap();
        assert_eq!(
            *m.get_one::<HomographyError>("e").unwrap(),
            HomographyError::SymmetricMax
        );
        let e = cmd
            .try_get_matches_from(["t", "--e", "max"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("forward") && e.contains("sampson"), "{e}");
    }
}
