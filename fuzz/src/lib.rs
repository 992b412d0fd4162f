//! Oracles shared by the fuzz targets in `fuzz_targets/`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Whether two JSON values are the same, numbers compared as numbers.
///
/// serde_json (without its `float_roundtrip` feature, which the server does
/// not enable) may parse a float one or two units in the last place away
/// from the nearest one, so a float that went through print and parse again
/// can differ by that much. Anything else must match exactly.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) else {
                    return false;
                };
                x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Encodes `message`, decodes the text with `decode` and checks that the
/// result is the same message: whatever a decoder accepts, the encoder can
/// say, and saying it again means the same thing.
pub fn assert_json_round_trip<T, E>(message: &T, decode: impl Fn(&str) -> Result<T, E>)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
    E: std::fmt::Debug,
{
    let text = serde_json::to_string(message).expect("a decoded message encodes");
    let again = match decode(&text) {
        Ok(again) => again,
        Err(e) => panic!("{message:?} encodes to {text:?}, which does not decode: {e:?}"),
    };
    let (before, after) = (
        serde_json::to_value(message).expect("encodes"),
        serde_json::to_value(&again).expect("encodes"),
    );
    assert!(
        same_json(&before, &after),
        "round trip changed the message:\n{before}\n{after}"
    );
}

/// Splits `data` into frames, each prefixed by its length (u16,
/// big-endian); a last frame shorter than its length is cut to what is
/// left. The multi-frame targets read their input this way, and
/// `fuzz/make-seeds` writes their seeds this way.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (frame, rest) = rest.split_at(len);
        data = rest;
        Some(frame)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_json_tolerates_only_float_rounding() {
        assert!(same_json(&json!({"a": [1, 2.5]}), &json!({"a": [1, 2.5]})));
        assert!(same_json(
            &json!(0.1),
            &json!(f64::from_bits(0.1f64.to_bits() + 1))
        ));
        assert!(!same_json(&json!(0.1), &json!(0.1000001)));
        assert!(!same_json(&json!(1), &json!(2)));
        assert!(!same_json(&json!({"a": 1}), &json!({"b": 1})));
        assert!(!same_json(&json!([1]), &json!([1, 1])));
    }

    #[test]
    fn frames_are_length_prefixed() {
        let data = [0, 2, 7, 8, 0, 0, 0, 9, 1];
        let got: Vec<&[u8]> = frames(&data).collect();
        assert_eq!(got, [&[7u8, 8][..], &[], &[1]]);
        assert_eq!(frames(&[5]).count(), 0);
    }
}
